"""A trainer killed at any moment leaves a checkpoint that matches its metrics lines (autotune_trainer.checkpoint).

The kill windows are laid out by hand (a real kill lands in them only by chance, tests/integration/test_trainer_resume
kills real trainers); the checkpoints are written by a real Keras fit."""
import json
import os

import keras
import numpy as np

from autotune_trainer import checkpoint
from autotune_trainer.callbacks import TrialCheckpoint


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _fit(folder, epochs):
    data = np.random.default_rng(0).random((16, 4)), np.arange(16) % 2
    return _model().fit(*data, epochs=epochs, verbose=0, callbacks=[TrialCheckpoint(str(folder))])


def _metrics(path, epochs, tail=""):
    path.write_text("".join(json.dumps({"epoch": e, "val_accuracy": 0.5}, sort_keys=True) + "\n"
                            for e in range(epochs)) + tail)


def _count(folder, suffix=""):
    return json.loads((folder / f"{checkpoint.STATE}{suffix}").read_text())["epoch"]


def test_each_save_keeps_the_previous_epochs_pair(tmp_path):
    _fit(tmp_path / "checkpoint", 3)
    assert _count(tmp_path / "checkpoint") == 3 and _count(tmp_path / "checkpoint", ".bkp") == 2
    assert not (tmp_path / "checkpoint" / checkpoint.NEXT_WEIGHTS).exists()


def test_a_checkpoint_one_epoch_ahead_of_the_metrics_resumes_from_the_previous_epoch(tmp_path):
    folder, metrics = tmp_path / "checkpoint", tmp_path / "metrics.jsonl"
    _fit(folder, 3)
    _metrics(metrics, 2)  # killed after epoch 3's checkpoint, before its metrics line
    before = (folder / f"{checkpoint.WEIGHTS}.bkp").read_bytes()
    kept, why = checkpoint.resume_point(folder, metrics)
    assert [r["epoch"] for r in kept] == [0, 1] and why is None
    assert _count(folder) == 2 and (folder / checkpoint.WEIGHTS).read_bytes() == before
    assert len(_fit(folder, 3).history["loss"]) == 1, "Keras resumes at the third epoch"


def test_weights_without_their_count_are_not_used(tmp_path):
    folder, metrics = tmp_path / "checkpoint", tmp_path / "metrics.jsonl"
    _fit(folder, 3)
    (folder / checkpoint.STATE).unlink()  # killed between the new weights and their count
    _metrics(metrics, 2)
    kept, why = checkpoint.resume_point(folder, metrics)
    assert len(kept) == 2 and why is None and _count(folder) == 2


def test_a_half_written_metrics_line_is_cut_off(tmp_path):
    folder, metrics = tmp_path / "checkpoint", tmp_path / "metrics.jsonl"
    _fit(folder, 2)
    _metrics(metrics, 2, tail='{"epoch": 2, "val_acc')
    kept, _ = checkpoint.resume_point(folder, metrics)
    assert len(kept) == 2 and metrics.read_text().endswith("}\n") and len(metrics.read_text().splitlines()) == 2


def test_metrics_ahead_of_the_checkpoint_are_cut_to_it(tmp_path):
    folder, metrics = tmp_path / "checkpoint", tmp_path / "metrics.jsonl"
    _fit(folder, 2)
    _metrics(metrics, 3)
    kept, _ = checkpoint.resume_point(folder, metrics)
    assert len(kept) == 2 and len(metrics.read_text().splitlines()) == 2


def test_a_checkpoint_that_matches_nothing_is_named_and_none_is_silent(tmp_path):
    folder, metrics = tmp_path / "checkpoint", tmp_path / "metrics.jsonl"
    assert checkpoint.resume_point(folder, metrics) == ([], None)
    _fit(folder, 3)
    _metrics(metrics, 1)
    kept, why = checkpoint.resume_point(folder, metrics)
    assert kept == [] and why == "its epoch counts (3, 2) do not match the 1 epochs of metrics.jsonl"
    for file in folder.iterdir():
        file.write_bytes(b"garbage")
    assert checkpoint.resume_point(folder, metrics) == ([], "no weights with a readable epoch count")


def test_the_previous_weights_become_the_backup_by_a_link_not_a_copy(tmp_path):
    folder = tmp_path / "checkpoint"
    checkpoint.save(str(folder), lambda path: open(path, "wb").write(b"epoch 1"), '{"epoch": 1}')
    first = (folder / checkpoint.WEIGHTS).stat().st_ino
    checkpoint.save(str(folder), lambda path: open(path, "wb").write(b"epoch 2"), '{"epoch": 2}')
    backup = folder / f"{checkpoint.WEIGHTS}.bkp"
    assert backup.stat().st_ino == first and backup.read_bytes() == b"epoch 1"
    assert (folder / checkpoint.WEIGHTS).read_bytes() == b"epoch 2"
    assert _count(folder) == 2 and _count(folder, ".bkp") == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [checkpoint.WEIGHTS, checkpoint.STATE, f"{checkpoint.WEIGHTS}.bkp", f"{checkpoint.STATE}.bkp"])


def test_a_leftover_link_from_a_kill_is_never_written_through(tmp_path):
    folder = tmp_path / "checkpoint"
    checkpoint.save(str(folder), lambda path: open(path, "wb").write(b"epoch 1"), '{"epoch": 1}')
    os.link(folder / checkpoint.WEIGHTS, folder / checkpoint.NEXT_WEIGHTS)  # killed between a link and its rename
    checkpoint.save(str(folder), lambda path: open(path, "wb").write(b"epoch 2"), '{"epoch": 2}')
    assert (folder / f"{checkpoint.WEIGHTS}.bkp").read_bytes() == b"epoch 1" and _count(folder, ".bkp") == 1
    assert (folder / checkpoint.WEIGHTS).read_bytes() == b"epoch 2"
