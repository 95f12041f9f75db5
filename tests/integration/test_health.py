"""Self-healing with a real Docker engine and real kills: playbooks/health.yml relaunches dead trials."""
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
import pytest

from ansible.module_utils.autotune.runners import spares
from conftest import TRAINER_IMAGE as IMAGE, BIN, REPO, run_playbook, wait_until, write_config


OURS = "io.autotune.project=autotune"
# What a replacement container must keep of the spare it replaces (runners/docker.py _options).
CONFINEMENT = ("CapDrop", "SecurityOpt", "ReadonlyRootfs", "Tmpfs", "PidsLimit", "NanoCpus", "Memory", "MemorySwap",
               "Init", "NetworkMode", "DeviceRequests", "LogConfig")


@pytest.fixture(scope="module")
def engine(docker_engine):
    return docker_engine


def _health(**extra):
    result = run_playbook("health.yml", dict({"autotune_health_lock": "/tmp/autotune-health-test.lock"}, **extra))
    result.stdout = " ".join(result.stdout.split())  # the YAML callback folds long lines
    return result


def _start_controller(tmp_path, study, epochs=14, warm=True):
    docker_block = {"cpus": 2, "memory": "2g", "relaunch_grace": 240, "warm": warm}
    config = write_config(tmp_path, study=study, target={"goal": 0.999}, budget={"max_trials": 1},
                          model={"template": "cnn", "baseline": {"epochs": epochs, "batch_size": 32, "filters": 8}},
                          search={"space": {"epochs": {"type": "int", "low": epochs, "high": epochs + 2}}},
                          runner={"kind": "docker", "docker": docker_block})
    extra = {"autotune_config": str(config), "autotune_runs_root": str(tmp_path / "runs")}
    command = [str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"), "-e", json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    log = open(tmp_path / "controller.log", "w")  # noqa: SIM115 - lives as long as the controller
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, tmp_path / "runs" / study


def _records(run_dir):
    path = run_dir / "trials" / "0000" / "metrics.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def _epochs(run_dir):
    return [record["epoch"] for record in _records(run_dir)]


def _trial_container(client, study, run_dir):
    """The container training the study's trial 0: a warm spare handed it (its label names the spare folder,
    spares.json the trial it became), or a cold one labelled 0000; never the spare waiting for trial 1."""
    found = client.containers.list(all=True, filters={"label": [OURS, f"io.autotune.study={study}"]})
    found = [c for c in found if spares.folder_of(str(run_dir), c.labels.get("io.autotune.trial")) == "0000"]
    return found[0] if found else None


def _finish(process, run_dir, tmp_path):
    assert process.wait(timeout=600) != 0, "goal 0.999 is not reached: the playbook fails after the report"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_trials"] == 1, (tmp_path / "controller.log").read_text()[-3000:]
    return summary["trials"][0]


def test_killed_spare_is_replaced_on_the_trial_folder_and_resumes(engine, tmp_path, sample_data):
    process, run_dir = _start_controller(tmp_path, "healkill")
    wait_until(lambda: len(_epochs(run_dir)) >= 3, 300, "three epochs")
    container = _trial_container(engine, "healkill", run_dir)
    assert spares.SPARE_NAME.match(container.labels["io.autotune.trial"]), "trial 0 went to the warm spare"
    container.kill()
    killed_at = time.time()
    wait_until(lambda: (container.reload() or container.status) == "exited", 30, "the container to die")
    done = len(_epochs(run_dir))
    healed = _health()
    assert healed.returncode == 0, healed.stdout[-2000:]
    assert f"relaunched {container.name} (study healkill, trial 0): it died (exit 137" in healed.stdout, healed.stdout[-2000:]
    assert "resumed in a fresh container autotune-healkill-0000-" in healed.stdout
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(container.id)  # removed: no later health pass acts on it again
    fresh = _trial_container(engine, "healkill", run_dir)
    assert fresh.labels["io.autotune.trial"] == "0000"
    assert fresh.attrs["HostConfig"]["Binds"][0] == f"{run_dir}/trials/0000:/trial:rw"
    assert {k: fresh.attrs["HostConfig"][k] for k in CONFINEMENT} == {k: container.attrs["HostConfig"][k] for k in CONFINEMENT}
    trial = _finish(process, run_dir, tmp_path)
    assert trial["outcome"] == "finished" and trial["relaunches"] == 1
    assert trial["resumed_from_epoch"] >= done - 1
    epochs = _epochs(run_dir)
    assert epochs == list(range(len(epochs))) and epochs[-1] == trial["params"]["epochs"] - 1, "no epoch trained twice"
    log = (run_dir / "trials" / "0000" / "trainer.log").read_text()
    last = f"Epoch {epochs[-1] + 1}/"  # trained by the replacement: the spare was killed epochs before
    assert log.index("trial handed to warm trainer") < log.index(last), "the spare's log is kept, then the replacement's"
    print(f"kill -> resumed epoch done: {_records(run_dir)[done]['time'] - killed_at:.1f} s")
    assert _trial_container(engine, "healkill", run_dir) is None, "the finished trial's container is removed"


def _daemon_ctl(action):
    ctl = shutil.which("dockerd-ctl") or "/usr/local/sbin/dockerd-ctl"
    if os.path.exists(ctl):
        return subprocess.run([ctl, action], capture_output=True, text=True, timeout=180, check=False)
    return subprocess.run(["systemctl", action, "docker"], capture_output=True, text=True, timeout=180, check=False)


def test_stopped_daemon_is_started_and_the_trial_relaunched(engine, tmp_path, sample_data):
    # Cold, with no spare: the dead container is started again in place (its mount is the trial folder).
    process, run_dir = _start_controller(tmp_path, "healdaemon", epochs=40, warm=False)
    wait_until(lambda: len(_epochs(run_dir)) >= 2, 300, "two epochs")
    stopped = _daemon_ctl("stop")
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(docker.errors.DockerException):
        docker.from_env().ping()
    healed = _health()
    assert healed.returncode == 0, healed.stdout[-3000:]
    assert "TASK [Start the Docker daemon again]" in healed.stdout
    assert docker.from_env().ping()
    assert "(study healdaemon, trial 0): it died" in healed.stdout, healed.stdout[-4000:]
    cold = _trial_container(docker.from_env(), "healdaemon", run_dir)
    assert cold.labels["io.autotune.trial"] == "0000" and f"relaunched {cold.name} " in healed.stdout
    assert "fresh container" not in healed.stdout
    trial = _finish(process, run_dir, tmp_path)
    assert trial["outcome"] == "finished" and trial["relaunches"] == 1 and trial["resumed_from_epoch"] >= 1
    epochs = _epochs(run_dir)
    assert epochs == list(range(len(epochs)))


@pytest.fixture()
def live_study(tmp_path):
    """A run directory whose controller looks alive: the test holds its lock, as tune.yml does."""
    run_dir = tmp_path / "runs" / "loop"
    (run_dir / "trials" / "0000").mkdir(parents=True)
    os.chown(run_dir / "trials" / "0000", 10001, 10001)
    with open(run_dir / ".tune.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield run_dir


DIE_EVERY_TIME = "import os; os._exit(137)"
# Dies on its first start only, then keeps running: a container that one relaunch heals.
DIE_ONCE = ("import os, time\nif not os.path.exists('/tmp/started'):\n    open('/tmp/started', 'w').close()\n"
            "    os._exit(137)\ntime.sleep(120)")


def _dying(client, name, labels, program=DIE_EVERY_TIME):
    # Exit 137 as a SIGKILL gives (the trainer is PID 1 in its container, which SIGKILL from inside cannot reach).
    container = client.containers.run(IMAGE, ["python", "-c", program], name=name,
                                      labels=labels, detach=True, network_mode="none")
    container.wait(timeout=60)
    container.reload()
    return container


def test_crash_loop_is_given_up_and_strangers_are_left_alone(engine, live_study):
    labels = {"io.autotune.project": "autotune", "io.autotune.study": "loop", "io.autotune.trial": "0",
              "io.autotune.run_dir": str(live_study)}
    ours = _dying(engine, f"autotune-loop-0000-{os.getpid()}", labels)
    stranger = _dying(engine, f"autotune-loop-0000-{os.getpid()}x", {"io.autotune.study": "loop"})
    other_project = _dying(engine, f"autotune-loop-other-{os.getpid()}", dict(labels, **{"io.autotune.project": "other"}))
    strangers = {c.id: c.attrs["State"]["StartedAt"] for c in (stranger, other_project)}
    try:
        for attempt in range(1, 4):
            healed = _health()
            assert healed.returncode == 0 and f"relaunched {ours.name} (study loop, trial 0)" in healed.stdout
            wait_until(lambda: (ours.reload() or ours.status) == "exited", 60, "the relaunched container to die again")
            assert json.loads((live_study / "trials" / "0000" / "health.json").read_text())["relaunches"] == attempt
        final = _health()
        assert final.returncode == 0 and f"gave_up {ours.name}" in final.stdout
        assert "relaunch limit 3 reached" in json.loads((live_study / "trials" / "0000" / "health.json").read_text())["gave_up"]
        assert "gave_up" not in _health().stdout.split("PLAY RECAP")[0].split("Log one line")[1], "given up once"
        for container in (stranger, other_project):
            container.reload()
            assert container.attrs["State"]["StartedAt"] == strangers[container.id], "never started again"
    finally:
        for container in (ours, stranger, other_project):
            container.remove(force=True)


def test_overlapping_health_runs_act_once(engine, live_study):
    labels = {"io.autotune.project": "autotune", "io.autotune.study": "loop", "io.autotune.trial": "0",
              "io.autotune.run_dir": str(live_study)}
    ours = _dying(engine, f"autotune-overlap-0000-{os.getpid()}", labels, program=DIE_ONCE)
    try:
        with open("/tmp/autotune-health-test.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            held = _health()
        assert held.returncode == 0 and "this one did nothing" in held.stdout and "changed=0" in held.stdout
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
        command = [str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "health.yml"),
                   "-e", "autotune_health_lock=/tmp/autotune-health-test.lock"]
        runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(2)]
        outputs = [" ".join(run.communicate(timeout=120)[0].split()) for run in runs]
        assert all(run.returncode == 0 for run in runs), outputs
        assert sum(out.count(f"relaunched {ours.name}") for out in outputs) == 1
    finally:
        ours.remove(force=True)


def test_controller_not_running_means_hands_off(engine, tmp_path):
    run_dir = tmp_path / "runs" / "orphan"
    (run_dir / "trials" / "0000").mkdir(parents=True)
    labels = {"io.autotune.project": "autotune", "io.autotune.study": "orphan", "io.autotune.trial": "0",
              "io.autotune.run_dir": str(run_dir)}
    ours = _dying(engine, f"autotune-orphan-0000-{os.getpid()}", labels)
    try:
        healed = _health()
        assert healed.returncode == 0 and "relaunched" not in healed.stdout
        assert not (run_dir / "trials" / "0000" / "health.json").exists()
    finally:
        ours.remove(force=True)


def test_a_spare_whose_controller_is_gone_is_removed_and_a_live_ones_is_kept(engine, tmp_path, live_study):
    """A controller killed with SIGKILL leaves its warm spares waiting for a trial no one will hand them."""
    orphan_run = tmp_path / "runs" / "gone"

    def spare(run_dir, study):
        folder = Path(spares.new_folder(str(run_dir), 0))
        labels = {"io.autotune.project": "autotune", "io.autotune.study": study, "io.autotune.trial": folder.name,
                  "io.autotune.run_dir": str(run_dir)}
        return engine.containers.run(IMAGE, ["sleep", "300"], name=f"autotune-{study}-{folder.name[1:]}-{os.getpid()}",
                                     labels=labels, detach=True, network_mode="none"), folder

    (orphan_run / "trials").mkdir(parents=True)
    orphan, orphan_folder = spare(orphan_run, "gone")
    kept, kept_folder = spare(live_study, "loop")
    try:
        healed = _health()
        assert healed.returncode == 0 and f"removed {orphan.name} (study gone" in healed.stdout, healed.stdout
        with pytest.raises(docker.errors.NotFound):
            orphan.reload()
        assert not orphan_folder.exists()
        kept.reload()
        assert kept.status == "running" and kept_folder.is_dir() and kept.name not in healed.stdout
    finally:
        for container in (orphan, kept):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass


def test_a_fifo_planted_by_a_container_never_hangs_the_health_check(engine, live_study):
    """Issue 20 row 1: a FIFO at health.json hung the root health check holding its lock (healing stopped for every
    study on the host). Now that container is one line and the pass relaunches the others."""
    second = live_study / "trials" / "0001"
    second.mkdir()
    os.chown(second, 10001, 10001)

    def labels(trial):
        return {"io.autotune.project": "autotune", "io.autotune.study": "loop", "io.autotune.trial": trial,
                "io.autotune.run_dir": str(live_study)}
    planter = engine.containers.run(  # the attack comes from the trial's container: its folder is all it can write
        IMAGE, ["python", "-c", "import os; os.mkfifo('/trial/health.json'); os._exit(137)"], labels=labels("0"),
        name=f"autotune-loop-0000-fifo{os.getpid()}", detach=True, network_mode="none", user="10001:10001",
        volumes={str(live_study / "trials" / "0000"): {"bind": "/trial", "mode": "rw"}})
    planter.wait(timeout=60)
    other = _dying(engine, f"autotune-loop-0001-{os.getpid()}", labels("1"), program=DIE_ONCE)
    try:
        command = [str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "health.yml"), "-e",
                   json.dumps({"autotune_health_lock": "/tmp/autotune-health-test.lock"})]
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
                   ANSIBLE_NOCOLOR="1")
        try:
            healed = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, timeout=240, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail("the health check hung on a FIFO a trial planted")
        out = " ".join(healed.stdout.split())
        assert healed.returncode == 0, out[-3000:]
        assert (f"bad_trial_file {planter.name} (study loop, trial 0): health.json: the file is a FIFO; expected a "
                "regular file; not relaunched") in out
        assert f"relaunched {other.name} (study loop, trial 1)" in out, "the pass went on with the other container"
        planter.reload()
        assert planter.status == "exited", "never relaunched"
    finally:
        for container in (planter, other):
            container.remove(force=True)
