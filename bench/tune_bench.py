#!/usr/bin/env python3
"""Benchmark: time and trials to reach 0.80 and 0.95 on the sample data, per strategy,
and the per-trial fixed cost (process start + imports + data + build) against time in fit.

    .venv/bin/python bench/tune_bench.py [--strategies tpe random escalate] [--goal 0.95]
        [--max-trials 30] [--max-seconds 900] [--runner local|docker]

Prints a Markdown table and writes bench/results/tune_bench.json. Runs one
training at a time: start it on an otherwise idle machine.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import ansible.module_utils

REPO = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(REPO / "module_utils"))

import yaml  # noqa: E402

from ansible.module_utils.autotune.trialdir import reaches  # noqa: E402
from ansible.module_utils.autotune.tune import prepare, run  # noqa: E402


def first_reaching(trials, threshold):
    """(trial count, seconds of trial wall time) until a trial first reached the threshold."""
    spent = 0.0
    for index, trial in enumerate(trials, start=1):
        spent += trial["seconds"] or 0.0
        if reaches(trial["value"], threshold):
            return index, round(spent, 1)
    return None, None


def bench_strategy(strategy, goal, max_trials, max_seconds, runner, work):
    config = yaml.safe_load((REPO / "examples" / "catsdogs" / "autotune.yml").read_text())
    config["dataset"]["path"] = str(REPO / "data" / "catsdogs")
    config["search"] = {"strategy": strategy, "seed": 1, "pruner": "median", "startup_trials": 4}  # template's space
    config["target"] = {"metric": "val_accuracy", "goal": goal}
    config["budget"] = {"max_trials": max_trials, "max_seconds": max_seconds, "trial_timeout": 300}
    config["runner"] = {"kind": runner}
    config["study"] = f"bench-{strategy}"
    path = Path(work) / f"{strategy}.yml"
    path.write_text(yaml.safe_dump(config))
    loaded, plan, run_dir, storage = prepare(str(path), str(REPO / "model_templates"), runs_root=str(Path(work) / "runs"))
    started = time.time()
    summary = run(loaded, plan, run_dir, storage, trainer_path=str(REPO / "trainer"))
    wall = time.time() - started
    trials = summary["trials"]
    trained = [t for t in trials if t["outcome"] != "duplicate"]
    startup = sum(t["startup_seconds"] or 0 for t in trained)
    fit = sum(t["fit_seconds"] or 0 for t in trained)
    n80, s80 = first_reaching(trials, 0.80)
    n95, s95 = first_reaching(trials, goal)
    return {
        "strategy": strategy, "goal": goal, "runner": runner, "reached": summary["reached"],
        "best": summary["best_value"], "n_trials": summary["n_trials"], "wall_seconds": round(wall, 1),
        "trials_to_0.80": n80, "seconds_to_0.80": s80, f"trials_to_{goal}": n95, f"seconds_to_{goal}": s95,
        "pruned": summary["n_pruned"], "failed": summary["n_failed"],
        "mean_startup_seconds": summary["mean_startup_seconds"], "mean_fit_seconds": summary["mean_fit_seconds"],
        "startup_share": round(startup / (startup + fit), 3) if startup + fit else None,
        "stop_reason": summary["stop_reason"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["tpe", "random", "escalate"])
    parser.add_argument("--goal", type=float, default=0.95)
    parser.add_argument("--max-trials", type=int, default=30)
    parser.add_argument("--max-seconds", type=int, default=900)
    parser.add_argument("--runner", default="local", choices=["local", "docker"])
    args = parser.parse_args()
    if not (REPO / "data" / "catsdogs").is_dir():
        sys.exit("bench: data/catsdogs missing; run `make sample-data` first")
    rows = []
    with tempfile.TemporaryDirectory(prefix="autotune-bench-") as work:
        for strategy in args.strategies:
            rows.append(bench_strategy(strategy, args.goal, args.max_trials, args.max_seconds, args.runner, work))
            print(json.dumps(rows[-1]), flush=True)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune_bench.json").write_text(json.dumps(rows, indent=2))
    g = args.goal
    print(f"\n| strategy | trials to 0.80 | s to 0.80 | trials to {g} | s to {g} | best | trials | pruned | "
          "mean start-up s | mean fit s | start-up share |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['strategy']} | {r['trials_to_0.80']} | {r['seconds_to_0.80']} | {r[f'trials_to_{g}']} | "
              f"{r[f'seconds_to_{g}']} | {r['best']:.4f} | {r['n_trials']} | {r['pruned']} | "
              f"{r['mean_startup_seconds']} | {r['mean_fit_seconds']} | {r['startup_share']} |")


if __name__ == "__main__":
    main()
