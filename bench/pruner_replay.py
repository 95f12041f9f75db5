#!/usr/bin/env python3
"""Replay the trials of recorded runs against other pruner rules: how many epochs each rule would have trained, and
which good trials it would have stopped. Seconds, not minutes, to compare rules before a 10-seed live run.

    .venv/bin/python bench/pruner_replay.py bench/results/NAME-summaries [--goal 0.85] [--rules hyperband ...]

Reads the summary.json files ``bench/peers.py`` keeps of our runs (``bench/results/NAME-summaries/``). Each run's
trials are fed, in their order, one epoch at a time, to a fresh in-memory Optuna study with the rule's pruner; a
trial ends where the rule prunes it, where it reached the goal confirmed on the held-out split (the run stops
there), or where its recorded curve ends. What it cannot show: a trial the live run pruned has no epochs past that
point, so a rule that would have let it go on is credited with too few epochs, and the sampler's later draws
would differ once a rule stops other trials. It ranks rules; the live run (bench/peers.py) measures them.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

import optuna

optuna.logging.set_verbosity(optuna.logging.ERROR)


class Either(optuna.pruners.BasePruner):
    """Prunes when any of its pruners would (as strategies.ChanceStop combines the chance floor)."""

    def __init__(self, *pruners):
        self.pruners = pruners

    def prune(self, study, trial):
        return any(pruner.prune(study, trial) for pruner in self.pruners)


def _rules(max_epochs, floor):
    chance = optuna.pruners.ThresholdPruner(lower=floor, n_warmup_steps=2)  # search.chance_epochs: 3

    def hyperband():
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)

    return {
        "hyperband": hyperband,
        "hyperband+chance": lambda: Either(hyperband(), chance),
        "asha+chance": lambda: Either(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
                                      chance),
        # Beside Hyperband's brackets, the study-wide median of the finished trials at the same epoch (from the 3rd).
        "hyperband+median+chance": lambda: Either(hyperband(), optuna.pruners.MedianPruner(
            n_startup_trials=2, n_warmup_steps=2), chance),
    }


def replay(summary, make_pruner, goal, metric):
    """(epochs trained, (trial, epoch) of the confirmed goal or None, good trials stopped) of one run."""
    study = optuna.create_study(study_name=summary.get("study", "replay"), direction="maximize", pruner=make_pruner())
    epochs, stopped = 0, []
    for record in summary["trials"]:
        if record["outcome"] == "duplicate":
            continue
        curve = [epoch.get(metric, 0.0) for epoch in record["epochs"]]
        confirmed = (record.get("goal_value") or 0.0) >= goal - 1e-9
        trial, ended, pruned = study.ask(), 0, False
        for step, value in enumerate(curve):
            trial.report(value, step)
            ended = step + 1
            if confirmed and value >= goal - 1e-9:
                epochs += ended
                return epochs, (record["number"], ended), stopped
            if trial.should_prune():
                pruned = True
                break
        epochs += ended
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            if max(curve) >= goal - 0.02:
                stopped.append((record["number"], ended, round(max(curve), 3)))
        elif curve:
            study.tell(trial, curve[ended - 1])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return epochs, None, stopped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("folder", type=Path, help="summary.json files of our runs (bench/results/NAME-summaries)")
    parser.add_argument("--goal", type=float, default=0.85)
    parser.add_argument("--metric", default="val_accuracy")
    parser.add_argument("--max-epochs", type=int, default=12, help="the space's epochs high (Hyperband's max)")
    parser.add_argument("--floor", type=float, default=0.1067, help="the chance floor (strategies.chance_floor)")
    parser.add_argument("--rules", nargs="+")
    args = parser.parse_args()
    summaries = [json.loads(path.read_text()) for path in sorted(args.folder.glob("*.json"))]
    if not summaries:
        sys.exit(f"{args.folder}: no summary.json files; expected those bench/peers.py keeps")
    rules = _rules(args.max_epochs, args.floor)
    print(f"{len(summaries)} runs, goal {args.goal}\n\n| rule | epochs (sum) | epochs (median) | goal reached | "
          "good trials stopped (run: trial, epoch, best) |\n| --- | --- | --- | --- | --- |")
    for name in args.rules or list(rules):
        rows = [replay(summary, rules[name], args.goal, args.metric) for summary in summaries]
        lost = "; ".join(f"{s.get('study', i)}: {row[2]}" for i, (s, row) in enumerate(zip(summaries, rows)) if row[2])
        print(f"| {name} | {sum(r[0] for r in rows)} | {statistics.median(r[0] for r in rows)} | "
              f"{sum(1 for r in rows if r[1])}/{len(rows)} | {lost or 'none'} |")


if __name__ == "__main__":
    main()
