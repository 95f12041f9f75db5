#!/usr/bin/env python3
"""Benchmark: parallel trials in containers with TensorFlow's thread pools sized to each slot's CPU share (the docker
runner's default, runners/docker.thread_environment) against TensorFlow's own sizing (a pool per host core).

For each slot count, `slots` trials of the same model train at once in the trainer image, each container limited to
its share of the host (nano_cpus = cores / slots), with the pools sized and unsized in turn (alternating, so machine
load hits both alike). Printed: seconds until the last of them ended (the slots' wall), and the mean fit seconds.
Run it on an otherwise idle host: on 2 cores, slots 1 and 2; on a larger host or a GPU host, 1 2 4.

    .venv/bin/python bench/threads.py [--slots 1 2] [--repeats 3] [--epochs 3]
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import ansible.module_utils

REPO = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(REPO / "module_utils"))

from ansible.module_utils.autotune import dataset as tune_dataset  # noqa: E402
from ansible.module_utils.autotune.kinds import template  # noqa: E402
from ansible.module_utils.autotune.runners import docker as docker_runner  # noqa: E402

IMAGE = "autotune-trainer-keras:cpu-latest"
PARAMS = {"blocks": 2, "filters": 16, "dense_units": 64, "kernel_size": 3}  # a mid-sized trial of the sample search


def _trial_dir(work, name, params):
    trial_dir = Path(work) / "trials" / name
    trial_dir.mkdir(parents=True)
    (trial_dir / "model.py").write_text(template.render(str(REPO / "model_templates" / "cnn.py.j2"), params, 0))
    (trial_dir / "trial.json").write_text(json.dumps({"number": 0, "params": params, "model_api": "template",
                                                      "metric": "val_accuracy", "goal": None, "seed": 1}))
    return trial_dir


def one_round(work, packed, params, slots, sized, tag):
    """`slots` trials at once; returns (seconds until the last ended, [fit seconds of each])."""
    environment = docker_runner.thread_environment if sized else (lambda cpus: {})
    with mock.patch.object(docker_runner, "thread_environment", environment):
        runner = docker_runner.DockerRunner(IMAGE, slots=slots, warm=False)
        started = time.monotonic()
        dirs = [_trial_dir(work, f"{tag}-{slot}", params) for slot in range(slots)]
        processes = [runner.start(str(d), packed, {"study": "threads", "trial": d.name, "run_dir": work,
                                                   "slot": str(slot)}) for slot, d in enumerate(dirs)]
        while any(p.exit_code() is None for p in processes):
            time.sleep(0.05)
        wall = time.monotonic() - started
        for process in processes:
            process.cleanup()
        runner.close()
    return wall, [json.loads((d / "result.json").read_text())["fit_seconds"] for d in dirs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    meta = template.template_meta(str(REPO / "model_templates" / "cnn.py.j2"))
    params = dict({n: s["default"] for n, s in meta["hyperparameters"].items()}, **PARAMS, epochs=args.epochs)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="autotune-threads-") as work:
        Path(work).chmod(0o755)
        packed = tune_dataset.prepare({"path": str(REPO / "data" / "catsdogs"), "image_size": [28, 28],
                                       "color": "grayscale", "validation_split": 0.2, "test_split": 0.15,
                                       "seed": 1}, work)["path"]
        for slots in args.slots:
            for repeat in range(args.repeats):
                for sized in ((True, False) if repeat % 2 == 0 else (False, True)):
                    tag = f"{slots}-{'sized' if sized else 'tf'}-{repeat}"
                    wall, fits = one_round(work, packed, params, slots, sized, tag)
                    rows.setdefault((slots, sized), []).append((wall, fits))
                    print(tag, f"wall {wall:.2f} s, fit {[round(f, 2) for f in fits]}", flush=True)
    print(f"\n{args.repeats} repeats each, {args.epochs} epochs, params {PARAMS}, image {IMAGE}")
    print("| slots | thread pools | wall, all slots (s, median) | fit per trial (s, mean) |")
    print("| --- | --- | --- | --- |")
    for (slots, sized), found in sorted(rows.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        print(f"| {slots} | {'sized to the share' if sized else 'TensorFlow default'} | "
              f"{statistics.median(w for w, _ in found):.2f} | "
              f"{statistics.mean(f for _, fits in found for f in fits):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
