#!/usr/bin/env python3
"""Benchmark: per-trial overhead of the docker runner against the local runner, same trials, one run.

For each runner the same baseline trial runs N times (alternating runners, so
machine load hits both alike). Start-up = from the runner's launch to the first
epoch's start (process or container start + imports + data + model build);
total = launch to exit, container removal included.

    .venv/bin/python bench/runner_overhead.py [--trials 5] [--image autotune-trainer-keras:cpu-latest]
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
from ansible.module_utils.autotune.kinds import template as template_kind  # noqa: E402
from ansible.module_utils.autotune.runners.local import LocalRunner  # noqa: E402
from ansible.module_utils.autotune.runners.docker import DockerRunner  # noqa: E402


def one_trial(runner, work, number, packed, params):
    trial_dir = Path(work) / f"{runner.name}-{number}"
    trial_dir.mkdir()
    (trial_dir / "model.py").write_text(template_kind.render(str(REPO / "model_templates" / "cnn.py.j2"), params, number))
    (trial_dir / "trial.json").write_text(json.dumps({"number": number, "params": params, "model_api": "template",
                                                      "metric": "val_accuracy", "goal": None, "seed": 1}))
    started = time.time()
    process = runner.start(str(trial_dir), packed, {"study": "overhead", "trial": f"{runner.name}-{number}", "run_dir": work})
    while process.exit_code() is None:
        time.sleep(0.05)
    process.cleanup()
    total = time.time() - started
    result = json.loads((trial_dir / "result.json").read_text())
    return {"startup": result["startup_seconds"], "fit": result["fit_seconds"], "total": total}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--image", default="autotune-trainer-keras:cpu-latest")
    args = parser.parse_args()
    meta = template_kind.template_meta(str(REPO / "model_templates" / "cnn.py.j2"))
    params = {n: s["default"] for n, s in meta["hyperparameters"].items()}
    runners = [LocalRunner(trainer_path=str(REPO / "trainer")), DockerRunner(args.image)]
    figures = {r.name: [] for r in runners}
    with tempfile.TemporaryDirectory(prefix="autotune-overhead-") as work:
        packed = tune_dataset.prepare({"path": str(REPO / "data" / "catsdogs"), "image_size": [28, 28],
                                       "color": "grayscale", "validation_split": 0.2, "test_split": 0.15, "seed": 1}, work)["path"]
        try:
            for number in range(args.trials):
                for runner in runners:
                    figures[runner.name].append(one_trial(runner, work, number, packed, params))
                    print(runner.name, figures[runner.name][-1], flush=True)
        finally:
            for runner in runners:
                runner.close()  # their warm spares
    mean = {name: {k: statistics.mean(r[k] for r in rows) for k in ("startup", "fit", "total")}
            for name, rows in figures.items()}
    print("\n| runner | start-up to first epoch (s) | fit (s) | total per trial (s) |")
    print("| --- | --- | --- | --- |")
    for name, m in mean.items():
        print(f"| {name} | {m['startup']:.2f} | {m['fit']:.2f} | {m['total']:.2f} |")
    extra = mean["docker"]["total"] - mean["local"]["total"]
    print(f"\ndocker/local: start-up x{mean['docker']['startup'] / mean['local']['startup']:.2f}, "
          f"total x{mean['docker']['total'] / mean['local']['total']:.2f}; docker adds {extra:+.2f} s per trial "
          f"(goal <= 1.5 s) over {args.trials} trials each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
