"""The trainer checkpoints every epoch: a killed trial resumes where it stopped; a corrupt checkpoint restarts it."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune.kinds import template as template_kind
from conftest import REPO, TEMPLATES

EPOCHS = 8


@pytest.fixture(scope="module")
def packed(tmp_path_factory, sample_data):
    cache = tmp_path_factory.mktemp("pack")
    return tune_dataset.prepare({"path": str(sample_data), "image_size": [28, 28], "color": "grayscale",
                                 "validation_split": 0.2, "test_split": 0.15, "seed": 1}, str(cache))["path"]


def _trial_dir(tmp_path):
    meta = template_kind.template_meta(str(TEMPLATES / "cnn.py.j2"))
    params = dict({n: s["default"] for n, s in meta["hyperparameters"].items()}, epochs=EPOCHS, batch_size=32, filters=8)
    (tmp_path / "model.py").write_text(template_kind.render(str(TEMPLATES / "cnn.py.j2"), params, 1))
    (tmp_path / "trial.json").write_text(json.dumps({"number": 1, "params": params, "model_api": "template",
                                                     "metric": "val_accuracy", "goal": None, "seed": 1}))
    return tmp_path


def _start(trial_dir, packed):
    env = dict(os.environ, PYTHONPATH=str(REPO / "trainer"), TF_CPP_MIN_LOG_LEVEL="2")
    log = open(trial_dir / "trainer.log", "ab")  # noqa: SIM115 - closed by the caller through the process
    return subprocess.Popen([sys.executable, "-m", "autotune_trainer", str(trial_dir), "--data", packed],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _epochs(trial_dir):
    path = trial_dir / "metrics.jsonl"
    return [json.loads(l)["epoch"] for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def _kill_after_first_epoch(trial_dir, packed):
    process = _start(trial_dir, packed)
    deadline = time.time() + 120
    while not _epochs(trial_dir) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = _epochs(trial_dir)
    assert 1 <= len(done) < EPOCHS, "killed mid-training"
    return done


def test_killed_trial_resumes_from_its_last_epoch(tmp_path, packed):
    trial_dir = _trial_dir(tmp_path)
    done = _kill_after_first_epoch(trial_dir, packed)
    assert not (trial_dir / "result.json").exists()
    assert _start(trial_dir, packed).wait(timeout=300) == 0
    result = json.loads((trial_dir / "result.json").read_text())
    assert result["resumed_from_epoch"] == len(done)
    assert _epochs(trial_dir) == list(range(EPOCHS)), "no epoch trained twice, none skipped"
    assert result["epochs_run"] == EPOCHS and result["value"] > 0.5
    assert not (trial_dir / "checkpoint").exists() and (trial_dir / "model.keras").exists()


def test_corrupt_checkpoint_restarts_the_trial_with_a_warning(tmp_path, packed):
    trial_dir = _trial_dir(tmp_path)
    _kill_after_first_epoch(trial_dir, packed)
    for file in (trial_dir / "checkpoint").rglob("*"):
        if file.is_file():
            file.write_bytes(b"garbage, not a checkpoint")
    assert _start(trial_dir, packed).wait(timeout=300) == 0
    result = json.loads((trial_dir / "result.json").read_text())
    assert result["resumed_from_epoch"] is None and "checkpoint_discarded" in result
    assert _epochs(trial_dir) == list(range(EPOCHS))
    assert "WARNING: checkpoint unreadable" in (trial_dir / "trainer.log").read_text()
