"""Shared helpers of the container tests (roles docker and trainer_image), against a real engine."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path


from conftest import missing

REPO = Path(__file__).resolve().parents[1]
MANIFEST = Path("/etc/autotune/trainer_images.json")
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def run_playbook(playbook, *args, timeout=1800):
    """Run a playbook from the repository root (its ansible.cfg and inventory) with this venv's Ansible."""
    bindir = Path(sys.executable).parent
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        [str(bindir / "ansible-playbook"), playbook, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def recap(result, host="localhost"):
    """The PLAY RECAP counters of one host, as ints."""
    for match in RECAP.finditer(result.stdout):
        if match["host"] == host:
            return {key: int(value) for key, value in match.groupdict().items() if key != "host"}
    raise AssertionError(f"no recap for {host} in:\n{result.stdout[-3000:]}")


def explain(result):
    """The end of a playbook's output, for assertion messages."""
    return f"rc={result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"


def require_root():
    if os.geteuid() != 0:
        missing("the roles install packages and write /etc: these tests run as root (CI does)")


def engine():
    """A client of the local Docker Engine; skips when no engine answers, fails so under CI."""
    import docker  # pylint: disable=import-outside-toplevel  # pinned in requirements.txt
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # pylint: disable=broad-except
        missing(f"no Docker Engine answers on this host ({exc}); "
                "run playbooks/trainer_host.yml (as .ci/run does) to provision one")
    return client


def pinned(requirements=REPO / "requirements.txt"):
    """name -> version of the controller's pinned requirements."""
    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def read_manifest(path=MANIFEST):
    return json.loads(Path(path).read_text())
