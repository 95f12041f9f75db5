#!/usr/bin/env python3
"""Benchmark: kill a training container at random epochs, heal it, and measure what is lost.

A real controller (playbooks/tune.yml, docker runner) trains one long trial. The
bench kills its container --kills times at random moments; after each kill it
runs the health check (the same code as playbooks/health.yml) and records:

* relaunch -> training again: from the health check's relaunch to the start of
  the next epoch (container start, imports, checkpoint restore);
* lost work: time from the last completed epoch (its checkpoint) to the kill,
  the only training redone;
* that no completed epoch is trained twice and the study records one trial.

Under the default schedule (cron every minute) a death waits 0-60 s (30 s on
average) for the next health run; that wait is added to the measured figure.

    .venv/bin/python bench/heal_bench.py [--kills 10] [--epochs 60]
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ansible.module_utils
import docker
import yaml

REPO = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(REPO / "module_utils"))

from ansible.module_utils.autotune.health import heal  # noqa: E402
from ansible.module_utils.autotune.runners import spares  # noqa: E402


def epochs(metrics):
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    client = docker.from_env()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="autotune-heal-") as work:
        work = Path(work)
        config = yaml.safe_load((REPO / "examples" / "catsdogs" / "autotune.yml").read_text())
        config.update(study="healbench", target={"goal": 0.999},
                      budget={"max_trials": 1, "trial_timeout": 3600, "max_seconds": 3600})
        config["dataset"]["path"] = str(REPO / "data" / "catsdogs")
        config["model"]["baseline"].update(epochs=args.epochs, filters=8)
        config["search"]["space"] = {"epochs": {"type": "int", "low": args.epochs, "high": args.epochs + 1}}
        config["runner"] = {"kind": "docker", "docker": {"cpus": 2, "memory": "2g", "relaunch_grace": 600}}
        (work / "autotune.yml").write_text(yaml.safe_dump(config))
        extra = {"autotune_config": str(work / "autotune.yml"), "autotune_runs_root": str(work / "runs")}
        controller = subprocess.Popen([str(bin_dir / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"),
                                       "-e", json.dumps(extra)], cwd=REPO, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"))
        metrics = work / "runs" / "healbench" / "trials" / "0000" / "metrics.jsonl"
        rows = []
        for kill in range(args.kills):
            while len(epochs(metrics)) < 2 + kill * (args.epochs // (args.kills + 2)):
                time.sleep(0.1)
            time.sleep(rng.uniform(0.05, 0.9))  # a random moment inside an epoch
            # Trial 0's container: a warm spare handed it (spares.json names the trial its label became).
            container = [c for c in client.containers.list(filters={"label": ["io.autotune.study=healbench"]})
                         if spares.folder_of(str(work / "runs" / "healbench"), c.labels.get("io.autotune.trial")) == "0000"][0]
            container.kill()
            killed_at = time.time()
            container.wait()
            done = epochs(metrics)  # read after the death: every epoch that completed (and checkpointed)
            relaunch_at = time.time()
            actions = [a for a in heal(client, relaunch_limit=args.kills) if a["action"] == "relaunched"]
            assert len(actions) == 1, actions
            while len(epochs(metrics)) <= len(done):
                time.sleep(0.05)
            after = epochs(metrics)[len(done)]
            training_again = after["time"] - after["seconds"] - relaunch_at
            rows.append({"kill": kill + 1, "epochs_done": len(done), "lost_s": round(killed_at - done[-1]["time"], 3),
                         "relaunch_to_training_s": round(training_again, 2)})
            print(json.dumps(rows[-1]), flush=True)
        code = controller.wait()
        summary = json.loads((work / "runs" / "healbench" / "summary.json").read_text())
        trial = summary["trials"][0]
        logged = [e["epoch"] for e in epochs(metrics)]
    print(f"\ncontroller exit {code}; trials in study: {summary['n_trials']}; trial outcome {trial['outcome']}, "
          f"relaunches {trial['relaunches']}; epochs logged {len(logged)} (unique {len(set(logged))}, planned {args.epochs})")
    lost = [r["lost_s"] for r in rows]
    again = [r["relaunch_to_training_s"] for r in rows]
    print(f"lost work per kill: mean {statistics.mean(lost):.2f} s, max {max(lost):.2f} s (the epoch in progress only)")
    print(f"relaunch -> training again: mean {statistics.mean(again):.2f} s, max {max(again):.2f} s; "
          f"death -> training again under the 1-minute cron: mean {30 + statistics.mean(again):.1f} s, "
          f"worst {60 + max(again):.1f} s")
    return 0 if logged == list(range(args.epochs)) and summary["n_trials"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
