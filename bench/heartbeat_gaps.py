#!/usr/bin/env python3
"""Benchmark: how late do a worker's heartbeats come when its host is loaded? (docs/fleet.md, take-over)

A fleet worker beats for its running trials from a thread (study.Heartbeat) while its loop polls every 0.2 s and
calls fail_stale_trials every interval. A heartbeat later than ``grace_period`` makes another worker fail a trial
that is still training (a false alarm); a long ``grace_period`` makes a dead host's trial wait. This runs the real
Heartbeat against the real PostgreSQL for one RUNNING trial, first on an idle host, then while the host trains a
Keras model (a child process, as a trial is) beside CPU hogs (one busy process per core), and records the gap
between successive heartbeat writes as they completed (each write stores the database's now(), which the stale
check compares with its own now()).

    .venv/bin/python bench/heartbeat_gaps.py --storage-file ~/.autotune-ci/pg.url [--seconds 60] [--interval 1]

Prints one JSON object: per phase the number of beats, the median, 99th percentile and largest gap (s), and
whether the trial was (wrongly) failed as stale with the grace period tried.
"""
import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import ansible.module_utils
import optuna

REPO = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(REPO / "module_utils"))

from ansible.module_utils.autotune.storage import make_storage  # noqa: E402
from ansible.module_utils.autotune.study import Heartbeat  # noqa: E402

# A trial's load: a small CNN fitted over and over on random images, in its own process (TensorFlow's threads).
TRAIN = """
import numpy as np, keras
x = np.random.rand(2048, 28, 28, 1).astype("float32"); y = np.random.randint(0, 2, 2048)
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                          keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
model.compile("adam", "binary_crossentropy")
while True:
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
"""


def _hog():
    while True:
        pass


def _gaps(storage, trial_id, seconds, interval):
    """Run the worker's heartbeat (and its loop's cadence) for ``seconds``; the gaps between the stored beats."""
    beats = []
    record = storage.record_heartbeat

    def recorded(trial):
        record(trial)
        beats.append(time.monotonic())
    storage.record_heartbeat = recorded
    heartbeat = Heartbeat(storage)
    study = optuna.load_study(study_name=storage.benchmark_study, storage=storage)
    running = [types.SimpleNamespace(trial=types.SimpleNamespace(_trial_id=trial_id))]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        heartbeat.beat(study, running)  # as StudyLoop does each poll: beats, and fail_stale_trials every interval
        time.sleep(0.2)
    heartbeat.close()
    storage.record_heartbeat = record
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    return {"beats": len(beats), "median_gap": round(statistics.median(gaps), 3),
            "p99_gap": round(sorted(gaps)[int(0.99 * (len(gaps) - 1))], 3), "max_gap": round(max(gaps), 3),
            "interval": interval}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage-file", default=os.environ.get("AUTOTUNE_TEST_PG_URL_FILE", ""),
                        help="a 0600 file holding the postgresql:// URL (never on the command line)")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--interval", type=int, default=1)
    parser.add_argument("--grace", type=int, default=8, help="the grace period whose false alarms are counted")
    parser.add_argument("--hogs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    url = Path(args.storage_file).expanduser().read_text().strip()
    storage = make_storage(url, {"heartbeat_interval": args.interval, "grace_period": args.grace})
    name = f"heartbeat-bench-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=storage)
    storage.benchmark_study = name
    trial = study.ask()
    result = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0], "grace": args.grace}
    try:
        result["idle"] = _gaps(storage, trial._trial_id, args.seconds // 3, args.interval)  # pylint: disable=protected-access
        trainer = subprocess.Popen([sys.executable, "-c", TRAIN], stdout=subprocess.DEVNULL,  # noqa: S603
                                   stderr=subprocess.DEVNULL)
        hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(args.hogs)]
        for hog in hogs:
            hog.start()
        time.sleep(5)  # TensorFlow imported, the first epoch under way
        result["loaded"] = _gaps(storage, trial._trial_id, args.seconds, args.interval)  # pylint: disable=protected-access
        result["loaded"]["load_during"] = os.getloadavg()[0]
    finally:
        for hog in locals().get("hogs", []):
            hog.terminate()
        if "trainer" in locals():
            trainer.kill()
            trainer.wait()
    result["false_alarm"] = optuna.load_study(study_name=name, storage=url).trials[0].state.name != "RUNNING"
    optuna.delete_study(study_name=name, storage=url)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
