"""Keras callbacks the trainer adds to every fit."""
import json
import os
import time

import keras

from autotune_trainer import trialdir


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
    """Ends training at the first epoch whose metric reaches the goal: no epoch is spent past it."""

    def __init__(self, metric, goal):
        super().__init__()
        self.metric = metric
        self.goal = goal

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        # The controller decides with the same rule (trialdir.reaches), so both agree on the same epoch.
        if value is not None and trialdir.reaches(float(value), self.goal):
            self.model.stop_training = True
