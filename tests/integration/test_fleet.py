"""playbooks/fleet.yml on a real fleet: trainer "hosts" are containers of the worker image with host networking (so
PostgreSQL on 127.0.0.1 is reached) and their own file systems, reached by Ansible through the
community.docker.docker connection; the controller is localhost. A shared folder (bind-mounted at the same path
into every host) stands in for the operator's NFS share of Optuna's artifact store, and moto's server mode (a local
S3-compatible server, requirements-test.txt) for an S3 bucket: a stand-in, not AWS S3 itself.
AUTOTUNE_TEST_WORKER_IMAGE names another worker image to test (one built from a changed tree)."""
import datetime
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

import numpy as np
import optuna
import pytest
import yaml

from conftest import REPO, SAMPLE_DATA, missing, password_of
from containers_support import engine, require_root
from test_secret_leaks import Watch, found_in
from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune import fleet

WORKER_IMAGE = os.environ.get("AUTOTUNE_TEST_WORKER_IMAGE", "autotune-worker-keras:cpu-latest")
COMPLETE, RUNNING, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                           optuna.trial.TrialState.FAIL)
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def worker_image():
    require_root()
    client = engine()
    try:
        client.images.get(WORKER_IMAGE)
    except Exception:  # pylint: disable=broad-except  # docker.errors.ImageNotFound: build it as an operator does
        built = subprocess.run([str(BIN / "ansible-playbook"), "playbooks/worker_image.yml", "-e",
                                "@.ci/image_vars.yml"], cwd=REPO, text=True,
                               capture_output=True, timeout=1200, check=False)
        if built.returncode != 0:
            missing(f"the worker image could not be built: {built.stdout[-1500:]}")
    return client


class Fleet:
    """Host containers, their inventory, and ansible-playbook runs of playbooks/fleet.yml against them."""

    def __init__(self, client, work, postgres_url):
        self.client, self.work, self.url = client, work, postgres_url
        self.tag = uuid.uuid4().hex[:6]
        self.artifacts = work / "artifacts"
        self.artifacts.mkdir(mode=0o777)
        self.artifacts.chmod(0o777)  # the hosts' trainer user (uid 10001) writes there
        self.containers = {}
        self.secrets = work / "secrets.yml"  # the storage URL reaches Ansible as -e @FILE (0600), never on argv
        self.secrets.write_text(yaml.safe_dump({"autotune_storage": str(postgres_url)}))
        self.secrets.chmod(0o600)

    def host(self, name):
        container = self.client.containers.run(
            WORKER_IMAGE, ["sleep", "infinity"], name=f"autotune-fleet-{self.tag}-{name}", detach=True,
            network_mode="host", volumes={str(self.artifacts): {"bind": str(self.artifacts), "mode": "rw"}})
        self.containers[name] = container
        return container

    def inventory(self, **host_vars):
        hosts = {name: {"ansible_connection": "community.docker.docker", "ansible_host": c.name,
                        "ansible_python_interpreter": "/opt/trainer/bin/python", **host_vars.get(name, {})}
                 for name, c in self.containers.items() if name in host_vars}
        path = self.work / f"inventory-{len(list(self.work.glob('inventory-*')))}.yml"
        path.write_text(yaml.safe_dump({"all": {
            "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
            "children": {"trainers": {"hosts": hosts}}}}))
        return path

    def start(self, inventory, config, verbosity="-v", **more):
        extra = {"autotune_config": str(config), "autotune_runs_root": str(self.work / "runs"),
                 "autotune_fleet_artifacts": str(self.artifacts), "autotune_fleet_poll": 1,
                 "autotune_build_sample_data": False, **more}
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   PATH=f"{BIN}:{os.environ['PATH']}")
        self.log = self.work / f"play-{uuid.uuid4().hex[:6]}.log"
        with open(self.log, "w", encoding="utf-8") as out:
            return subprocess.Popen([str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/fleet.yml", verbosity,
                                     "-e", f"@{self.secrets}", "-e", json.dumps(extra)],
                                    cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)

    def finish(self, play, timeout=400):
        """The playbook's whole output once it ended (its end, in the failure, when it does not)."""
        try:
            play.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            play.kill()
            pytest.fail(f"the playbook did not end within {timeout} s: {self.log.read_text()[-4000:]}")
        return self.log.read_text()

    def close(self):
        for container in self.containers.values():
            container.remove(force=True)


@pytest.fixture
def fleet_hosts(worker_image, tmp_path, postgres_url):
    hosts = Fleet(worker_image, tmp_path, postgres_url)
    yield hosts
    hosts.close()


def _config(folder, study, **sections):
    config = {"study": study, "dataset": {"path": str(SAMPLE_DATA)},
              "model": {"template": "cnn", "baseline": {"filters": 8, "dense_units": 32, "epochs": 2}},
              "search": {"strategy": "random", "pruner": "none",
                         "space": {"filters": {"type": "int", "low": 4, "high": 16},
                                   "dense_units": {"type": "int", "low": 8, "high": 32}}},
              "budget": {"max_trials": 5, "trial_timeout": 300, "max_seconds": 900},
              "target": {"goal": 0.999}}  # the default heartbeat and grace period: their take-over is measured
    config.update(sections)
    path = folder / "autotune.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _trials(url, study):
    """The study's trials, or None while the database restarts."""
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except Exception:  # pylint: disable=broad-except  # the server is restarting: ask again
        return None


def _own(trials):
    """The study's trials less those asked past the budget when both hosts asked at once (budget.past_budget): each
    such trial is checked to have been failed at once, never trained, then left out as the product leaves it out."""
    over = [t for t in trials if study_budget.OVER_BUDGET in t.user_attrs]
    assert all(t.state == FAIL and t.user_attrs == {study_budget.OVER_BUDGET: True} and not t.intermediate_values
               for t in over), "a trial asked past the budget is failed untrained"
    return study_budget.own(trials)


def _host(trial):
    return os.path.basename(trial.user_attrs.get("run_dir", ""))


def _wait(predicate, process, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the playbook ended before {what} (rc {process.returncode})")
        if predicate():
            return
        time.sleep(0.3)
    process.kill()
    pytest.fail(f"timed out waiting for {what}")


def _overlap(a, b):
    return a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete


def test_two_hosts_share_a_study_through_a_restart_and_a_dead_host(fleet_hosts, tmp_path, postgres_url, sample_data):
    """Both hosts train at once; PostgreSQL restarts mid-study; host a dies mid-trial: its trial is trained again by
    host b, the study completes with no trial lost or doubled, and host a's finished trials still reach the report."""
    study = f"fleet-{uuid.uuid4().hex[:8]}"
    fleet_hosts.host("host-a")
    fleet_hosts.host("host-b")
    inventory = fleet_hosts.inventory(**{"host-a": {}, "host-b": {}})
    play = fleet_hosts.start(inventory, _config(tmp_path, study))

    def both_running():
        trials = _trials(postgres_url, study) or []
        return {_host(t) for t in trials if t.state == RUNNING} == {"host-a", "host-b"}
    _wait(both_running, play, "both hosts training at once")
    restarted = subprocess.run(["pg_ctlcluster", "15", "main", "restart"], capture_output=True, text=True, check=False)
    assert restarted.returncode == 0, restarted.stderr

    def a_mid_second_trial():
        trials = _trials(postgres_url, study) or []
        mine = [t for t in trials if _host(t) == "host-a"]
        return (any(t.state == COMPLETE for t in mine)
                and any(t.state == RUNNING and t.intermediate_values for t in mine))
    _wait(a_mid_second_trial, play, "host a's second trial past its first epoch")
    fleet_hosts.containers["host-a"].kill()
    killed = datetime.datetime.now()  # Optuna's times are the workers' local clocks (this host's, in containers)
    output = fleet_hosts.finish(play)

    trials = _own(_trials(postgres_url, study))
    retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t for t in trials}
    retried.pop(None, None)
    failed = [t for t in trials if t.state == FAIL]
    assert [t.number for t in failed] == sorted(retried), "only the dead host's trials failed, and each was retried"
    # Host a held one trial training, and perhaps one more whose saved model it was scoring: both die with it.
    assert 1 <= len(retried) <= 2 and {_host(t) for t in failed} == {"host-a"}
    assert all(retried[t.number].state == COMPLETE and _host(retried[t.number]) == "host-b" for t in failed)
    # Take-over with the defaults (heartbeat 2 s, grace 12 s): the dead host's trial is failed and queued again
    # within 20 s of the kill; its retry starts when host b has a free slot (after its own trial).
    taken_over = max((t.datetime_complete - killed).total_seconds() for t in failed)
    print(f"take-over: failed and re-queued {taken_over:.1f} s after the kill; retries started "
          f"{[round((retried[t.number].datetime_start - killed).total_seconds(), 1) for t in failed]} s after it")
    assert taken_over < 20, taken_over
    assert not [t for t in trials if t.state == RUNNING], "no trial is left hanging"
    counted = [t for t in trials if t.number not in retried]
    assert len(counted) == 5 and all(t.state == COMPLETE and len(t.intermediate_values) == 2 for t in counted), \
        "the budget's five trials all finished: none lost to the restart or the dead host, none counted twice"
    by_host = {h: [t for t in counted if _host(t) == h] for h in ("host-a", "host-b")}
    assert any(_overlap(a, b) for a in by_host["host-a"] for b in by_host["host-b"]), "the hosts trained at once"

    run_dir = tmp_path / "runs" / study
    assert (run_dir / "summary.json").is_file(), output[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_completed"] == 5 and summary["runner"] == "fleet"
    assert summary["runner_details"]["lost"] == ["host-a"]
    for trial in counted:  # host a's finished trials too: from the artifact store, not from the dead host
        folder = run_dir / trial.user_attrs["trial_dir"]
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2, trial.number
        assert (folder / "model.py").is_file() and (folder / "model.keras").is_file()
    assert (run_dir / "best_model.keras").is_file() and (run_dir / "result.eml").is_file()
    assert "Goal not reached" in output, output[-3000:]
    password = password_of(postgres_url)
    survivor = fleet_hosts.containers["host-b"]  # what Ansible left on the host: async results, the run folder
    left = survivor.exec_run(["sh", "-c", "cat ~/.ansible_async/* ~/autotune-fleet/runs/*/*/progress.log"])
    assert b"trial budget spent" in left.output
    assert found_in({"output": output, "summary.json": (run_dir / "summary.json").read_text(),
                     "host files": left.output}, [password]) == []


def _other_pack(packed, target):
    """The same data set with two validation labels swapped: other data under the same name."""
    shutil.copytree(packed, target)
    labels = np.load(target / "y_val.npy")
    labels[[0, -1]] = labels[[-1, 0]] if labels[0] != labels[-1] else 1 - labels[[0, -1]]
    np.save(target / "y_val.npy", labels)


def test_goal_on_one_host_stops_the_other_and_other_data_is_refused(fleet_hosts, tmp_path, postgres_url,
                                                                   sample_data):
    """Trial 0 (fast) and trial 1 (a slow learning rate, enqueued by the operator) start on two hosts; trial 0 reaches
    the goal and the other host's trial stops. A third host holding other data refuses to join, in one line."""
    study = f"fleet-goal-{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path, study, target={"goal": 0.75}, budget={"max_trials": 4, "trial_timeout": 300},
                     model={"template": "cnn", "baseline": {"filters": 8, "dense_units": 32, "epochs": 3,
                                                            "learning_rate": 0.003}},
                     search={"strategy": "random", "pruner": "none",
                             "space": {"learning_rate": {"type": "float", "low": 0.000001, "high": 0.003, "log": True},
                                       "epochs": {"type": "int", "low": 1, "high": 40}}})
    target = optuna.create_study(study_name=study, storage=postgres_url, direction="maximize")
    target.enqueue_trial({"learning_rate": 0.003, "epochs": 3}, user_attrs={"baseline": True})
    target.enqueue_trial({"learning_rate": 0.000001, "epochs": 40})  # barely learns: cannot reach 0.75 first
    loaded = yaml.safe_load(config.read_text())
    packed = Path(tune_dataset.prepare(dict(loaded["dataset"], image_size=[28, 28], color="grayscale",
                                            validation_split=0.2, test_split=0.15, seed=1),
                                       str(tmp_path / "runs" / study / "data"))["path"])
    _other_pack(packed, tmp_path / "other" / packed.name)
    for name in ("host-a", "host-b", "host-c"):
        fleet_hosts.host(name)
    home = "/home/trainer/autotune-fleet"
    container = fleet_hosts.containers["host-c"]
    container.exec_run(["mkdir", "-p", f"{home}/{study}"])
    subprocess.run(["docker", "cp", str(tmp_path / "other" / packed.name), f"{container.name}:{home}/{study}/"], check=True)
    container.exec_run(["chown", "-R", "10001:10001", f"{home}/{study}"], user="root")
    inventory = fleet_hosts.inventory(**{"host-a": {}, "host-b": {}, "host-c": {"autotune_fleet_ship_data": False}})
    play = fleet_hosts.start(inventory, config)
    output = fleet_hosts.finish(play)

    trials = _trials(postgres_url, study)
    assert (tmp_path / "runs" / study / "summary.json").is_file(), output[-4000:]
    assert trials[0].state == COMPLETE and trials[0].value >= 0.75, output[-3000:]
    goal_at = trials[0].datetime_complete
    stopped = [t for t in trials if t.state != COMPLETE and "reached the goal" in t.user_attrs.get("reason", "")]
    assert stopped, [(t.number, t.state, t.user_attrs.get("reason")) for t in trials]
    for trial in stopped:  # in flight on another host when trial 0 reached the goal, and stopped then
        assert _host(trial) not in ("", _host(trials[0])) and trial.datetime_start < goal_at
        assert len(trial.intermediate_values) < trial.params["epochs"], "stopped within its run, not at its end"
        assert (trial.datetime_complete - goal_at).total_seconds() < 30
    assert not [t for t in trials if t.state == COMPLETE and t.datetime_start > goal_at], "nothing trained after"
    assert not [t for t in trials if _host(t) == "host-c"], "the host with other data trained nothing"
    refusals = [line for line in output.splitlines() if "holds data set" in line and "does not join" in line]
    assert refusals and all("host-c" in line for line in refusals), output[-3000:]
    assert fleet.pack_fingerprint(str(packed)) in refusals[0]
    assert json.loads((tmp_path / "runs" / study / "summary.json").read_text())["reached"] is True
    assert play.returncode != 0 and "The study ended, but host-c did not finish" in output, \
        "a refused host still fails the run, after the result was sent"


# The seed's shape (examples/original_pipeline/train.py), small: a module-level Sequential reading Kaggle-style
# folders beside it with image_dataset_from_directory, one Conv+ReLU+Pool block, one epoch.
SEED_SCRIPT = '''import keras
from keras import layers

training_set = keras.utils.image_dataset_from_directory(
    "cnn_dataset/training_set/", image_size=(28, 28), batch_size=32, label_mode="binary", seed=1)
test_set = keras.utils.image_dataset_from_directory(
    "cnn_dataset/test_set/", image_size=(28, 28), batch_size=32, label_mode="binary", shuffle=False)

model = keras.Sequential()
model.add(keras.Input(shape=(28, 28, 3)))
model.add(layers.Rescaling(1.0 / 255))
model.add(layers.Conv2D(4, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D(pool_size=(2, 2)))
model.add(layers.Flatten())
model.add(layers.Dense(units=8, activation="relu"))
model.add(layers.Dense(units=1, activation="sigmoid"))

model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(training_set, validation_data=test_set, epochs=1)
model.save("model.h5")
'''


def _seed_folder(folder, per_class=150):
    """train.py beside its own images (cnn_dataset/{training_set,test_set}/{cats,dogs}), as the seed keeps them."""
    for source, name in (("cat", "cats"), ("dog", "dogs")):
        images = sorted((SAMPLE_DATA / source).iterdir())[:per_class]
        for index, image in enumerate(images):
            part = folder / "cnn_dataset" / ("test_set" if index % 3 == 2 else "training_set") / name
            part.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, part / image.name)
    (folder / "train.py").write_text(SEED_SCRIPT)
    return folder


def test_a_users_script_trains_on_two_hosts_from_its_shipped_folder(fleet_hosts, tmp_path, postgres_url, sample_data):
    """model.file on the fleet: the script's folder (its images inside) reaches both hosts under its fingerprint, both
    train trials of the script rewritten by the study, and the controller reports on the user's own file."""
    study = f"fleet-script-{uuid.uuid4().hex[:8]}"
    folder = _seed_folder(tmp_path / "seed")
    config = folder / "autotune.yml"
    config.write_text(yaml.safe_dump({
        "study": study, "model": {"file": "train.py"},
        "dataset": {"path": "cnn_dataset/test_set", "validation_split": 0.5, "image_size": [28, 28], "color": "rgb"},
        "search": {"strategy": "random", "pruner": "none",
                   "space": {"conv1.filters": {"type": "int", "low": 2, "high": 6}}},
        "budget": {"max_trials": 2, "trial_timeout": 300, "max_seconds": 600}, "target": {"goal": 0.999}}))
    fleet_hosts.host("host-a")
    fleet_hosts.host("host-b")
    play = fleet_hosts.start(fleet_hosts.inventory(**{"host-a": {}, "host-b": {}}), config)
    output = fleet_hosts.finish(play)

    trials = _trials(postgres_url, study)
    assert trials and [t.state for t in trials] == [COMPLETE] * 2, output[-4000:]
    assert {_host(t) for t in trials} == {"host-a", "host-b"}, "both hosts trained the script"
    shipped = optuna.load_study(study_name=study, storage=postgres_url).user_attrs[fleet.MODEL_FINGERPRINT_ATTR]
    assert shipped == fleet.model_fingerprint(str(folder))
    run_dir = tmp_path / "runs" / study
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_completed"] == 2 and summary["runner"] == "fleet", output[-3000:]
    trial_zero = run_dir / trials[0].user_attrs["trial_dir"]
    assert (trial_zero / "model.py").read_bytes() == SEED_SCRIPT.encode(), "trial 0 is the user's file byte for byte"
    for trial in trials:  # each epoch logged from the images the script read on its host
        assert len((run_dir / trial.user_attrs["trial_dir"] / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run_dir / "best_model.py").is_file() and (run_dir / "result.eml").is_file()
    host = fleet_hosts.containers["host-b"]
    listed = host.exec_run(["sh", "-c", f"ls ~/autotune-fleet/{study}/model-{shipped}/cnn_dataset/training_set/cats | wc -l"])
    assert listed.output.strip() == b"100", "the script's own images were shipped with it"


class Bucket(dict):
    """The test bucket: its URL, keys and client; shown without its keys in a failure's traceback."""

    def __repr__(self):
        return f"Bucket({self['url']})"


@pytest.fixture
def s3_bucket(tmp_path):
    """A real S3-compatible server started for the test (moto's server mode on a free loopback port), a bucket in
    it, and the keys the hosts are given (moto takes any; they are random here, so the leak scan can look for them)."""
    binary = shutil.which("moto_server", path=f"{BIN}:{os.environ['PATH']}")
    try:
        import boto3  # pylint: disable=import-outside-toplevel
    except ImportError:
        binary = None
    if not binary:
        missing("moto_server and boto3 (requirements-test.txt) are not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "moto.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
    server = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    keys = {"endpoint_url": f"http://127.0.0.1:{port}", "region": "us-east-1",
            "access_key": "AKIA" + secrets.token_hex(8).upper(), "secret_key": secrets.token_urlsafe(30)}
    client = boto3.client("s3", endpoint_url=keys["endpoint_url"], region_name=keys["region"],
                          aws_access_key_id=keys["access_key"], aws_secret_access_key=keys["secret_key"])
    deadline = time.time() + 30
    while True:
        try:
            client.create_bucket(Bucket="autotune-fleet")
            break
        except Exception:  # pylint: disable=broad-except  # the server is still starting
            if time.time() > deadline or server.poll() is not None:
                pytest.fail(f"moto_server did not start: {(tmp_path / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.3)
    yield Bucket(url="s3://autotune-fleet/runs", keys=keys, client=client)
    server.terminate()
    server.wait(timeout=10)
    log.close()


def test_a_dead_hosts_trial_resumes_on_the_other_host_from_its_checkpoint_in_s3(fleet_hosts, tmp_path, postgres_url,
                                                                               sample_data, s3_bucket):
    """Two trials of 8 epochs, one per host; a host is killed after its trial's third epoch. The other host's retry
    starts from the newest checkpoint the dead host shipped to the S3 bucket (at most one epoch lost), every epoch is
    logged once, the report is collected from the bucket, no checkpoint is left in it, and the S3 keys appear
    nowhere. (Two trials: a budget of one is spent by the enqueued baseline before a host asks for it.)"""
    study = f"fleet-ckpt-{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path, study, budget={"max_trials": 2, "trial_timeout": 300, "max_seconds": 600},
                     model={"template": "cnn", "baseline": {"filters": 8, "dense_units": 32, "epochs": 8}})
    keys = s3_bucket["keys"]
    vault = yaml.safe_load(fleet_hosts.secrets.read_text())
    fleet_hosts.secrets.write_text(yaml.safe_dump(dict(vault, autotune_artifact_s3=keys)))  # as from the vault
    fleet_hosts.host("host-a")
    fleet_hosts.host("host-b")
    watch = Watch()  # the process list (the hosts' processes included) while the play runs
    watch.start()
    play = fleet_hosts.start(fleet_hosts.inventory(**{"host-a": {}, "host-b": {}}), config, verbosity="-vvv",
                             autotune_artifact_store=s3_bucket["url"])
    seen = {}

    def shipped_after_epoch_3():
        for trial in _trials(postgres_url, study) or []:
            if trial.state == RUNNING and len(trial.intermediate_values) >= 3:
                seen.update(number=trial.number, epochs=len(trial.intermediate_values), host=_host(trial),
                            shipped=trial.user_attrs.get("checkpoint", {}).get("epoch", 0))
                if seen["shipped"] >= 2:
                    return True
        return False
    try:
        _wait(shipped_after_epoch_3, play, "a checkpoint after a trial's third epoch", timeout=900)
        fleet_hosts.containers[seen["host"]].kill()
        output = fleet_hosts.finish(play)
    finally:
        watch.done.set()
        watch.join()

    trials = _own(_trials(postgres_url, study))
    dead = next(t for t in trials if t.number == seen["number"])
    retries = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    retry = next(t for t in trials if retries(t) == dead.number)
    assert dead.state == FAIL and _host(dead) == seen["host"] and len(trials) == 3, output[-3000:]
    assert retry.state == COMPLETE and _host(retry) not in ("", seen["host"]), output[-3000:]
    resumed = retry.user_attrs.get("resumed_from_epoch")
    print(f"\nkilled after {seen['epochs']} epochs reported, {seen['shipped']} shipped; the retry resumed after epoch "
          f"{resumed}; checkpoint uploads of the retry: {retry.user_attrs.get('checkpoint_uploads')}")
    assert resumed == dead.user_attrs["checkpoint"]["epoch"] and resumed >= len(dead.intermediate_values) - 1, \
        "the retry starts from the dead host's newest checkpoint: at most one epoch lost"
    assert sorted(retry.intermediate_values) == list(range(8)), "every epoch reported once"
    run_dir = tmp_path / "runs" / study
    lines = (run_dir / retry.user_attrs["trial_dir"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(8)), "every epoch logged once, in order"
    log = (run_dir / retry.user_attrs["trial_dir"] / "trainer.log").read_text()
    assert f"Epoch {resumed + 1}/8" in log and "Epoch 1/8" not in log, "the retry trained only the epochs left"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_completed"] == 2 and summary["runner_details"]["lost"] == [seen["host"]]
    assert any(f"retrying trial {dead.number} of a host that stopped, from its checkpoint after epoch {resumed}" in line
               for line in summary["progress"]), summary["progress"]
    objects = [o["Key"] for o in s3_bucket["client"].list_objects_v2(Bucket="autotune-fleet").get("Contents", [])]
    assert objects and all(key.startswith("runs/") for key in objects)
    assert not [key for key in objects if "checkpoint-" in key], "a told trial's checkpoints are removed"

    leaks = {"output": output, "ps+inspect": "\n".join(watch.seen)}
    for path in run_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            leaks[str(path)] = path.read_bytes().decode("latin-1")
    survivor = fleet_hosts.containers[_host(retry)]
    left = survivor.exec_run(["sh", "-c", "cat ~/.ansible_async/* ; grep -rl . ~/.ansible ~/autotune-fleet/runs | head -1000 "
                              "| xargs cat"]).output.decode("latin-1")
    leaks.update(host=left, inspect=json.dumps(survivor.client.api.inspect_container(survivor.id)))
    assert "ESTABLISH DOCKER CONNECTION" in output and len(left) > 1000 and len(leaks) > 20, "the scan saw real data"
    password = password_of(postgres_url)
    assert found_in(leaks, [keys["access_key"], keys["secret_key"], password]) == []
