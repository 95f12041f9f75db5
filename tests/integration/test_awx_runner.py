"""The AWX shape, end to end, without an AWX: ansible-runner runs our playbooks inside the execution environment
(execution-environment.yml, `make ee`) exactly as an AWX job does, against a trainer host it reaches over SSH.

As AWX prepares a job: a private data directory with the project (a copy of this repository), an inventory, the job
template's extra variables with the survey's answers (env/extravars), the machine credential's key (env/ssh_key,
which ansible-runner loads into ssh-agent inside the EE) and the SMTP credential, rendered from the credential type
of playbooks/awx.yml with AWX's own injector rules (env, file and extra_vars injectors). ansible-runner starts the EE
with `docker run` (process isolation) on a network where the trainer host, a container of the fleet worker image with
Debian's OpenSSH server, answers on port 22. The play runs in the EE; our modules run on the trainer host, in its
/opt/trainer venv. The SMTP server (aiosmtpd) listens on the network's gateway, where the trainer host reaches it.

Checked: the goal is reached on the trainer host (its summary.json), every task ran there and none on the EE's
localhost, the mail arrives after a login with the credential's password, and that password is in nothing
ansible-runner writes (artifacts/: stdout, job_events, command, env.list, ...), nor in the run folder.
Then the health job: a trial container killed on the trainer host's engine is relaunched by playbooks/health.yml,
run from the EE against the trainer hosts, never against the EE.
"""
import email
import email.policy
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import REPO, missing, wait_until
from containers_support import engine, pinned

EE_IMAGE = os.environ.get("AUTOTUNE_EE_IMAGE", "autotune-ee:latest")
WORKER_IMAGE = "autotune-worker-keras:cpu-latest"
FIXTURE = REPO / "tests" / "fixtures" / "ssh_trainer"
# What the trainer host's venv needs beyond the worker image's (pins from requirements.txt).
EXTRA_PACKAGES = ("matplotlib", "docker")
TRAINER_ROOT = "/opt/autotune"  # the project's checkout on a trainer host (inventory/example: health_cron_project_dir)
DATA = "/srv/data/catsdogs"  # the data set on the trainer host
SMTP_USER = "autotune@example.com"
MAIL_TO = "ml-team@example.com"


class _Unsafe(str):
    """An !unsafe scalar of playbooks/awx.yml: AWX receives it untemplated."""


class _Loader(yaml.SafeLoader):
    """Reads playbooks/awx.yml, keeping its !unsafe scalars apart."""


_Loader.add_constructor("!unsafe", lambda loader, node: _Unsafe(loader.construct_scalar(node)))


def _awx_tasks():
    play = yaml.load((REPO / "playbooks" / "awx.yml").read_text(), Loader=_Loader)[0]
    return play, {task["name"]: task for task in play["tasks"]}


def _template(name):
    """A job template of playbooks/awx.yml as AWX stores it: its extra variables templated with the playbook's
    variables by awx.yml's own run, except the !unsafe ones, which reach AWX (and then the job) untemplated."""
    play, tasks = _awx_tasks()
    template = dict(tasks[name]["awx.awx.job_template"])

    def render(value):
        if isinstance(value, _Unsafe):
            return str(value)
        return ImmutableSandboxedEnvironment().from_string(value).render(**play["vars"]) if isinstance(value, str) else value

    template["extra_vars"] = {key: render(value) for key, value in template.get("extra_vars", {}).items()}
    return template


class Inbox:
    """aiosmtpd handler: keeps each message and whether each login was right."""

    def __init__(self, password):
        self.password, self.messages, self.logins = password, [], []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.rcpt_tos, envelope.original_content))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == self.password.encode()
        self.logins.append(ok)
        return AuthResult(success=ok)


def _free_port(address):
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def _project_files():
    """The repository as AWX's project sync checks it out: tracked and not ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and (REPO / name).is_file()]


def awx_inject(credential_type, inputs, private_data_dir):
    """AWX's CredentialType.inject_credential for a custom type: `file` injectors become 0600 files in env/ (their
    container paths in tower.filename), `env` injectors the job's environment, `extra_vars` injectors a file passed
    as `-e @file`. Returns (env, extra ansible-playbook arguments)."""
    sandbox = ImmutableSandboxedEnvironment()
    namespace = {key: value for key, value in inputs.items() if value != ""}
    tower = type("Tower", (), {})()
    namespace["tower"] = tower
    injectors = credential_type["injectors"]
    env_dir = Path(private_data_dir) / "env"
    for label, template in injectors.get("file", {}).items():
        path = env_dir / f"tmp{uuid.uuid4().hex[:8]}"
        path.write_text(sandbox.from_string(template).render(**namespace))
        path.chmod(0o600)
        container_path = f"/runner/env/{path.name}"
        if "." in label:
            if not hasattr(tower, "filename"):
                tower.filename = type("Files", (), {})()
            setattr(tower.filename, label.split(".", 1)[1], container_path)
        else:
            tower.filename = container_path
    env = {name: sandbox.from_string(template).render(**namespace) for name, template in injectors.get("env", {}).items()}
    args = []
    extra = {name: sandbox.from_string(template).render(**namespace)
             for name, template in injectors.get("extra_vars", {}).items()}
    if extra:
        path = env_dir / f"tmp{uuid.uuid4().hex[:8]}"
        path.write_text(yaml.safe_dump(extra))
        path.chmod(0o400)
        args = ["-e", f"@/runner/env/{path.name}"]
    return env, args


@pytest.fixture(scope="module")
def docker_client():
    client = engine()
    for image, how in ((EE_IMAGE, "make ee"), (WORKER_IMAGE, "playbooks/worker_image.yml")):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing(f"needs {image} on the Docker engine ({how} builds it; .ci/run does)")
    if shutil.which("ssh-keygen") is None:
        missing("needs ssh-keygen (openssh-client) to make the machine credential's key")
    return client


@pytest.fixture(scope="module")
def ssh_trainer_image(docker_client, tmp_path_factory):
    """The worker image with sshd, tagged by its inputs (Dockerfile, start script, pins, worker image id)."""
    pins = pinned()
    requirements = "".join(f"{name}=={pins[name]}\n" for name in EXTRA_PACKAGES)
    worker_id = docker_client.images.get(WORKER_IMAGE).id
    digest = hashlib.sha256(b"\0".join([(FIXTURE / "Dockerfile").read_bytes(), (FIXTURE / "start-sshd").read_bytes(),
                                         requirements.encode(), worker_id.encode()])).hexdigest()[:12]
    tag = f"autotune-test-ssh-trainer:{digest}"
    try:
        docker_client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    context = tmp_path_factory.mktemp("ssh-trainer-context")
    shutil.copy(FIXTURE / "Dockerfile", context / "Dockerfile")
    shutil.copy(FIXTURE / "start-sshd", context / "start-sshd")
    (context / "requirements.txt").write_text(requirements)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest",
                    str(context / "wheels"), "-r", str(context / "requirements.txt")], check=True, timeout=600)
    docker_client.images.build(path=str(context), tag=tag, rm=True, pull=False, buildargs={"WORKER_IMAGE": WORKER_IMAGE},
                               timeout=900)
    return tag


@pytest.fixture(scope="module")
def site(docker_client, ssh_trainer_image, sample_data, tmp_path_factory):
    """A docker network with the SSH trainer host on it, its key pair, and an SMTP server on the network's gateway."""
    work = tmp_path_factory.mktemp("awx-site")
    name = f"autotune-awx-{uuid.uuid4().hex[:8]}"
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "awx-machine-credential", "-f", str(key)],
                   check=True)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    # Model configurations and run folders, at the same path on the trainer host as here: the trainer host's modules
    # start trial containers on this machine's engine (its socket is mounted), which reads bind mounts from here.
    srv = work / "srv"
    (srv / "model").mkdir(parents=True)
    srv.chmod(0o777)  # the trainer account (uid 10001) writes its run folders here
    network = docker_client.networks.create(name, driver="bridge")
    containers = []
    smtp = None
    try:
        gateway = docker_client.api.inspect_network(network.id)["IPAM"]["Config"][0]["Gateway"]
        trainer = docker_client.containers.run(
            ssh_trainer_image, name=f"{name}-trainer1", hostname="trainer1", detach=True, network=name,
            environment={"AUTHORIZED_KEY": (work / "id_ed25519.pub").read_text().strip(),
                         "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid)},
            volumes={str(REPO): {"bind": TRAINER_ROOT, "mode": "ro"},
                     str(Path(sample_data).resolve()): {"bind": DATA, "mode": "ro"},
                     str(srv): {"bind": str(srv), "mode": "rw"},
                     "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
            labels={"io.autotune.test": "awx-runner"})
        containers.append(trainer)
        password = "awx-" + secrets.token_urlsafe(18)
        inbox, port = Inbox(password), _free_port(gateway)
        smtp = Controller(inbox, hostname=gateway, port=port, authenticator=inbox.authenticate,
                          auth_required=True, auth_require_tls=False)
        smtp.start()
        deadline = time.time() + 30
        while b"Server listening" not in trainer.logs() and time.time() < deadline:
            time.sleep(0.2)
        yield {"name": name, "network": name, "gateway": gateway, "trainer": trainer, "key": key, "srv": srv,
               "work": work, "password": password, "inbox": inbox, "smtp_port": port}
    finally:
        if smtp is not None:
            smtp.stop()
        for container in containers:
            container.remove(force=True)
        network.remove()


def _inventory(site):
    return {"all": {"children": {"trainers": {
        "hosts": {"trainer1": {"ansible_host": site["trainer"].name}},
        "vars": {
            "ansible_user": "trainer",
            # The Python our modules run with on the trainer host: the worker image's venv, to which the test image
            # adds matplotlib and the docker SDK (on a plain host: a venv with requirements.txt).
            "ansible_python_interpreter": "/opt/trainer/bin/python",
            # The role's paths on the trainer host: its checkout of this project, run folders, the data set.
            "autotune_root": TRAINER_ROOT,
            "autotune_runs_root": f"{site['srv']}/runs",
            "autotune_sample_data": DATA,
        }}}}}


def prepare_job(site, playbook, extravars, tmp_path, smtp_credential=True):
    """One AWX job's private data directory; returns ansible_runner.run's arguments (the EE as process isolation)."""
    private = tmp_path / f"job-{Path(playbook).stem}"
    (private / "env").mkdir(parents=True)
    (private / "inventory").mkdir()
    for name in _project_files():
        target = private / "project" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    (private / "inventory" / "hosts.yml").write_text(yaml.safe_dump(_inventory(site)))
    (private / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    # The machine credential: AWX writes its key to env/ssh_key; ansible-runner feeds it to ssh-agent in the EE.
    ssh_key = private / "env" / "ssh_key"
    ssh_key.write_text(site["key"].read_text())
    ssh_key.chmod(0o600)
    # AWX's own job environment for SSH (AWX sets ANSIBLE_HOST_KEY_CHECKING=False by default).
    envvars = {"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_FORCE_COLOR": "False"}
    cmdline = []
    if smtp_credential:
        _, tasks = _awx_tasks()
        credential_type = tasks["Create the SMTP credential type"]["awx.awx.credential_type"]
        inputs = {"host": site["gateway"], "port": str(site["smtp_port"]), "secure": "try",
                  "username": SMTP_USER, "password": site["password"]}
        env, cmdline = awx_inject(credential_type, inputs, private)
        envvars.update(env)
    (private / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    return {"private_data_dir": str(private), "playbook": playbook, "cmdline": " ".join(cmdline) or None,
            "process_isolation": True, "process_isolation_executable": "docker", "container_image": EE_IMAGE,
            "container_options": ["--network", site["network"]], "settings": {"job_timeout": 900}, "quiet": True}


def run_job(site, playbook, extravars, tmp_path, smtp_credential=True):
    """One AWX job, to its end: (runner, private data directory, seconds)."""
    import ansible_runner  # pylint: disable=import-outside-toplevel  # pinned in requirements-test.txt
    options = prepare_job(site, playbook, extravars, tmp_path, smtp_credential)
    started = time.time()
    runner = ansible_runner.run(**options)
    return runner, Path(options["private_data_dir"]), time.time() - started


def _all_bytes(root):
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path, path.read_bytes()


def _explain(runner):
    return f"status={runner.status} rc={runner.rc}\n" + runner.stdout.read()[-6000:]


def _config(study, goal, max_trials, search, epochs=3, runner=None):
    """A tune configuration of the sample data on the trainer host: a small CNN whose trial 0 reaches 0.75."""
    config = {
        "study": study,
        "dataset": {"path": DATA, "image_size": [28, 28], "color": "grayscale",
                    "validation_split": 0.2, "test_split": 0.15, "seed": 1},
        "model": {"template": "cnn", "baseline": {"blocks": 1, "filters": 8, "kernel_size": 3, "dense_units": 32,
                                                  "learning_rate": 0.001, "epochs": epochs}},
        "target": {"metric": "val_accuracy", "goal": goal},
        "search": search,
        "budget": {"max_trials": max_trials, "max_seconds": 600, "trial_timeout": 300},
        "notify": {"to": ["nobody@example.com"], "sender": "autotune@example.com"},
    }
    if runner:
        config["runner"] = runner
    return config


@pytest.fixture(scope="module")
def tune_job(site, tmp_path_factory):
    """playbooks/tune.yml as the `autotune tune` template launches it: the template's extra variables, the survey's
    answers, the SMTP credential; the configuration lives on the trainer host."""
    config = _config("awx-catsdogs", goal=0.9, max_trials=10,
                     search={"strategy": "tpe", "seed": 1, "space": {"filters": {"type": "int", "low": 8, "high": 16},
                                                                     "epochs": {"type": "int", "low": 3, "high": 4}}})
    (site["srv"] / "model" / "autotune.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    template = _template("Create the tune job template")
    survey = {"autotune_config": f"{site['srv']}/model/autotune.yml", "autotune_goal": 0.75, "autotune_max_trials": 3,
              "autotune_mail_to_csv": MAIL_TO}
    extravars = {**template["extra_vars"], **survey, "autotune_hosts": "trainers"}
    runner, private, seconds = run_job(site, template["playbook"], extravars, tmp_path_factory.mktemp("tune-job"))
    print(f"tune job: {seconds:.0f} s")
    return {"runner": runner, "private": private, "events": list(runner.events),
            "run_dir": site["srv"] / "runs" / "awx-catsdogs"}


def test_tune_job_reaches_the_goal_on_the_trainer_host(site, tune_job):
    runner = tune_job["runner"]
    assert runner.status == "successful" and runner.rc == 0, _explain(runner)
    summary = json.loads((tune_job["run_dir"] / "summary.json").read_text())
    # The survey's goal and trial cap reached the play through the template's extra variables.
    assert summary["reached"] is True and summary["goal"] == 0.75 and summary["best_test_value"] >= 0.75
    assert summary["n_trials"] <= 3 and summary["runner"] == "local"
    assert summary["run_dir"] == f"{site['srv']}/runs/awx-catsdogs"
    # ansible-runner ran ansible-playbook inside the EE image.
    command = json.loads(next((tune_job["private"] / "artifacts").glob("*/command")).read_text())
    assert command["command"][:2] == ["docker", "run"] and EE_IMAGE in command["command"]


def test_every_task_ran_on_the_trainer_host_and_none_in_the_ee(tune_job):
    results = [e for e in tune_job["events"] if e["event"].startswith("runner_on_")]
    hosts = {e["event_data"]["host"] for e in results}
    assert hosts == {"trainer1"}, hosts
    tuned = [e for e in results if e["event_data"].get("task") == "Tune until the goal is reached or the budget is spent"]
    assert [e["event"] for e in tuned] == ["runner_on_start", "runner_on_ok"]


def test_the_mail_arrives_with_the_credentials_login(site, tune_job):
    inbox = site["inbox"]
    assert inbox.logins == [True], "the credential's password reached the SMTP login"
    assert len(inbox.messages) == 1
    recipients, raw = inbox.messages[0]
    assert recipients == [MAIL_TO]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert "awx-catsdogs: goal 0.75 reached" in message["Subject"]
    assert [part.get_filename() for part in message.iter_attachments()] == ["accuracy_per_trial.png", "trials.csv"]


def test_the_password_is_in_no_artifact_nor_output(site, tune_job):
    password = site["password"].encode()
    private = tune_job["private"]
    found = [str(path.relative_to(private)) for path, data in _all_bytes(private / "artifacts") if password in data]
    found += [str(path) for path, data in _all_bytes(tune_job["run_dir"]) if password in data]
    assert found == [], f"the SMTP password is written in {found}"
    assert password.decode() not in tune_job["runner"].stdout.read()
    assert password.decode() not in json.dumps(tune_job["events"])
    # The artifacts were really written (the scan above read something).
    assert (private / "artifacts").is_dir() and any((private / "artifacts").glob("*/job_events/*.json"))


def _epochs(run_dir):
    path = run_dir / "trials" / "0000" / "metrics.jsonl"
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_health_job_relaunches_a_killed_trial_on_the_trainer_host(site, docker_client, tmp_path):
    """The `autotune health` template's job: health.yml from the EE against the trainer hosts relaunches the trial
    container killed on a trainer host, whose study a tune job (from the EE too) runs there; the trial resumes."""
    import ansible_runner  # pylint: disable=import-outside-toplevel  # pinned in requirements-test.txt
    study = "awx-heal"
    # Cold trial containers on the trainer host's engine, one trial of 12 epochs: long enough to be killed mid-way,
    # towards a goal it does not reach (a trial stops at the goal's epoch), so it trains all 12.
    config = _config(study, goal=0.999, max_trials=1, epochs=12,
                     search={"strategy": "random", "seed": 1, "space": {"filters": {"type": "int", "low": 8, "high": 9}}},
                     runner={"kind": "docker", "docker": {"warm": False, "cpus": 2, "memory": "2g"}})
    path = site["srv"] / "model" / "heal.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = site["srv"] / "runs" / study
    tune = _template("Create the tune job template")
    options = prepare_job(site, tune["playbook"], {**tune["extra_vars"], "autotune_config": str(path),
                                                   "autotune_hosts": "trainers"}, tmp_path, smtp_credential=False)
    thread, tuning = ansible_runner.run_async(**options)
    try:
        wait_until(lambda: len(_epochs(run_dir)) >= 2 or not thread.is_alive(), 300, "two epochs of trial 0")
        assert thread.is_alive(), _explain(tuning)
        (container,) = docker_client.containers.list(filters={"label": ["io.autotune.project=autotune",
                                                                         f"io.autotune.run_dir={run_dir}"]})
        started = container.attrs["State"]["StartedAt"]
        container.kill()
        wait_until(lambda: (container.reload() or container.status) == "exited", 30, "the trial container to die")
        done = len(_epochs(run_dir))
        health = _template("Create the health job template")
        assert health["extra_vars"] == {"autotune_health_hosts": "trainers"}
        healing, _, seconds = run_job(site, health["playbook"], health["extra_vars"], tmp_path, smtp_credential=False)
        print(f"health job: {seconds:.0f} s")
        assert healing.status == "successful", _explain(healing)
        results = [e for e in healing.events if e["event"] in ("runner_on_ok", "runner_on_failed")]
        assert {e["event_data"]["host"] for e in results} == {"trainer1"}, "health ran on the trainer hosts only"
        (relaunch,) = [e["event_data"]["res"] for e in results
                       if e["event_data"]["task"] == "Relaunch trial containers that died"]
        assert relaunch["relaunched"] == 1, relaunch
        assert [(a["action"], a["container"]) for a in relaunch["actions"]] == [("relaunched", container.name)]
        container.reload()
        assert container.attrs["State"]["StartedAt"] != started, "the same container, started again"
    finally:
        thread.join(timeout=600)
    output = _explain(tuning)
    assert tuning.status == "failed" and "Goal not reached" in output, output
    summary = json.loads((run_dir / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["outcome"] == "finished" and trial["relaunches"] == 1 and trial["resumed_from_epoch"] >= done - 1
    epochs = _epochs(run_dir)
    assert epochs == list(range(12)), "the relaunched trial resumed: no epoch trained twice"


def test_the_ee_carries_the_pinned_collections(docker_client):
    listed = yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())["collections"]
    output = docker_client.containers.run(EE_IMAGE, ["ansible-galaxy", "collection", "list", "--format", "json"],
                                          remove=True, stderr=False)
    found = {name: info["version"] for path in json.loads(output).values() for name, info in path.items()}
    assert {c["name"]: found.get(c["name"]) for c in listed} == {c["name"]: c["version"] for c in listed}
