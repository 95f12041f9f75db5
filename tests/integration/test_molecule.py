"""Molecule scenarios of the roles (roles/*/molecule/default), offline in a local systemd image.

Opt-in on a developer's machine: runs when AUTOTUNE_MOLECULE=1 (`make test-molecule`; it builds the
image with tests/molecule/build_image.sh when it is missing). The scenarios take one to two minutes each
on 2 cores; `.ci/run` turns them on, so CI runs them inside `make test` (docs/testing.md).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, REPO

IMAGE = os.environ.get("AUTOTUNE_MOLECULE_IMAGE", "autotune-systemd:bookworm")
ROLES = sorted(path.parents[2] for path in REPO.glob("roles/*/molecule/default/molecule.yml"))


def _docker_has_image():
    try:
        return subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=30,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _why_not():
    if os.environ.get("AUTOTUNE_MOLECULE", "") != "1":
        return "molecule scenarios are opt-in: make test-molecule (AUTOTUNE_MOLECULE=1)"
    if not (BIN / "molecule").exists():
        return "molecule is not installed (requirements-test.txt)"
    return None


REASON = _why_not()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def image():
    if not _docker_has_image():
        build = subprocess.run([str(REPO / "tests" / "molecule" / "build_image.sh"), IMAGE],
                               capture_output=True, text=True, timeout=1200, check=False)
        assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    return IMAGE


@pytest.mark.parametrize("role", ROLES, ids=[path.name for path in ROLES])
def test_molecule_default_scenario(role, image):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", AUTOTUNE_MOLECULE_IMAGE=image,
               ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", PY_COLORS="0")
    process = subprocess.run([str(BIN / "molecule"), "test", "-s", "default"], cwd=role, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
    assert process.returncode == 0, process.stdout[-6000:]


def test_scenarios_found():
    assert {path.name for path in ROLES} >= {"jenkins", "nvidia"}
    assert Path(sys.executable).parent == BIN
