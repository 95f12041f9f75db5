#!/usr/bin/env python3
"""Benchmark: what TensorFlow's op determinism costs a trial, and whether repeats give the same values.

The same trial (the cnn template, seed 1) trains N times with ``deterministic`` on and N times with it off,
alternating, so machine load hits both alike (local runner, a cold process each). Seconds per epoch are the
trainer's own (metrics.jsonl); the first epoch (tracing the model) is shown apart from the others.

    .venv/bin/python bench/determinism.py [--repeats 3] [--epochs 5] [--params '{"blocks": 3, "filters": 32}']
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ansible.module_utils

REPO = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(REPO / "module_utils"))

from ansible.module_utils.autotune import dataset as tune_dataset  # noqa: E402
from ansible.module_utils.autotune.kinds import template  # noqa: E402
from ansible.module_utils.autotune.runners.local import LocalRunner  # noqa: E402

# A mid-sized trial of the sample search (NOTES.md §2: about 1 s an epoch on the build machine).
PARAMS = {"blocks": 2, "filters": 16, "dense_units": 64, "kernel_size": 3}


def one_trial(runner, work, name, packed, params, deterministic):
    trial_dir = Path(work) / name
    trial_dir.mkdir()
    (trial_dir / "model.py").write_text(template.render(str(REPO / "model_templates" / "cnn.py.j2"), params, 0))
    (trial_dir / "trial.json").write_text(json.dumps({"number": 0, "params": params, "model_api": "template",
                                                      "metric": "val_accuracy", "goal": None, "seed": 1,
                                                      "deterministic": deterministic}))
    process = runner.start(str(trial_dir), packed, {"study": "determinism", "trial": name, "run_dir": work})
    while process.exit_code() is None:
        time.sleep(0.05)
    process.cleanup()
    epochs = [json.loads(line) for line in (trial_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result = json.loads((trial_dir / "result.json").read_text())
    values = [{k: v for k, v in e.items() if k not in ("epoch", "seconds", "time")} for e in epochs]
    return {"first": epochs[0]["seconds"], "later": [e["seconds"] for e in epochs[1:]], "fit": result["fit_seconds"],
            "values": values}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--params", type=json.loads, default=PARAMS, help="the cnn template's hyperparameters, JSON")
    args = parser.parse_args()
    meta = template.template_meta(str(REPO / "model_templates" / "cnn.py.j2"))
    params = dict({n: s["default"] for n, s in meta["hyperparameters"].items()}, **args.params, epochs=args.epochs)
    runner = LocalRunner(trainer_path=str(REPO / "trainer"), warm=False)
    rows = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="autotune-determinism-") as work:
        packed = tune_dataset.prepare({"path": str(REPO / "data" / "catsdogs"), "image_size": [28, 28],
                                       "color": "grayscale", "validation_split": 0.2, "test_split": 0.15,
                                       "seed": 1}, work)["path"]
        for repeat in range(args.repeats):
            for deterministic in ((True, False) if repeat % 2 == 0 else (False, True)):
                name = f"{'on' if deterministic else 'off'}-{repeat}"
                rows[deterministic].append(one_trial(runner, work, name, packed, params, deterministic))
                row = rows[deterministic][-1]
                print(name, {k: row[k] for k in ("first", "later", "fit")},
                      f"val_accuracy {[v['val_accuracy'] for v in row['values']]}", flush=True)
        runner.close()
    print(f"\n{args.repeats} repeats each, {args.epochs} epochs, params {args.params}")
    print("| op determinism | first epoch (s) | later epochs (s, mean ± sd) | fit (s) | repeats give equal values |")
    print("| --- | --- | --- | --- | --- |")
    for deterministic, found in rows.items():
        later = [s for row in found for s in row["later"]]
        same = all(row["values"] == found[0]["values"] for row in found)
        print(f"| {'on' if deterministic else 'off'} | {statistics.mean(r['first'] for r in found):.3f} | "
              f"{statistics.mean(later):.3f} ± {statistics.stdev(later) if len(later) > 1 else 0:.3f} | "
              f"{statistics.mean(r['fit'] for r in found):.2f} | {'yes' if same else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
