"""Role docker on this host, with the real engine: a second run changes nothing; the daemon runs
with the role's settings; without systemd, a stopped daemon is started again (direct mode)."""
import json
import subprocess
from pathlib import Path

import pytest

from containers_support import engine, explain, recap, require_root, run_playbook

PLAYBOOK = "tests/playbooks/docker_role.yml"
CTL = Path("/usr/local/sbin/dockerd-ctl")


def _systemd_is_pid1():
    return Path("/proc/1/comm").read_text().strip() == "systemd"


@pytest.fixture(scope="module")
def applied():
    require_root()
    first = run_playbook(PLAYBOOK)
    assert first.returncode == 0, explain(first)
    return first


def test_second_run_changes_nothing(applied):
    second = run_playbook(PLAYBOOK)
    assert second.returncode == 0, explain(second)
    counts = recap(second)
    assert counts["changed"] == 0, explain(second)
    assert counts["failed"] == 0 and counts["unreachable"] == 0


def test_daemon_runs_with_the_role_settings(applied):
    config = json.loads(Path("/etc/docker/daemon.json").read_text())
    assert config["log-driver"] == "json-file"
    assert config["log-opts"] == {"max-size": "10m", "max-file": "3"}
    info = engine().info()
    assert info["LoggingDriver"] == "json-file"
    assert info["DockerRootDir"] == config["data-root"]


def test_stopped_daemon_is_started_again_without_systemd(applied):
    if _systemd_is_pid1():
        pytest.skip("systemd is PID 1 here: the role uses systemd, not its direct mode")
    client = engine()
    if client.containers.list():
        pytest.skip("containers are running: not stopping the daemon under them")
    stop = subprocess.run([str(CTL), "stop"], capture_output=True, text=True, check=False)
    assert stop.returncode == 0, stop.stderr
    status = subprocess.run([str(CTL), "status"], capture_output=True, text=True, check=False)
    assert status.returncode == 3, status.stdout

    started = run_playbook(PLAYBOOK)
    assert started.returncode == 0, explain(started)
    assert recap(started)["changed"] == 1, explain(started)  # only "Start dockerd detached"
    assert "Start dockerd detached" in started.stdout
    assert engine().ping()
