"""Shared test set-up: import paths, the sample data, and a helper that runs our playbooks."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import ansible.module_utils
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# Make ansible.module_utils.autotune importable outside Ansible, exactly as modules import it.
ansible.module_utils.__path__.append(str(REPO / "module_utils"))
sys.path.insert(0, str(REPO / "library"))
sys.path.insert(0, str(REPO / "trainer"))

SAMPLE_DATA = REPO / "data" / "catsdogs"
TEMPLATES = REPO / "model_templates"
EXAMPLE_CONFIG = REPO / "examples" / "catsdogs" / "autotune.yml"
BIN = Path(sys.executable).parent


class Masked(str):
    """A secret (a password, or a URL holding one) that a failing test cannot print: pytest shows a test's arguments
    and an assertion's operands through repr(), and this one shows ``***`` in the secret's place."""

    def __repr__(self):
        if "://" in self:
            return repr(re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(self)))
        return "'***'"


def password_of(url):
    """The password in a storage URL, masked the same way."""
    return Masked(unquote(urlsplit(url).password or ""))


@pytest.fixture(autouse=True)
def _fast_polls_in_unit_tests(request, monkeypatch):
    """Unit tests poll their in-memory trials (tests/fakes.py) every 10 ms instead of the 0.2 s a real trainer needs:
    the study loop's logic is the same, and the unit suite stays short. Real trainers keep the product's pace."""
    if (REPO / "tests" / "unit") in Path(str(request.node.path)).parents:
        from ansible.module_utils.autotune import trialrun  # pylint: disable=import-outside-toplevel
        monkeypatch.setattr(trialrun, "POLL_SECONDS", 0.01)


@pytest.fixture(scope="session")
def sample_data():
    if not SAMPLE_DATA.is_dir():
        subprocess.run([sys.executable, str(REPO / "tools" / "make_sample_data.py"), str(SAMPLE_DATA)], check=True)
    return SAMPLE_DATA


def write_config(folder, **sections):
    """A tune configuration based on the sample one; sections are merged one level deep, 'model' is replaced."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["dataset"]["path"] = str(SAMPLE_DATA)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict) and key != "model":
            config[key] = {**config[key], **value}
        elif value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = Path(folder) / "autotune.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_playbook(playbook, extra_vars, env=None, check=False, verbosity=0):
    """ansible-playbook as a user runs it; returns the CompletedProcess (stdout+stderr in .stdout)."""
    path = REPO / playbook if "/" in playbook else REPO / "playbooks" / playbook
    command = [str(BIN / "ansible-playbook"), str(path), "-e", json.dumps(extra_vars)]
    if check:
        command.append("--check")
    if verbosity:
        command.append("-" + "v" * verbosity)
    full_env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
                    ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    full_env.update(env or {})
    return subprocess.run(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=1500, check=False)


@pytest.fixture(scope="session")
def tuned_run(tmp_path_factory, sample_data):
    """One real tuning run of the sample model to the 0.80 goal, shared by the end-to-end tests."""
    work = tmp_path_factory.mktemp("tuned")
    config = write_config(work, budget={"max_trials": 8, "max_seconds": 900, "trial_timeout": 300})
    result = run_playbook("tune.yml", {"autotune_config": str(config), "autotune_runs_root": str(work / "runs")})
    run_dir = work / "runs" / "catsdogs"
    return {"process": result, "run_dir": run_dir, "config": config, "work": work}


def copy_run(run_dir, target):
    shutil.copytree(run_dir, target)
    return Path(target)


TRAINER_IMAGE = "autotune-trainer-keras:cpu-latest"


def wait_until(predicate, seconds, what):
    """Poll ``predicate`` every 0.2 s until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def missing(reason):
    """A service a test needs is not there: skip on a developer's machine, fail under CI (CI=true),
    where .ci/run provisions every service, so a broken set-up cannot pass unseen."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI provisions this, yet: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url():
    """The study database's URL (postgresql://autotune:PASSWORD@127.0.0.1:5432/autotune) that .ci/run provisions
    through playbooks/postgresql.yml; read from the 0600 file AUTOTUNE_TEST_PG_URL_FILE names, so the password
    is never on a command line nor in the environment."""
    path = os.environ.get("AUTOTUNE_TEST_PG_URL_FILE", "")
    if not path:
        missing("needs PostgreSQL from playbooks/postgresql.yml and its URL in a file named by "
                "AUTOTUNE_TEST_PG_URL_FILE (.ci/run does both; docs/postgresql.md)")
    try:
        url = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        missing(f"AUTOTUNE_TEST_PG_URL_FILE {path} cannot be read: {exc.strerror}")
    if not url.startswith(("postgresql://", "postgresql+psycopg2://")):
        missing(f"AUTOTUNE_TEST_PG_URL_FILE {path} does not hold a postgresql:// URL")
    return Masked(url)


@pytest.fixture(scope="session")
def docker_engine():
    """The real Docker engine with the trainer image (CI provisions both through playbooks/trainer_host.yml)."""
    import docker  # pylint: disable=import-outside-toplevel  # pinned in requirements.txt
    try:
        client = docker.from_env()
        client.ping()
        client.images.get(TRAINER_IMAGE)
    except docker.errors.DockerException as exc:
        missing(f"needs a Docker engine with {TRAINER_IMAGE} (playbooks/trainer_host.yml): {exc}")
    return client
