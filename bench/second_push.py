#!/usr/bin/env python3
"""Benchmark: a second push of a model that reached its goal, against the first push (docs/pipeline.md, "A second
push learns from the first").

    .venv/bin/python bench/second_push.py [--pairs 5] [--goal 0.94] [--change filters|dropout] [--runner docker|local]

Each pair is a fresh model repository (real git, bare) pushed twice through playbooks/pipeline.yml, as the git hook
runs it: first the sample configuration (examples/catsdogs: its space, goal --goal, search.seed = the pair's number),
then the same model with one line changed (--change filters: the committed baseline's filters 4 -> 6, a searched
value the earlier best sets again; --change dropout: dropout 0.1 added, a value no trial searched). The second push's
study learns from the first's (the pipeline's default). Each push is timed on the user's clock: from the command's
start until ansible-playbook returns with the result written (summary, report, .eml; no SMTP server, nothing
published). A pair whose first push missed the goal is reported and left out of the ratio (there is nothing reached
to learn from); a second push that missed counts with its time. Prints one row per pair and the median ratio of the
second push's time to the first's; writes bench/results/second_push.json. One training at a time: start it on an
otherwise idle machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
CHANGES = {"filters": ("model", "baseline", "filters", 6), "dropout": ("model", "baseline", "dropout", 0.1)}


def configuration(goal, seed, max_trials, max_seconds):
    config = yaml.safe_load((REPO / "examples" / "catsdogs" / "autotune.yml").read_text())
    config.pop("study", None)  # the pipeline names the study <repo>-<sha7>
    config["dataset"]["path"] = str(REPO / "data" / "catsdogs")
    config["target"]["goal"] = goal
    config["search"]["seed"] = seed
    config["budget"].update(max_trials=max_trials, max_seconds=max_seconds)
    return config


def commit(work, config, message):
    (work / "autotune.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run(GIT + ["add", "autotune.yml"], cwd=work, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", message], cwd=work, check=True)
    subprocess.run(GIT + ["push", "-q", "origin", "HEAD:main"], cwd=work, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True).stdout.strip()


def push(folder, bare, sha, runner):
    """One pipeline run on the user's clock: (seconds, summary)."""
    extra = {"autotune_repo": str(bare), "autotune_commit": sha, "autotune_publish": False,
             "autotune_runs_root": str(folder / "runs"), "autotune_workspaces": str(folder / "ws")}
    if runner == "local":
        extra["autotune_pipeline_runner"] = {"kind": "local"}
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_NOCOLOR="1")
    for name in ("AUTOTUNE_SMTP_HOST", "AUTOTUNE_STORAGE"):  # the mail is written, each run keeps its own SQLite
        env.pop(name, None)
    started = time.time()
    done = subprocess.run([str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "pipeline.yml"),
                           "-e", json.dumps(extra)], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.time() - started
    summary_path = folder / "runs" / f"model-{sha[:7]}" / "summary.json"
    if not summary_path.is_file():
        raise SystemExit(f"the pipeline wrote no summary for {sha[:7]}: {done.stdout[-2000:]}")
    return seconds, json.loads(summary_path.read_text())


def one_pair(number, args, work_root):
    folder = Path(work_root) / f"pair-{number}"
    bare, work = folder / "model.git", folder / "work"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    config = configuration(args.goal, number, args.max_trials, args.max_seconds)
    first_seconds, first = push(folder, bare, commit(work, config, "Model"), args.runner)
    section, block, key, value = CHANGES[args.change]
    config[section][block][key] = value
    second_seconds, second = push(folder, bare, commit(work, config, f"One line: {key} {value}"), args.runner)
    learned = (second.get("learned") or {}).get("studies") or []
    return {"pair": number, "first_seconds": round(first_seconds, 1), "first_reached": first["reached"],
            "first_trials": first["n_trials"], "second_seconds": round(second_seconds, 1),
            "second_reached": second["reached"], "second_trials": second["n_trials"],
            "second_best_trial": second["best_trial"], "learned_from": [e["study"] for e in learned],
            "imported": sum(e.get("imported", 0) for e in learned),
            # Where the second push's seconds went: learning (finding and reading the earlier studies), each trial.
            "second_learn_seconds": (second.get("learned") or {}).get("seconds"),
            "second_trial_seconds": [t["seconds"] for t in second["trials"]],
            "ratio": round(second_seconds / first_seconds, 3) if first["reached"] else None}


def table(rows):
    lines = ["| pair | first push s (trials, reached) | second push s (trials, reached, best trial) | imported | ratio |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['first_seconds']} ({r['first_trials']}, {r['first_reached']}) | "
                     f"{r['second_seconds']} ({r['second_trials']}, {r['second_reached']}, {r['second_best_trial']}) | "
                     f"{r['imported']} | {r['ratio'] if r['ratio'] is not None else 'first missed'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--goal", type=float, default=0.94)
    parser.add_argument("--change", choices=sorted(CHANGES), default="filters")
    parser.add_argument("--runner", choices=("docker", "local"), default="docker")
    parser.add_argument("--max-trials", type=int, default=30)
    parser.add_argument("--max-seconds", type=int, default=900)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="second-push-") as work_root:
        for number in range(1, args.pairs + 1):
            rows.append(one_pair(number, args, work_root))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    result = {"goal": args.goal, "change": args.change, "runner": args.runner, "pairs": rows,
              "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
              "median_first_seconds": statistics.median(r["first_seconds"] for r in rows),
              "median_second_seconds": statistics.median(r["second_seconds"] for r in rows)}
    print(table(rows))
    print(f"median second/first (pairs whose first push reached the goal: {len(ratios)} of {len(rows)}): "
          f"{result['median_ratio']}")
    out = REPO / "bench" / "results" / "second_push.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
