"""roles/nvidia on this GPU-less machine: it detects no NVIDIA GPU and skips cleanly, changing nothing,
in check mode and for real; with detection forced it plans the GPU path without touching the host."""
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO

DAEMON_JSON = Path("/etc/docker/daemon.json")
# The task Ansible puts first in the role: its variables checked against meta/argument_specs.yml.
VALIDATION = ("Validating arguments against arg spec 'main' - "
              + yaml.safe_load((REPO / "roles" / "nvidia" / "meta" / "argument_specs.yml").read_text())
              ["argument_specs"]["main"]["short_description"])


def gpu_on_this_host():
    devices = Path("/sys/bus/pci/devices")
    for device in devices.iterdir() if devices.is_dir() else []:
        try:
            if (device / "vendor").read_text().strip() == "0x10de" and \
                    (device / "class").read_text().startswith(("0x0300", "0x0302")):
                return True
        except OSError:
            continue
    return Path("/proc/driver/nvidia/version").exists()


pytestmark = pytest.mark.skipif(gpu_on_this_host(), reason="this host has an NVIDIA GPU: the tests are for hosts without one")


def run_role(tmp_path, check, **extra_vars):
    """The role on localhost with the json callback; returns (stats of localhost, {task name: result})."""
    playbook = tmp_path / "nvidia.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Apply the nvidia role", "hosts": "localhost",
                                         "gather_facts": False, "roles": [{"role": "nvidia"}]}]))
    command = [str(BIN / "ansible-playbook"), str(playbook), "-e", json.dumps(extra_vars)]
    if check:
        command.append("--check")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    process = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    report = json.loads(process.stdout)
    results = {task["task"]["name"].split(" : ", 1)[-1]: task["hosts"]["localhost"]
               for play in report["plays"] for task in play["tasks"] if "localhost" in task["hosts"]}
    return report["stats"]["localhost"], results


@pytest.mark.parametrize("check", [True, False], ids=["check-mode", "for-real"])
def test_host_without_gpu_is_skipped_and_nothing_changes(tmp_path, check):
    stats, results = run_role(tmp_path, check)
    assert stats["changed"] == 0 and stats["failures"] == 0
    assert results["Look for NVIDIA GPUs on the PCI bus"]["stdout"] == ""
    assert results["Decide whether this host has an NVIDIA GPU"]["ansible_facts"]["nvidia_gpu_present"] is False
    assert results["Set up the GPU"].get("skipped") is True
    assert results["Say what was found"]["msg"] == "no NVIDIA GPU on this host: nothing to do"
    # Nothing of the GPU path ran: no repository, package, module, runtime or verification task (the first task is
    # Ansible's check of the role's variables against meta/argument_specs.yml).
    assert set(results) == {VALIDATION, "Gather the facts the role needs", "Check the role's settings",
                            "Look for NVIDIA GPUs on the PCI bus", "Check whether an NVIDIA driver is loaded",
                            "Decide whether this host has an NVIDIA GPU", "Say what was found", "Set up the GPU"}


def test_detection_absent_skips_even_the_scan(tmp_path):
    stats, results = run_role(tmp_path, False, nvidia_gpu_detection="absent")
    assert stats["changed"] == 0
    assert results["Look for NVIDIA GPUs on the PCI bus"].get("skipped") is True
    assert results["Set up the GPU"].get("skipped") is True


@pytest.mark.skipif(not DAEMON_JSON.is_file(), reason="no Docker daemon.json on this host")
def test_forced_gpu_plans_the_runtime_in_check_mode_and_touches_nothing(tmp_path):
    before = hashlib.sha256(DAEMON_JSON.read_bytes()).hexdigest()
    stats, results = run_role(tmp_path, True, nvidia_gpu_detection="present", nvidia_driver_install=False,
                              nvidia_toolkit_install=False)
    assert stats["changed"] == 0 and stats["failures"] == 0
    assert results["Decide whether this host has an NVIDIA GPU"]["ansible_facts"]["nvidia_gpu_present"] is True
    # daemon.json has no nvidia runtime here, so the role would run nvidia-ctk (not in check mode).
    runtime = results["Register the nvidia runtime with Docker"]
    assert runtime.get("skipped") is True and "check mode" in runtime.get("msg", "")
    for hardware_step in ("Load the nvidia kernel module", "Check that the host sees its GPUs",
                          "Check that a container sees the GPUs"):
        assert results[hardware_step].get("skipped") is True, hardware_step
    assert hashlib.sha256(DAEMON_JSON.read_bytes()).hexdigest() == before
