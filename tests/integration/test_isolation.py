"""Secrets never share a user with trial code (issue 20, item 6, row 11): a root controller's local trials run as
runner.local.user (nobody by default) and cannot read the module's arguments, the storage URL or the study.

Run as root, as a fleet worker connected to as root or a root cron or Jenkins agent runs the controller. One tiny
trial, handed to a warm spare (the default); it reaches the goal, so the verifier runs too, started cold, as the
controller's user: the held-out test split is the controller's alone.
"""
import json
import os
import pwd
import shutil
import stat
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from ansible.module_utils.autotune.tune import prepare, run
from conftest import REPO, TEMPLATES, missing, write_config

MODEL = REPO / "tests" / "fixtures" / "snooping_model.py"
SECRET = "postgresql+psycopg2://tuner:S3cret-storage-password@db.example/autotune"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the controller must be root to start trials as another user")


@pytest.fixture(scope="module")
def trial_python():
    """A Python the trial account can run. The project's venv may sit on a Python under /root (pyenv, as on the CI
    machines), which no other user can start: the runner then keeps trials as root and refuses pushed code
    (tests/unit/test_runners.py). Here: a venv of Debian's python3.11 that sees the project's packages."""
    system = "/usr/bin/python3.11"
    if not os.access(system, os.X_OK):
        missing(f"needs {system} (Debian's python3) to give the trial account a Python it can run")
    folder = Path(tempfile.mkdtemp(prefix="autotune-isolation-python-"))
    folder.chmod(0o755)
    subprocess.run([system, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    site = next(folder.glob("lib/python3*/site-packages"))
    (site / "project.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    yield str(folder / "bin" / "python")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def host():
    """A folder others may traverse (as /tmp is), holding what the controller's host holds beside its run folder."""
    base = Path(tempfile.mkdtemp(prefix="autotune-isolation-"))
    base.chmod(0o755)
    ansible_tmp = base / "ansible-tmp"  # as Ansible makes ~/.ansible/tmp/ansible-tmp-*: 0700, the module 0600
    ansible_tmp.mkdir(mode=0o700)
    module = ansible_tmp / "AnsiballZ_tune_model.py"
    module.write_text(f"ANSIBALLZ_PARAMS = {json.dumps({'ANSIBLE_MODULE_ARGS': {'storage': SECRET}})!r}\n")
    module.chmod(0o600)
    (base / "public.txt").write_text("anyone may read this\n")
    (base / "public.txt").chmod(0o644)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _tune(host, python):
    config_path = write_config(
        host, model={"file": str(MODEL), "baseline": {"units": 4, "epochs": 1}},
        search={"strategy": "random", "space": None, "pruner": "none", "startup_trials": 1},
        budget={"max_trials": 1, "trial_timeout": 120, "max_consecutive_failures": 1},
        target={"goal": 0.05}, runner={"kind": "local", "local": {"python": python}},
    )
    config_path.write_text(config_path.read_text().replace("  space: null\n", ""))
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(host / "runs"))
    return run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer")), Path(run_dir)


def test_trial_code_of_a_root_controller_cannot_read_the_modules_arguments_or_the_study(host, trial_python, sample_data):
    summary, run_dir = _tune(host, trial_python)
    trial = summary["trials"][0]
    assert trial["outcome"] == "finished", trial
    assert trial["verified_value"] is not None and trial["test_value"] is not None, \
        "the verifier, as the controller's user, scored the model on the held-out split the trial could not open"
    found = json.loads((run_dir / "trials" / "0000" / "snoop.json").read_text())
    nobody = pwd.getpwnam("nobody")
    assert (found["uid"], found["euid"], found["gid"]) == (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid)
    assert 0 not in found["groups"], "none of root's supplementary groups"
    assert found["public"]["ok"], "the control: the trial reaches the folder the module's arguments are in"
    for target in ("module_arguments", "module_arguments_folder", "study_db", "study_db_relative", "run_dir_listing",
                   "controller_environ", "root_home", "held_out"):
        assert found[target] == {"ok": False, "error": "PermissionError"}, (target, found[target])
    assert found["pack"]["ok"], "the packed data set stays readable"
    assert SECRET not in (run_dir / "trials" / "0000" / "snoop.json").read_text()
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o711
    assert stat.S_IMODE((run_dir / "study.db").stat().st_mode) == 0o600
    assert found["home"].startswith("/tmp/autotune-trial-") and not os.path.exists(found["home"]), \
        "a private HOME of its own, removed after the trial"
    assert summary["runner_details"]["user"] == "nobody"
