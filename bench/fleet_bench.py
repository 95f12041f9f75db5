#!/usr/bin/env python3
"""The fleet's figures (docs/measurements.md, issue 12), one run each:

* trials per hour on a fixed budget of N trials for 1 host x 1 slot, 1 host x 2 slots, 2 hosts x 1 slot, each host
  a container of the worker image limited to one core (playbooks/fleet.yml, as an operator runs it);
* the storage's own cost per trial: milliseconds per ask, report (one epoch) and tell, PostgreSQL against SQLite;
* seconds from a host's death (its container killed mid-trial) to its trial training again on another host.

Needs root, the Docker engine with autotune-worker-keras:cpu-latest (playbooks/worker_image.yml) and PostgreSQL
(playbooks/postgresql.yml); the URL is read from the 0600 file AUTOTUNE_TEST_PG_URL_FILE names.
    python bench/fleet_bench.py --trials 6 [--out bench/fleet.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ansible.module_utils
import docker
import optuna
import yaml

REPO = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(REPO / "module_utils"))
BIN = Path(sys.executable).parent
IMAGE = "autotune-worker-keras:cpu-latest"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def config(work, study, trials):
    path = work / f"{study}.yml"
    path.write_text(yaml.safe_dump({
        "study": study, "dataset": {"path": str(REPO / "data" / "catsdogs")},
        "model": {"template": "cnn", "baseline": {"filters": 8, "dense_units": 32, "epochs": 2}},
        "search": {"strategy": "random", "pruner": "none",
                   "space": {"filters": {"type": "int", "low": 4, "high": 64},
                             "dense_units": {"type": "int", "low": 8, "high": 64}}},
        "budget": {"max_trials": trials, "trial_timeout": 600, "max_seconds": 3600},
        "target": {"goal": 0.999}, "workers": {"heartbeat_interval": 1, "grace_period": 8}}))
    return path


def start_fleet(client, work, url, study, trials, hosts, slots):
    """Host containers (one core each) and playbooks/fleet.yml against them; returns (process, containers)."""
    tag = uuid.uuid4().hex[:6]
    containers = {f"host-{i}": client.containers.run(IMAGE, ["sleep", "infinity"], name=f"fleet-bench-{tag}-{i}",
                                                     detach=True, network_mode="host", nano_cpus=1_000_000_000)
                  for i in range(hosts)}
    inventory = work / f"inventory-{tag}.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
        "children": {"trainers": {"hosts": {
            name: {"ansible_connection": "community.docker.docker", "ansible_host": c.name,
                   "ansible_python_interpreter": "/opt/trainer/bin/python", "autotune_fleet_slots": slots}
            for name, c in containers.items()}}}}}))
    secrets = work / "secrets.yml"
    secrets.write_text(yaml.safe_dump({"autotune_storage": url}))
    secrets.chmod(0o600)
    extra = {"autotune_config": str(config(work, study, trials)), "autotune_runs_root": str(work / "runs"),
             "autotune_fleet_poll": 1, "autotune_notify": False}
    log = open(work / f"{study}.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
    process = subprocess.Popen([str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/fleet.yml",
                                "-e", f"@{secrets}", "-e", json.dumps(extra)], cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT, env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")))
    return process, containers


def trials_of(url, study):
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except Exception:  # pylint: disable=broad-except  # not created yet
        return []


def throughput(client, work, url, trials, hosts, slots):
    study = f"bench-{hosts}x{slots}-{uuid.uuid4().hex[:6]}"
    process, containers = start_fleet(client, work, url, study, trials, hosts, slots)
    try:
        process.wait(timeout=3600)
    finally:
        for container in containers.values():
            container.remove(force=True)
    done = [t for t in trials_of(url, study) if t.state == optuna.trial.TrialState.COMPLETE and t.intermediate_values]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    seconds = (last - first).total_seconds()
    return {"hosts": hosts, "slots": slots, "trained": len(done), "seconds": round(seconds, 1),
            "trials_per_hour": round(3600 * len(done) / seconds, 1),
            "mean_trial_seconds": round(statistics.mean((t.datetime_complete - t.datetime_start).total_seconds()
                                                        for t in done), 1)}


def host_death(client, work, url):
    """Kill host-0 mid-trial; seconds until its trial's retry starts on host-1, and until its first epoch there."""
    study = f"bench-death-{uuid.uuid4().hex[:6]}"
    process, containers = start_fleet(client, work, url, study, 6, 2, 1)
    try:
        victim = None
        while victim is None and process.poll() is None:
            running = [t for t in trials_of(url, study) if t.state == optuna.trial.TrialState.RUNNING
                       and t.user_attrs.get("run_dir", "").endswith("host-0") and t.intermediate_values]
            victim = running[0].number if running else None
            time.sleep(0.2)
        containers["host-0"].kill()
        killed = time.time()
        retry_start = retry_epoch = None
        while retry_epoch is None and time.time() - killed < 300:
            for t in trials_of(url, study):
                if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim:
                    if t.datetime_start and retry_start is None:
                        retry_start = t.datetime_start.timestamp() if t.state != optuna.trial.TrialState.WAITING else None
                    if t.intermediate_values:
                        retry_epoch = time.time()
            time.sleep(0.2)
        process.wait(timeout=1200)
    finally:
        for container in containers.values():
            container.remove(force=True)
    return {"killed_trial": victim, "grace_period": 8, "heartbeat_interval": 1,
            "seconds_to_retry_started": round(retry_start - killed, 1) if retry_start else None,
            "seconds_to_retry_first_epoch": round(retry_epoch - killed, 1) if retry_epoch else None}


def storage_cost(url, trials=40):
    """Milliseconds per ask, report (one epoch) and tell, on the storage as the workers open it."""
    from ansible.module_utils.autotune.storage import make_storage  # pylint: disable=import-outside-toplevel
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, where in (("postgresql", url), ("sqlite", f"sqlite:///{folder}/bench.db")):
            storage = make_storage(where, {"heartbeat_interval": 10, "grace_period": 60})
            study = optuna.create_study(study_name=f"bench-cost-{uuid.uuid4().hex[:6]}", storage=storage,
                                        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
            times = {"ask": [], "report": [], "tell": []}
            for _ in range(trials):
                started = time.perf_counter()
                trial = study.ask()
                trial.suggest_int("filters", 4, 64)
                times["ask"].append(time.perf_counter() - started)
                started = time.perf_counter()
                trial.report(0.5, step=0)
                times["report"].append(time.perf_counter() - started)
                started = time.perf_counter()
                study.tell(trial, 0.5)
                times["tell"].append(time.perf_counter() - started)
            out[name] = {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="fixed budget of trials per throughput run")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    url = Path(os.environ["AUTOTUNE_TEST_PG_URL_FILE"]).read_text(encoding="utf-8").strip()
    client = docker.from_env()
    results = {"storage_ms": storage_cost(url), "load_before": os.getloadavg()}
    print(json.dumps(results["storage_ms"]), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if not args.skip_throughput:
            results["throughput"] = [throughput(client, work, url, args.trials, h, s) for h, s in ((1, 1), (1, 2), (2, 1))]
            print(json.dumps(results["throughput"]), flush=True)
        results["host_death"] = host_death(client, work, url)
        print(json.dumps(results["host_death"]), flush=True)
    results["load_after"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
