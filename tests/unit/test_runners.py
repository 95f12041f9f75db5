"""The runner registry and each runner's own configuration block."""
import json
import os
import subprocess
import sys

import pytest

from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune.errors import AutotuneError, ConfigError
from ansible.module_utils.autotune.runners import RUNNERS, make_runner, runner_facts
from ansible.module_utils.autotune.runners.base import Runner, SparePool
from ansible.module_utils.autotune.runners.local import LocalRunner, trainer_environment
from ansible.module_utils.autotune.trialdir import EXIT_BAD_INPUT
from conftest import REPO


def _validate(tmp_path, runner):
    (tmp_path / "data" / "a").mkdir(parents=True, exist_ok=True)
    return tune_config.validate({"dataset": {"path": "data"}, "model": {"template": "cnn"}, "runner": runner},
                                base_dir=str(tmp_path))


def test_every_registered_runner_has_its_own_validated_block(tmp_path):
    runner_schema = tune_config.SCHEMA["properties"]["runner"]["properties"]
    assert set(runner_schema) == {"kind", "slots", "max_trial_bytes", "min_free_bytes"} | set(RUNNERS)
    assert all(issubclass(cls, Runner) and cls.name == name for name, cls in RUNNERS.items())
    config = _validate(tmp_path, {"kind": "docker", "docker": {"cpus": 2, "memory": "2g"}})
    assert config["runner"]["docker"]["cpus"] == 2 and config["runner"]["docker"]["relaunch_grace"] == 180


def test_runner_settings_outside_their_block_are_named_one_line_each(tmp_path):
    with pytest.raises(ConfigError) as error:
        _validate(tmp_path, {"kind": "docker", "cpus": 2, "docker": {"memory": "lots"}})
    assert error.value.details == [
        "runner.cpus: unknown field; expected one of kind, slots, max_trial_bytes, min_free_bytes, local, docker",
        "runner.docker.memory: 'lots' is invalid; expected a memory limit such as 2g or 512m",
    ]


def test_docker_facts_pick_the_image_for_the_framework_or_say_why_not(tmp_path):
    config = _validate(tmp_path, {"kind": "docker"})
    assert runner_facts(config["runner"], "keras") == {"kind": "docker", "image": "autotune-trainer-keras:cpu-latest"}
    with pytest.raises(AutotuneError, match="runner.docker.images: no trainer image for framework 'pytorch'"):
        runner_facts(config["runner"], "pytorch")


def test_local_runner_from_its_block(tmp_path):
    config = _validate(tmp_path, {"kind": "local", "local": {"python": "/usr/bin/python3"}})
    runner = make_runner(config["runner"], "keras")
    assert isinstance(runner, LocalRunner)
    as_root = {"user": "nobody"} if os.geteuid() == 0 else {}  # Debian's python3: any account can run it
    assert runner.describe() == {"runner": "local", "python": "/usr/bin/python3", "warm": True, "spares": 1, **as_root}


def test_the_trainer_never_sees_the_controllers_secrets(monkeypatch):
    monkeypatch.setenv("AUTOTUNE_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    monkeypatch.setenv("PATH", "/usr/bin")
    env = trainer_environment("/opt/trainer")
    assert "s3cret" not in env.values() and env["PATH"] == "/usr/bin"
    assert env["PYTHONPATH"].startswith("/opt/trainer")


def test_each_slot_has_its_own_gpu_and_cpus_without_a_gpu_here():
    from ansible.module_utils.autotune.runners.docker import DockerRunner, gpu_for_slot, thread_environment
    from ansible.module_utils.autotune.runners.local import cpu_share
    assert [gpu_for_slot(["0", "1"], slot) for slot in (0, 1, 0, 1)] == ["0", "1", "0", "1"]
    runner = DockerRunner.__new__(DockerRunner)  # no engine needed to compute a container's options
    runner.cpus, runner.memory, runner.network, runner.gpu_ids = 1, "1g", False, [2, 3]
    devices = [runner._options(["true"], {}, {"study": "s", "trial": str(t), "run_dir": "/r", "slot": str(slot)},
                               "1:1", "train")["device_requests"][0]["DeviceIDs"]  # pylint: disable=protected-access
               for t, slot in ((0, 0), (1, 1), (2, 0), (3, 1))]
    assert devices == [["2"], ["3"], ["2"], ["3"]], "two slots never share a GPU, whatever the trial numbers"
    env = runner._options(["true"], {}, {"study": "s", "trial": "0", "run_dir": "/r"}, "1:1", "train")["environment"]
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" == trainer_environment()["TF_FORCE_GPU_ALLOW_GROWTH"], \
        "a warm spare waiting on a slot's GPU holds none of its memory until its trial trains"
    shares = [cpu_share(slot, 2, available={0, 1, 2, 3}) for slot in (0, 1)]
    assert shares == [{0, 1}, {2, 3}] and cpu_share(0, 1, available={0, 1}) == {0, 1}
    # A container's CPU quota does not limit the cores TensorFlow sees: its pools are sized to the share instead.
    assert (env["TF_NUM_INTRAOP_THREADS"], env["TF_NUM_INTEROP_THREADS"]) == ("1", "1")
    assert [thread_environment(cpus)["TF_NUM_INTRAOP_THREADS"] for cpus in (0.5, 1.5, 4, "2")] == ["1", "1", "4", "2"]


def test_the_spare_pool_hands_the_readiest_live_spare_and_tops_the_slot_up():
    started = iter(range(100))
    pool = SparePool(per_slot=2)
    pool.first(0, lambda: next(started))
    pool.first(0, lambda: next(started))
    assert pool.waiting(0) == 1, "warm-up starts one per slot, once"
    pool.top_up(0, lambda: next(started))
    assert pool.queues[0] == [0, 1]
    dead = {0}
    handed = pool.take(0, lambda spare: None if spare in dead else f"trial on spare {spare}")
    assert handed == "trial on spare 1", "a dead spare is passed over; the oldest live one takes the trial"
    assert pool.take(0, lambda spare: spare) is None, "an empty slot: the runner starts a cold trainer"
    pool.top_up(1, lambda: next(started))
    assert pool.queues[1] == [2, 3] and len(pool) == 2
    assert sorted(pool.drain()) == [2, 3] and len(pool) == 0


def test_no_spares_are_started_when_warm_is_off():
    pool = SparePool(per_slot=2, enabled=False)
    pool.first(0, lambda: "spare")
    pool.top_up(0, lambda: "spare")
    assert len(pool) == 0 and pool.take(0, lambda spare: spare) is None


def _pushed(tmp_path, local):
    (tmp_path / "data" / "a").mkdir(parents=True, exist_ok=True)
    return tune_config.validate({"dataset": {"path": "data"}, "model": {"template": "cnn"}}, base_dir=str(tmp_path),
                                pushed=True, overrides={"runner": {"kind": "local", "local": local}})


def test_a_controller_that_is_not_root_refuses_pushed_code_the_local_runner(tmp_path, monkeypatch):
    """Row 11 where no other user can be had: trials would share the user holding the module's arguments."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError) as error:
        _pushed(tmp_path, {})
    assert error.value.details == [
        "runner.kind: 'local' would run pushed code as this controller's own user (uid 1000: the controller is not "
        "root, so it cannot start trials as another user), which can read the module's arguments and the storage URL; "
        "expected runner.kind: docker (autotune_pipeline_runner), or a root controller whose runner.local.user can run "
        "runner.local.python"]
    assert _validate(tmp_path, {"kind": "local"})["runner"]["kind"] == "local", "the operator's own model still runs"
    assert runner_facts({"kind": "local", "local": {}}, "keras")["shares_controller_user"].startswith("the controller")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
def test_a_root_controller_runs_trials_as_an_account_that_can_run_the_python(tmp_path, monkeypatch):
    assert _pushed(tmp_path, {"python": "/usr/bin/python3"})["runner"]["local"]["user"] == "nobody"
    assert runner_facts({"kind": "local", "local": {"python": "/usr/bin/python3"}}, "keras")["user"] == "nobody"
    closed = tmp_path / "closed"  # a Python only root can start, as a pyenv under /root is
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    (closed / "python3").symlink_to("/usr/bin/python3")
    with pytest.raises(ConfigError, match=r"uid 0: nobody cannot run .*closed/python3 \(PermissionError"):
        _pushed(tmp_path, {"python": str(closed / "python3")})
    facts = runner_facts({"kind": "local", "local": {"python": str(closed / "python3")}}, "keras")
    assert facts["uid"] == 0 and "nobody cannot run" in facts["shares_controller_user"]
    with pytest.raises(AutotuneError, match="runner.local.user: 'root' is root; expected an unprivileged account"):
        runner_facts({"kind": "local", "local": {"user": "root"}}, "keras")
    with pytest.raises(AutotuneError, match="runner.local.user: 'no-such-user' is not an account on this host"):
        _pushed(tmp_path, {"user": "no-such-user"})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
def test_a_trial_child_gets_the_account_a_private_home_and_paths_from_its_own_folder(tmp_path):
    runner = LocalRunner(python="/usr/bin/python3")
    run_dir = tmp_path / "run"
    trial, pack = run_dir / "trials" / "0003", run_dir / "data" / "abc"
    argv = runner._argv("autotune_trainer", [str(trial)], {"--data": str(pack)}, str(trial))
    assert argv[2:] == ["autotune_trainer", ".", "--data", "../../data/abc"], "no walk through the run folder's parents"
    options, home = runner._child(str(trial), None)
    assert options["user"] != 0 and options["extra_groups"] == [] and options["umask"] == 0o077
    assert options["env"]["HOME"] == options["env"]["TMPDIR"] == home and options["env"]["PYTHONNOUSERSITE"] == "1"
    assert os.stat(home).st_uid == options["user"] and oct(os.stat(home).st_mode & 0o777) == "0o700"
    runner.close()
    assert not os.path.exists(home), "the runner removes the homes it made"


def test_what_a_trainer_leaves_in_its_process_group_ends_with_its_cleanup(tmp_path):
    """A trial's background child would outlive it, under the account later trials and verifiers run as."""
    import subprocess
    import time

    from ansible.module_utils.autotune.runners.local import LocalProcess
    marker = tmp_path / "child.pid"
    popen = subprocess.Popen(["sh", "-c", f"sleep 120 & echo $! > {marker}; exit 0"], start_new_session=True)
    process = LocalProcess(popen, str(tmp_path))
    while process.exit_code() is None:
        time.sleep(0.05)
    child = int(marker.read_text())
    assert os.path.exists(f"/proc/{child}"), "the child outlived the trainer"
    process.cleanup()
    for _ in range(100):
        try:
            with open(f"/proc/{child}/stat", encoding="ascii") as handle:
                if handle.read().split(") ")[1].startswith("Z"):
                    break  # killed; its parent (init here) reaps it
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the trainer's child still runs after cleanup")


def test_the_warm_verifier_is_handed_the_cold_verifiers_arguments_and_a_dead_one_is_replaced(tmp_path):
    from ansible.module_utils.autotune.runners.local import WarmVerifier, _before_exec
    runner = LocalRunner(trainer_path=str(REPO / "trainer"), warm=True)
    told = tmp_path / "told.json"
    # What the verifier is told; it waits a second after so that its scheduling policy can be read.
    echo = "import sys, time; open(sys.argv[1], 'w').write(sys.stdin.readline()); time.sleep(1)"
    listening = subprocess.Popen([sys.executable, "-c", echo, str(told)], stdin=subprocess.PIPE,
                                 preexec_fn=_before_exec(None, idle=True))
    assert os.sched_getscheduler(listening.pid) == os.SCHED_IDLE, "waiting, it takes only CPU time no one wants"
    runner.verifier = WarmVerifier(listening, None, str(tmp_path))
    process = runner.verify("/run/trials/0003", "/run/pack", str(tmp_path / "out"), {}, test_path="/run/test")
    assert os.sched_getscheduler(listening.pid) == os.SCHED_OTHER, "handed a model, it scores at the normal policy"
    assert process.popen is listening and runner.verifier is None and listening.wait(timeout=30) == 0
    assert json.loads(told.read_text()) == {"argv": ["/run/trials/0003", "--data", "/run/pack", "--test", "/run/test",
                                                     "--out", str(tmp_path / "out")], "out": str(tmp_path / "out")}
    dead = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
    dead.wait(timeout=30)
    runner.verifier = WarmVerifier(dead, None, str(tmp_path))
    process = runner.verify(str(tmp_path / "no-trial"), str(tmp_path / "pack"), str(tmp_path / "cold"), {})
    assert process.popen is not dead and process.popen.wait(timeout=60) == EXIT_BAD_INPUT
    assert "is not a regular file; expected the trained model" in (tmp_path / "cold" / "trainer.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")
def test_a_fresh_trial_folder_is_given_whole_and_a_given_one_is_not_walked_again(tmp_path):
    from ansible.module_utils.autotune.runners.local import TrialAccount  # pylint: disable=import-outside-toplevel
    account = TrialAccount("nobody")
    fresh = tmp_path / "0001"
    (fresh / "checkpoint").mkdir(parents=True)  # what the controller laid in it: a carried checkpoint
    (fresh / "checkpoint" / "latest.weights.h5").write_bytes(b"w")
    os.symlink("/etc/passwd", fresh / "link")
    account.give(str(fresh))
    owners = {p.name: os.lstat(p).st_uid for p in [fresh, *fresh.rglob("*")]}
    assert set(owners.values()) == {account.uid}, owners
    assert os.stat("/etc/passwd").st_uid == 0, "a link is not followed"
    (tmp_path / "mine").write_text("x")
    os.symlink(tmp_path / "mine", fresh / "planted")  # left by the trial that owns the folder now
    account.give(str(fresh))
    assert os.stat(tmp_path / "mine").st_uid == 0 and os.lstat(fresh / "planted").st_uid == 0, \
        "a folder the account owns is not walked again"
