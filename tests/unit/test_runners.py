"""The runner registry and each runner's own configuration block."""
import pytest

from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune.errors import AutotuneError, ConfigError
from ansible.module_utils.autotune.runners import RUNNERS, make_runner, runner_facts
from ansible.module_utils.autotune.runners.base import Runner, SparePool
from ansible.module_utils.autotune.runners.local import LocalRunner, trainer_environment


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
    assert runner.describe() == {"runner": "local", "python": "/usr/bin/python3", "warm": True, "spares": 1}


def test_the_trainer_never_sees_the_controllers_secrets(monkeypatch):
    monkeypatch.setenv("AUTOTUNE_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    monkeypatch.setenv("PATH", "/usr/bin")
    env = trainer_environment("/opt/trainer")
    assert "s3cret" not in env.values() and env["PATH"] == "/usr/bin"
    assert env["PYTHONPATH"].startswith("/opt/trainer")


def test_each_slot_has_its_own_gpu_and_cpus_without_a_gpu_here():
    from ansible.module_utils.autotune.runners.docker import DockerRunner, gpu_for_slot
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
