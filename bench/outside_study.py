#!/usr/bin/env python3
"""Benchmark: the seconds `playbooks/tune.yml` spends outside the study (issue 21 item 2), piece by piece.

Runs tune.yml as a user does (local runner, the sample data, goal 0.6 so the committed baseline, trial 0, reaches
it in one epoch) N times and prints a Markdown table of the median seconds of each piece:

    .venv/bin/python bench/outside_study.py [--runs 3] [--data data/catsdogs] [--before OTHER_CHECKOUT]
    .venv/bin/python bench/outside_study.py --pieces [--runs 5]   # each cut timed alone, before and after interleaved

The clock of each piece comes from what the run leaves anyway, nothing is added to the code measured:
Ansible's own log (ANSIBLE_LOG_PATH: each task's start, millisecond resolution) and the run folder's file times
(trial 0's folder handed to its trainer, its epoch record, the verifier's score, plot, trials.csv, summary.json,
report and result.eml). "study" (trial 0 handed -> its goal epoch) is inside the study; every other row is outside.
Run it on an otherwise idle machine; it prints the load (uptime) before and after.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TASK = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*\| TASK \[(.*?)\]")
OUTSIDE = ["Ansible start -> first task", "facts (model_facts)", "tune_model imports + data -> trial 0 handed",
           "verification (held-out score)", "best model copy + record", "plot", "trials.csv + summary.json",
           "tune_model return", "read summary.json (result.yml)", "read the last delivery record",
           "report + result.eml (tune_report)",
           "delivery tasks -> Ansible's end"]


def _tasks(log):
    """[(start time, task name)] from Ansible's log, in order."""
    out = []
    for line in log.read_text().splitlines():
        match = TASK.match(line)
        if match:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((stamp, match.group(2)))
    return out


def _after(tasks, name):
    """(start of the task named ``name``, start of the task after it)."""
    for index, (stamp, task) in enumerate(tasks):
        if task.endswith(name):
            return stamp, tasks[index + 1][0]
    raise SystemExit(f"task {name!r} not in Ansible's log")


def one_run(work, data, index, repo=REPO):
    """The pieces of one tune.yml run of the checkout at ``repo``, seconds each."""
    config = yaml.safe_load((REPO / "examples" / "catsdogs" / "autotune.yml").read_text())
    config.update(study=f"outside-{index}", target={"metric": "val_accuracy", "goal": 0.6})
    config["dataset"]["path"] = str(data)
    config["budget"]["max_trials"] = 3
    path = work / f"outside-{index}.yml"
    path.write_text(yaml.safe_dump(config))
    log, runs = work / f"ansible-{index}.log", work / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTUNE_SMTP")}
    env.update(ANSIBLE_LOG_PATH=str(log), PATH=f"{BIN}:{os.environ['PATH']}")
    started = time.time()
    done = subprocess.run([str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"), "-e",
                           json.dumps({"autotune_config": str(path), "autotune_runs_root": str(runs),
                                       "autotune_build_sample_data": False})],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900, check=False)
    ended = time.time()
    if done.returncode:
        raise SystemExit(f"run {index}: ansible-playbook exited {done.returncode}:\n{done.stdout[-3000:]}")
    run = runs / config["study"]
    summary = json.loads((run / "summary.json").read_text())
    winner = summary["best_trial"]
    goal_epoch = summary["trials"][[t["number"] for t in summary["trials"]].index(winner)]["epochs"][-1]["time"]
    mtime = lambda name: (run / name).stat().st_mtime  # noqa: E731
    tasks = _tasks(log)
    facts = _after(tasks, "Read the model's facts")
    tune = _after(tasks, "Tune until the goal is reached or the budget is spent")
    slurp = _after(tasks, "Read the tuning result")[0], _after(tasks, "Keep the result for the next steps")[1]
    record = _after(tasks, "Read the record of the last delivery")
    report = _after(tasks, "Build the result report")
    first_handed = mtime("trials/0000/trial.json")
    verified = mtime(f"verify/{winner:04d}/verified.json")
    pieces = [tasks[0][0] - started, facts[1] - facts[0], first_handed - tune[0],
              verified - goal_epoch, mtime("best_model.keras") - verified,
              mtime(summary["plot"]) - mtime("best_model.keras"), mtime("summary.json") - mtime(summary["plot"]),
              tune[1] - mtime("summary.json"), slurp[1] - slurp[0], record[1] - record[0], report[1] - report[0],
              ended - report[1]]
    rest = (ended - started) - sum(pieces) - (goal_epoch - first_handed)
    return dict(zip(OUTSIDE, pieces), study=goal_epoch - first_handed, other=rest, total=ended - started,
                trials=summary["n_trials"])


# Each cut alone, in a fresh interpreter, the way before and the way after (interleaved: load hits both alike).
_PREFIX = ("import sys, time, ansible.module_utils; ansible.module_utils.__path__.append(sys.argv[1]); "
           "t = time.perf_counter(); ")
_PLOT = ("import optuna; optuna.logging.set_verbosity(optuna.logging.WARNING); "
         "from ansible.module_utils.autotune import report; s = optuna.create_study(direction='maximize'); "
         "s.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=3); {ahead}"
         "t = time.perf_counter(); report.plot(s, 0.5, 'val_accuracy', sys.argv[2] + '/plot.png'); ")
_OPEN = ("from ansible.module_utils.autotune import storage as st; import contextlib, optuna; "
         "u = f'sqlite:///{sys.argv[2]}/{time.time_ns()}.db'; t = time.perf_counter()\n"
         "with CONTEXT:\n"
         "    for _ in range(2):\n"  # what a run did before trial 0: the loop and dashboard.prepare open it
         "        st.stored_trials('s', u); optuna.create_study(study_name='s', storage=st.reused(u), "
         "load_if_exists=True)\n"
         "    optuna.storages.get_storage(st.reused(u))\n")
PIECES = {
    "open the study before trial 0 (5 storages -> 1)": (
        _PREFIX + _OPEN.replace("CONTEXT", "contextlib.nullcontext()"),
        _PREFIX + _OPEN.replace("CONTEXT", "st.reusing_storages()")),
    "tune_report's imports": (  # before: report and dashboard imported optuna and SQLAlchemy
        _PREFIX + "import optuna, sqlalchemy; from ansible.module_utils.autotune import report; ",
        _PREFIX + "from ansible.module_utils.autotune import report; "),
    "plot after the goal": (  # after: matplotlib imported in a thread while the trials train (2 s here)
        _PREFIX + _PLOT.format(ahead="time.sleep(2); "),
        _PREFIX + _PLOT.format(ahead="report.import_plotting_ahead(); time.sleep(2); ")),
}


def _piece(code, work):
    done = subprocess.run([sys.executable, "-c", code + "print(time.perf_counter() - t)", str(REPO / "module_utils"),
                           str(work)], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def _module_run(work):
    """A controller-side read against a slurp of the same file (the two module runs result.yml and deliver.yml
    no longer make on the controller): ansible localhost ad hoc, start-up included in both."""
    path = work / "summary.json"
    path.write_text('{"reached": true}')
    def timed(args):
        started = time.time()
        subprocess.run([str(BIN / "ansible"), "localhost", *args], cwd=REPO, capture_output=True, check=True)
        return time.time() - started
    return (timed(["-m", "ansible.builtin.slurp", "-a", f"src={path}"]),
            timed(["-m", "ansible.builtin.debug", "-a", f"msg={{{{ lookup('ansible.builtin.file', '{path}') }}}}"]))


def pieces(runs):
    """Markdown rows: each cut before and after, median of ``runs`` interleaved pairs."""
    rows = {name: ([], []) for name in list(PIECES) + ["read a file: slurp -> lookup (ansible ad hoc)"]}
    with tempfile.TemporaryDirectory(prefix="outside-") as tmp:
        for _ in range(runs):
            for name, (before, after) in PIECES.items():
                rows[name][0].append(_piece(before, tmp))
                rows[name][1].append(_piece(after, tmp))
            slurp, lookup = _module_run(Path(tmp))
            rows["read a file: slurp -> lookup (ansible ad hoc)"][0].append(slurp)
            rows["read a file: slurp -> lookup (ansible ad hoc)"][1].append(lookup)
    print("| piece alone | before s (median) | after s (median) | runs before | runs after |\n| --- | --- | --- | --- | --- |")
    for name, (before, after) in rows.items():
        print(f"| {name} | {statistics.median(before):.3f} | {statistics.median(after):.3f} | "
              f"{', '.join(f'{v:.2f}' for v in before)} | {', '.join(f'{v:.2f}' for v in after)} |")


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "catsdogs")
    parser.add_argument("--before", type=Path, help="a checkout of the code before the cuts, run interleaved")
    parser.add_argument("--pieces", action="store_true", help="time each cut alone, before and after")
    args = parser.parse_args()
    print(f"load before: {_uptime()}")
    if args.pieces:
        pieces(args.runs)
        print(f"load after: {_uptime()}")
        return
    repos = [("before", args.before.resolve())] if args.before else []
    repos.append(("now", REPO))
    with tempfile.TemporaryDirectory(prefix="outside-") as tmp:
        results = {name: [] for name, _ in repos}
        for index in range(args.runs):  # interleaved: the machine's load hits both alike
            for name, repo in repos:
                results[name].append(one_run(Path(tmp), args.data.resolve(), f"{name}-{index}", repo))
    print(f"load after: {_uptime()}\n")
    print("| piece | " + " | ".join(f"{name}: median s (runs)" for name, _ in repos) + " |")
    print("| --- |" + " --- |" * len(repos))
    for key in OUTSIDE + ["other", "study", "outside the study, all", "command start -> done"]:
        cells = []
        for name, _ in repos:
            values = [_value(r, key) for r in results[name]]
            cells.append(f"{statistics.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"| {key} | " + " | ".join(cells) + " |")


def _value(result, key):
    if key == "outside the study, all":
        return sum(result[k] for k in OUTSIDE + ["other"])
    return result["total"] if key == "command start -> done" else result[key]

if __name__ == "__main__":
    main()
