"""Trial 0 starts warm: each slot's trainer is started while the data set is still being packed (real
processes and containers, real training). The spare waits for the pack to appear, then takes trial 0."""
import json
import time

import pytest

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune.kinds import template as template_kind
from ansible.module_utils.autotune.runners.docker import DockerRunner
from ansible.module_utils.autotune.runners.local import LocalRunner
from conftest import REPO, TEMPLATES, TRAINER_IMAGE

DATASET = {"image_size": [28, 28], "color": "grayscale", "validation_split": 0.2, "test_split": 0.15, "seed": 1}


def _trial(folder):
    folder.mkdir(parents=True)
    meta = template_kind.template_meta(str(TEMPLATES / "cnn.py.j2"))
    params = {n: s["default"] for n, s in meta["hyperparameters"].items()}
    (folder / "model.py").write_text(template_kind.render(str(TEMPLATES / "cnn.py.j2"), params, 0))
    (folder / "trial.json").write_text(json.dumps({"number": 0, "params": params, "model_api": "template",
                                                   "metric": "val_accuracy", "goal": None, "seed": 1}))
    return folder


def _runner(kind):
    if kind == "local":
        return LocalRunner(trainer_path=str(REPO / "trainer"), spares=2)
    return DockerRunner(TRAINER_IMAGE, cpus=1, memory="2g", spares=2)


@pytest.mark.parametrize("kind", ["local", "docker"])
def test_the_first_trial_is_handed_to_a_trainer_started_before_the_data_was_packed(kind, tmp_path, sample_data,
                                                                                   request):
    if kind == "docker":
        request.getfixturevalue("docker_engine")
    config = dict(DATASET, path=str(sample_data))
    cache = tmp_path / "data"
    pack, _ = tune_dataset.packed_path(config, str(cache), tune_dataset.scan(config["path"]))
    runner = _runner(kind)
    labels = {"study": f"warm-{kind}", "run_dir": str(tmp_path)}
    try:
        runner.warm_up(pack, labels)
        assert len(runner.spares) == 1, "one trainer per slot is started before anything is packed"
        time.sleep(2)  # the spare is importing Keras, then waiting: the pack does not exist yet
        assert tune_dataset.prepare(config, str(cache))["path"] == pack
        trial_dir = _trial(tmp_path / "trials" / "0000")
        process = runner.start(str(trial_dir), pack, dict(labels, trial="0000", slot="0"))
        assert runner.spares.waiting(0) == 2, "the slot is topped up to runner.<kind>.spares: the next two trials' trainers start now"
        deadline = time.time() + 240
        while process.exit_code() is None and time.time() < deadline:
            time.sleep(0.5)
        outcome = process.outcome()
        process.cleanup()  # the docker runner keeps the container's output in the trial's log here
        log = (trial_dir / "trainer.log").read_text()
        assert outcome == ("finished", None), log[-2000:]
        assert "trial handed to warm trainer" in log, "trial 0 went to the spare, not to a cold start"
        assert (trial_dir / "model.keras").is_file()
    finally:
        runner.close()

