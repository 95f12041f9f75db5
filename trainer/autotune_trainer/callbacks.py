"""Keras callbacks the trainer adds to every fit."""
import json
import os
import sys
import time

import keras

from autotune_trainer import checkpoint, trialdir
from autotune_trainer.diagnose import MissingMetric

try:  # tf.summary's writers and the HParams plugin need the tensorboard package, which an image built before it lacks
    from tensorboard.plugins.hparams import api as hparams_api
except ImportError:  # such a trial trains without event files (tensorboard_callbacks)
    hparams_api = None


class TrialCheckpoint(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose every save leaves a consistent (weights, epoch count) pair, and the previous one as
    .bkp, whenever the trainer is killed (checkpoint.py)."""

    def __init__(self, backup_dir):
        super().__init__(backup_dir, delete_checkpoint=False, double_checkpoint=False)

    def _save_model(self):
        checkpoint.save(self.backup_dir, lambda path: self.model.save_weights(path, overwrite=True),
                        json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))


class MetricsWriter(keras.callbacks.Callback):
    """Appends one JSON line per finished epoch; the controller tails the file to report and prune."""

    def __init__(self, path, launched):
        super().__init__()
        self.path = path
        self.launched = launched
        self.train_begin = None
        self._epoch_started = None

    def on_train_begin(self, logs=None):
        self.train_begin = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        record = {k: float(v) for k, v in (logs or {}).items()}
        record["epoch"] = epoch
        record["seconds"] = round(time.time() - self._epoch_started, 3)
        record["time"] = round(time.time(), 3)  # wall clock at the epoch's end (and its checkpoint)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class GoalStop(keras.callbacks.Callback):
    """Ends training at the first epoch whose metric reaches the goal (in ``direction``: a loss at or under it)."""

    def __init__(self, metric, goal, direction=trialdir.MAXIMIZE):
        super().__init__()
        self.metric, self.goal, self.direction = metric, goal, direction

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        # The controller decides with the same rule (trialdir.reaches), so both agree on the same epoch.
        if value is not None and trialdir.reaches(float(value), self.goal, self.direction):
            self.model.stop_training = True


class RequireMetric(keras.callbacks.Callback):
    """Fails the fit at its first epoch's end when the logs lack target.metric, naming the validation metrics they
    hold. Placed before the checkpoint and the writer: no epoch is recorded, so the trainer reports a model error
    (at trial 0 the study stops at once) instead of training every trial for a value it never gets."""

    def __init__(self, metric, where):
        super().__init__()
        self.metric, self.where = metric, where

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.metric not in logs:
            logged = ", ".join(sorted(k for k in logs if k.startswith("val_"))) or "none: fit() has no validation data"
            raise MissingMetric(f"target.metric {self.metric!r} is not logged by {self.where} (its validation metrics: "
                                f"{logged}); expected one of those, or {self.metric[len('val_'):]!r} in its "
                                "compile(metrics=[...])")


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback with its files flushed at every epoch's end: a trial the controller stops (pruned,
    timed out, over its folder's cap) keeps the epochs it trained (the writers would hold them up to two minutes)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        # Keras creates one writer per split, lazily, and has no public flush; a Keras without this attribute leaves the
        # flushing to the writers' own timer rather than failing the trial.
        for writer in getattr(self, "_writers", {}).values():
            writer.flush()


class TrialHParams(keras.callbacks.Callback):
    """The trial's hyperparameters through the HParams plugin's own Keras callback, flushed as the fit begins (a
    trial that crashes or is stopped still shows them) and closed when it ends (the trainer leaves by os._exit)."""

    def __init__(self, log_dir, params, trial_id):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel  # loaded with Keras already

        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.hparams = hparams_api.KerasCallback(self.writer, params, trial_id=trial_id)

    def on_train_begin(self, logs=None):
        self.hparams.on_train_begin(logs)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.hparams.on_train_end(logs)
        self.writer.close()


def hparam_values(params):
    """The HParams plugin takes bool, int, float and str values; anything else (None) is shown as its text."""
    return {str(name): value if isinstance(value, (bool, int, float, str)) else str(value)
            for name, value in sorted(params.items())}


def tensorboard_callbacks(trial):
    """Event files in the trial folder's tensorboard/: each epoch's scalars (train/, validation/) and the trial's
    parameters (HParams). Small on purpose: no graph, no histograms, no profile, no images. None without the
    tensorboard package (tf.summary.scalar then raises at the first epoch): the trial trains, with a warning."""
    if hparams_api is None:
        print("autotune_trainer: WARNING: no tensorboard package in this trainer, so no TensorBoard event files "
              "(rebuild the trainer image: docs/tensorboard.md)", file=sys.stderr, flush=True)
        return []
    log_dir = str(trial.dir / trialdir.TENSORBOARD)
    number = trial.spec.get("number")
    trial_id = f"{number:04d}" if isinstance(number, int) else None
    return [EpochTensorBoard(log_dir, histogram_freq=0, write_graph=False, write_images=False, update_freq="epoch",
                             profile_batch=0),
            TrialHParams(log_dir, hparam_values(trial.spec.get("params") or {}), trial_id)]


def goal_callbacks(trial, launched, where):
    """(writer, callbacks) every fit of a trial gets: the metric check, the checkpoint, the TensorBoard files, the
    per-epoch writer, the NaN stop and the goal stop. ``trial`` has dir, metric, direction, spec, metrics_path and
    checkpoint_dir."""
    writer = MetricsWriter(trial.metrics_path, launched)
    callbacks = [
        RequireMetric(trial.metric, where),  # before anything records the epoch
        # Before the writer, so a checkpoint exists for every epoch line the writer appends after it; a kill between
        # the two is mended on resume from the previous epoch's pair (checkpoint.py).
        TrialCheckpoint(str(trial.checkpoint_dir)),
        # Between the two: every epoch line of metrics.jsonl is in TensorBoard, and a resumed trial (after the
        # checkpoint's epoch) writes no epoch twice.
        *tensorboard_callbacks(trial),
        writer,
        keras.callbacks.TerminateOnNaN(),
    ]
    goal = trial.spec.get("goal")
    if goal is not None and trial.spec.get("stop_at_goal", True):
        callbacks.append(GoalStop(trial.metric, float(goal), trial.direction))
    return writer, callbacks
