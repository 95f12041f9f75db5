#!/usr/bin/env python3
"""Benchmark against the peers: time from the command's start to the first epoch at the goal.

    make bench-peers BENCH_ARGS="--seeds 5"     # builds .venv-bench (Keras Tuner & co.) beside .venv
    .venv/bin/python bench/peers.py --peer-python .venv-bench/bin/python [--seeds 5] [--goal 0.94] [--systems ...]

Systems, run interleaved (seed by seed) in one invocation, on the same data (``--workload``: the sample
cats vs dogs, 28x28 grey, or animals-rgb64, 10,000 RGB 64x64 images in 10 classes; bench/workloads.py), each run
packing it afresh from its image folder as a user's run reads it, the same search space (examples/catsdogs:
blocks 1-3, filters 4-32 log, kernel 3/5, dense 8-128 log, learning rate 3e-4..1e-2 log, epochs 1 to the workload's
max_epochs: 6 on the sample, 12 on animals-rgb64) and the same model code (the `cnn` template, rendered):

  kt-hyperband   Keras Tuner Hyperband (factor 3, max_epochs = the space's epochs high), every trial in one process,
                 its brackets repeated until the goal or the budget
  kt-bayes       Keras Tuner BayesianOptimization, every trial in one process
  optuna         plain Optuna in one process: TPE and the same pruner as ours (the floor: no isolation)
  ours-local     playbooks/tune.yml, local runner: a fresh process per trial (warm spares)
  ours-docker    playbooks/tune.yml, docker runner: a fresh container per trial

``--our-pruners median asha hyperband`` runs each of our systems once per pruner (``ours-local/asha``,
...): the side-by-side run that picks the default pruner; ``--our-slots 1 2`` once per number of trials at
once (``ours-local/slots=2``); ``--our-variants promote no-promote`` with and without promoting the best
trial to more epochs (``search.promote``); ``--our-variants scheduled sampled`` with epochs scheduled by the pruner
or drawn by the sampler (``search.epochs``: the side-by-side run that picks its default).

Each run is its own process, and two clocks start when it is launched. The user's clock stops when the
command returns with the result in hand: ours when ansible-playbook returns (summary, plot, report and the mail
written; no SMTP server, so the mail is result.eml), a peer when it has saved the model that reached the goal and
exited. The goal-epoch clock stops at the wall-clock end of the first epoch whose val_accuracy reaches the goal
(the peers' callback, our metrics.jsonl), in both only once the model's held-out score confirmed it (--peer-stop
validation: a peer stops on validation alone, as these tools do by themselves). Prints a
Markdown table (medians of both clocks, a missed goal counting as the slowest; IQR of the runs that reached it;
success within the budget, trials, epochs, start-up share; ratios to the first peer on the user's clock), writes
bench/results/peers.json (with each peer run's trace: seconds and val_accuracy of every epoch, to choose a
workload's goal) and bench/results/peers.png (box plot of the user's clock; ``--name``). One training at
a time: start it on an otherwise idle machine.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import workloads

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SYSTEMS = ("kt-hyperband", "kt-bayes", "optuna", "ours-local", "ours-docker")


def _variant(system, pruner):
    """(system, search overrides, slots) of a name such as ours-local, ours-local/asha, ours-local/slots=2,
    ours-local/no-promote, ours-local/sampled (search.epochs) or ours-local/chance=0 (search.chance_epochs)."""
    system, _, variant = system.partition("/")
    slots, search = None, {"pruner": pruner} if pruner else {}  # absent: the configuration's default
    for part in filter(None, variant.split(",")):
        if part.startswith("slots="):
            slots = int(part[len("slots="):])
        elif part.startswith("chance="):  # search.chance_epochs; chance=0: no stop for trials at chance
            search["chance_epochs"] = int(part[len("chance="):])
        elif part in ("promote", "no-promote"):
            search["promote"] = part == "promote"
        elif part in ("scheduled", "sampled"):
            search["epochs"] = part
        else:
            search["pruner"] = part
    return system, search, slots


def _system(name):
    """A --systems entry: a peer, or one of ours with an optional variant (see _variant)."""
    if name.partition("/")[0] not in SYSTEMS or ("/" in name and not name.startswith("ours")):
        raise argparse.ArgumentTypeError(f"{name!r}: expected one of {', '.join(SYSTEMS)}, ours with /variant")
    return name


def _ours(system, seed, args, work):
    """playbooks/tune.yml as a user runs it; the time to goal is read from the winning trial's epoch record."""
    goal, budget = args.goal, args.budget
    name = re.sub(r"[^A-Za-z0-9_.-]", "", system.replace("/", "-").replace(",", "-"))  # a study name's letters
    system, search, slots = _variant(system, args.pruner)
    config = yaml.safe_load((REPO / "examples" / "catsdogs" / "autotune.yml").read_text())
    config.update(study=f"peers-{name}-{seed}", target={"metric": "val_accuracy", "goal": goal},
                  budget={"max_trials": 200, "max_seconds": budget, "trial_timeout": budget},
                  runner=dict({"kind": system.split("-")[1]}, **({"slots": slots} if slots else {})))
    config["dataset"] = args.workload.dataset()
    config["search"]["space"] = args.workload.space()
    config["search"].update(seed=seed, **search)
    path = work / f"{name}-{seed}.yml"
    path.write_text(yaml.safe_dump(config))
    runs = work / "runs"
    # As a new user runs it: the report and the mail are part of the result (no SMTP server: result.eml).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_SMTP")}
    started = time.time()
    played = subprocess.run([str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"), "-e",
                             json.dumps({"autotune_config": str(path), "autotune_runs_root": str(runs)})],
                            cwd=REPO, env=dict(env, PATH=f"{BIN}:{os.environ['PATH']}"), capture_output=True,
                            text=True, timeout=budget + 600, check=False)
    done = time.time() - started
    summary_path = runs / config["study"] / "summary.json"
    if not summary_path.exists():  # the command failed before its study: a miss, and why, not a lost bench
        print(f"{name} seed {seed}: no summary; {played.stdout[-600:]}", file=sys.stderr, flush=True)
        return {"done": None, "seconds": None, "trials": None, "epochs": None, "startup_share": None}
    summary = json.loads(summary_path.read_text())
    kept = REPO / "bench" / "results" / f"{args.name}-summaries"  # every trial's curve: bench/pruner_replay.py
    kept.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(summary_path, kept / f"{config['study']}.json")
    trained = [t for t in summary["trials"] if t["outcome"] != "duplicate"]
    # A continuation's records start with the epochs it carried from the refused trial: those were counted there.
    epochs = sum(len(t["epochs"]) - ((t.get("resumed_from_epoch") or 0) if t.get("continues") is not None else 0)
                 for t in trained)
    reached_at = None
    # Only a trial whose goal the held-out split confirmed counts (issue 20): its first epoch at the goal.
    for trial in trained:
        for record in trial["epochs"]:
            if (trial.get("goal_value") or 0) >= goal - 1e-6 and record.get("val_accuracy", 0) >= goal - 1e-6:
                reached_at = min(reached_at or record["time"], record["time"])
    startup = sum(t["startup_seconds"] or 0 for t in trained)
    busy = startup + sum(t["fit_seconds"] or 0 for t in trained)
    return {"done": round(done, 2) if summary["reached"] else None,
            "seconds": round(reached_at - started, 2) if reached_at else None, "trials": len(trained),
            "epochs": epochs, "startup_share": round(startup / busy, 3) if busy else None,
            "at_chance": sum((t.get("reason") or "").startswith("stopped at chance") for t in trained)}


def _in_process(system, seed, args, work):
    """A peer in a process of its own (bench/peers_worker.py), which writes its result file and exits."""
    out = work / f"{system}-{seed}.json"
    command = [args.peer_python, str(REPO / "bench" / "peers_worker.py"), system, "--seed", str(seed), "--goal",
               str(args.goal), "--budget", str(args.budget), "--pruner", args.pruner or "median", "--work", str(work),
               "--out", str(out), "--workload", args.workload.name, "--stop", args.peer_stop]
    started = time.time()
    subprocess.run(command, cwd=REPO, capture_output=True, timeout=args.budget + 300, check=False,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    done = time.time() - started  # the process has saved the model that reached the goal, and exited
    result = json.loads(out.read_text()) if out.exists() else {"reached_at": None, "trials": None, "epochs": None}
    return {"done": round(done, 2) if result["reached_at"] else None,
            "seconds": round(result["reached_at"] - started, 2) if result["reached_at"] else None,
            "trials": result["trials"], "epochs": result["epochs"], "startup_share": None,
            "refused": result.get("refused"),
            "trace": [(round(t - started, 2), value) for t, value in result.get("trace", [])]}


def _quartiles(values):
    if len(values) < 2:
        return (values[0], values[0]) if values else (None, None)
    q = statistics.quantiles(values, n=4)
    return round(q[0], 1), round(q[2], 1)


def _median(runs, key):
    """The median of ``key`` over the runs, a run that missed the goal counting as slower than every run that
    reached it (never left out); inf when most missed."""
    times = sorted(r[key] for r in runs if r.get(key) is not None)
    return statistics.median(times + [float("inf")] * (len(runs) - len(times))) if runs else float("inf"), times


def _table(results, systems, goal, budget):
    rows = [f"| system | median s, command start → result written | median s to the goal epoch | IQR (result written) "
            "| reached | trials (median) | epochs (median) | start-up share |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    shown = lambda value: f"{value:.1f}" if value != float("inf") else f"> {budget}"  # noqa: E731
    for system in systems:
        runs = results[system]
        done, times = _median(runs, "done")
        epoch, _ = _median(runs, "seconds")
        low, high = _quartiles(times)
        trials = statistics.median([r["trials"] for r in runs if r["trials"] is not None] or [0])
        epochs = statistics.median([r["epochs"] for r in runs if r["epochs"] is not None] or [0])
        shares = [r["startup_share"] for r in runs if r["startup_share"] is not None]
        share = f"{statistics.median(shares):.0%}" if shares else "-"
        rows.append(f"| {system} | {shown(done)} | {shown(epoch)} | {low}–{high} | {len(times)}/{len(runs)} | {trials} "
                    f"| {epochs} | {share} |")
    peers = [s for s in systems if not s.startswith("ours")]
    for ours in (s for s in systems if s.startswith("ours")):
        ratios = [f"{_median(results[ours], 'done')[0] / _median(results[p], 'done')[0]:.2f}× {p}" for p in peers]
        rows.append(f"\n{ours}, user's clock: " + ", ".join(ratios))
    return "\n".join(rows)


def _plot(results, systems, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.boxplot([[r["done"] for r in results[s] if r.get("done") is not None] or [0] for s in systems],
                 tick_labels=list(systems))
    axes.set_ylabel("seconds, command start to result written")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workload", choices=workloads.NAMES, default="catsdogs",
                        help="the data set (bench/workloads.py; animals-rgb64 is built under data/ on first use)")
    parser.add_argument("--goal", type=float, default=0.94)
    parser.add_argument("--budget", type=int, default=300, help="seconds per run before it counts as not reached")
    parser.add_argument("--pruner", help="our pruner (default: the one search.epochs implies), and plain Optuna's "
                                          "(default: median)")
    parser.add_argument("--our-pruners", nargs="+", choices=("median", "asha", "hyperband", "hyperband+median", "none"),
                        help="run each of our systems once per pruner (default: --pruner only)")
    parser.add_argument("--our-slots", nargs="+", type=int,
                        help="run each of our systems once per number of slots (trials at once; default: the config's)")
    parser.add_argument("--our-variants", nargs="+", choices=("promote", "no-promote", "scheduled", "sampled"),
                        help="run each of our systems with and/or without promoting the best trial (search.promote), "
                             "or with epochs scheduled by the pruner or sampled (search.epochs)")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), type=_system,
                        help=f"of {', '.join(SYSTEMS)}; ours with a variant too: ours-local/sampled,median")
    parser.add_argument("--name", default="peers", help="bench/results/NAME.json and NAME.png")
    parser.add_argument("--peer-stop", choices=("held-out", "validation"), default="held-out",
                        help="a peer stops at the goal once its model's held-out accuracy confirms it (the contract "
                             "ours keeps; refused candidates are counted and the search goes on), or on validation")
    parser.add_argument("--peer-python", default=sys.executable,
                        help="the Python that runs the in-process peers (one with Keras Tuner; not our trainers' venv)")
    args = parser.parse_args()
    args.workload = workloads.workload(args.workload)
    if args.our_pruners or args.our_slots or args.our_variants:
        variants = [",".join(filter(None, (p, f"slots={n}" if n else "", v))) for p in (args.our_pruners or [""])
                    for n in (args.our_slots or [None]) for v in (args.our_variants or [""])]
        args.systems = [variant for system in args.systems for variant in (
            [f"{system}/{v}" for v in variants] if system.startswith("ours") else [system])]
    results = {system: [] for system in args.systems}
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autotune-peers-") as tmp:
        work = Path(tmp)
        for seed in range(1, args.seeds + 1):
            for system in args.systems:
                run = _ours if system.startswith("ours") else _in_process
                results[system].append(dict(run(system, seed, args, work), seed=seed))
                print(system, {k: v for k, v in results[system][-1].items() if k != "trace"}, flush=True)
    (REPO / "bench" / "results" / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    _plot(results, args.systems, REPO / "bench" / "results" / f"{args.name}.png")
    print()
    print(_table(results, args.systems, args.goal, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
