"""End to end: playbooks/tune.yml on the sample data, real training, and resuming a study."""
import csv
import email
import email.policy
import io
import json
import sqlite3
from pathlib import Path

import optuna

from conftest import run_playbook, write_config
from modules_support import raise_on_exit, run_module


def test_tune_playbook_reaches_the_goal(tuned_run):
    process, run_dir = tuned_run["process"], tuned_run["run_dir"]
    assert process.returncode == 0, process.stdout[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reached"] is True and summary["best_value"] >= 0.80
    assert summary["metric"] == "val_accuracy" and summary["goal"] == 0.8
    assert summary["runner"] == "local" and summary["storage"].startswith("sqlite:///")
    assert summary["stop_reason"] == "goal reached"
    # Trial 0 is the committed baseline; the loop stopped at the first trial that reached the goal.
    assert summary["trials"][0]["params"]["filters"] == 4 and summary["trials"][0]["params"]["epochs"] == 1
    # Epochs are scheduled by default (search.epochs): each drawn trial may train the space's most (6), the goal or
    # the Hyperband pruner ends it sooner.
    assert (summary["scheduled_epochs"], summary["pruner"]) == ("epochs", "hyperband")
    for trial in summary["trials"][1:]:
        assert trial["params"]["epochs"] == 6 and len(trial["epochs"]) <= 6
    # The goal is judged on the held-out split: every claim of it was scored there, and the loop stopped at the first
    # trial whose claim the held-out split confirmed, which is the one reported.
    winners = [t for t in summary["trials"] if t["goal_value"] is not None and t["goal_value"] >= 0.8 - 1e-6]
    assert [t["number"] for t in winners] == [summary["n_trials"] - 1] == [summary["best_trial"]]
    assert summary["best_test_value"] >= 0.8 - 1e-6 and summary["test"]["n"] == 300
    assert all(t["test_value"] is not None for t in summary["trials"] if t["state"] == "COMPLETE" and t["value"] >= 0.8)
    for trial in summary["trials"]:
        if trial["outcome"] == "finished":
            reported = trial["epochs"][-1]["val_accuracy"]
            assert trial["epochs"] and (trial.get("reported_value") or reported) == reported
            if trial["verified_value"] is not None:
                # The goal claim was scored apart on the saved model: the same accuracy, as an exact fraction.
                assert abs(trial["verified_value"] - reported) < 1e-6 and trial["value"] == trial["verified_value"]
            else:
                assert trial["value"] == reported
            assert (run_dir / "trials" / f"{trial['number']:04d}" / "model.py").is_file()
    assert (run_dir / "best_model.keras").stat().st_size > 1000
    assert (run_dir / "accuracy_per_trial.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_lines_stream_during_the_run(tuned_run):
    process, run_dir = tuned_run["process"], tuned_run["run_dir"]
    summary = json.loads((run_dir / "summary.json").read_text())
    # One line per trial (beside lines that say what the loop does next, e.g. a refused candidate trains on).
    live = [line for line in process.stdout.splitlines() if line.startswith("autotune | ") and " best=" in line]
    assert len(live) == summary["n_trials"]
    # Live lines come before the task's own result is printed.
    assert process.stdout.index("autotune | ") < process.stdout.index("Build the result report]")
    logged = (run_dir / "progress.log").read_text()
    assert "stopped: goal reached" in logged and f"best={summary['best_value']:.4f}" in logged


def test_mail_is_written_as_eml_without_smtp(tuned_run):
    run_dir = tuned_run["run_dir"]
    message = email.message_from_bytes((run_dir / "result.eml").read_bytes(), policy=email.policy.default)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert message["To"] == "ml-team@example.com"
    assert "goal 0.8 reached" in message["Subject"]
    body = message.get_body(("plain",)).get_content()
    assert f"{summary['best_value']:.4f}" in body and "+++ best/model.py" in body
    attachments = [part for part in message.iter_attachments()]
    assert [a.get_filename() for a in attachments] == ["accuracy_per_trial.png", "trials.csv"]
    assert attachments[0].get_content()[:4] == b"\x89PNG"
    # The table of trials: one row a trial, the same numbers as summary.json (a spreadsheet's reading of it).
    table = list(csv.DictReader(io.StringIO(attachments[1].get_content())))
    assert attachments[1].get_content() == (run_dir / "trials.csv").read_text()
    assert [int(row["number"]) for row in table] == [t["number"] for t in summary["trials"]]
    for row, trial in zip(table, summary["trials"]):
        assert row["outcome"] == trial["outcome"] and int(row["epochs"]) == len(trial["epochs"])
        assert (float(row["test_value"]) if row["test_value"] else None) == trial["test_value"]
        assert int(row["params_filters"]) == trial["params"]["filters"]


def test_rerun_of_a_reached_study_trains_nothing(tuned_run, tmp_path):
    before = json.loads((tuned_run["run_dir"] / "summary.json").read_text())["n_trials"]
    again = run_playbook("tune.yml", {"autotune_config": str(tuned_run["config"]),
                                      "autotune_runs_root": str(tuned_run["work"] / "runs")})
    assert again.returncode == 0, again.stdout[-2000:]
    summary = json.loads((tuned_run["run_dir"] / "summary.json").read_text())
    assert summary["n_trials"] == before and summary["new_trials"] == 0


def test_second_run_with_the_same_storage_resumes(tmp_path, sample_data):
    storage = f"sqlite:///{tmp_path / 'shared-study.db'}"
    config = write_config(tmp_path, target={"goal": 0.999},
                          search={"space": {"filters": {"type": "int", "low": 4, "high": 8},
                                            "epochs": {"type": "int", "low": 1, "high": 2}}},
                          budget={"max_trials": 2})
    common = {"autotune_config": str(config), "autotune_runs_root": str(tmp_path / "runs"), "autotune_storage": storage}
    first = run_playbook("tune.yml", common)
    assert first.returncode != 0 and "Goal not reached: best held-out test accuracy" in first.stdout
    assert (tmp_path / "runs" / "catsdogs" / "result.eml").exists(), "the report is written even when the goal is missed"
    second = run_playbook("tune.yml", dict(common, autotune_overrides={"budget": {"max_trials": 4}}))
    assert "Goal not reached" in second.stdout
    study = optuna.load_study(study_name="catsdogs", storage=storage)
    numbers = [t.number for t in study.trials]
    assert numbers == [0, 1, 2, 3], "trial numbers continue across runs"
    summary = json.loads((tmp_path / "runs" / "catsdogs" / "summary.json").read_text())
    assert summary["new_trials"] == 2
    trained = [json.dumps(t.user_attrs["params"], sort_keys=True) for t in study.trials
               if t.user_attrs.get("outcome") != "duplicate"]
    assert len(trained) == len(set(trained)), "no parameter set was trained twice"
    baselines = [t for t in study.trials if t.user_attrs.get("baseline")]
    assert len(baselines) == 1, "the baseline is queued once, not again on resume"
    with sqlite3.connect(tmp_path / "shared-study.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 4


def _descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def test_killed_controller_resumes_the_running_trial_from_its_checkpoint(tmp_path, sample_data):
    """Kill ansible-playbook mid-trial (SIGKILL to its whole process group), run it again."""
    import os
    import signal
    import subprocess
    import time

    from conftest import BIN, REPO
    config = write_config(tmp_path, target={"goal": 0.999}, budget={"max_trials": 3},
                          model={"template": "cnn", "baseline": {"epochs": 24, "batch_size": 32, "filters": 8}},
                          search={"space": {"epochs": {"type": "int", "low": 24, "high": 26}}, "pruner": "none"})
    extra = {"autotune_config": str(config), "autotune_runs_root": str(tmp_path / "runs")}
    command = [str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"), "-e", json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    controller = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    metrics = tmp_path / "runs" / "catsdogs" / "trials" / "0001" / "metrics.jsonl"
    deadline = time.time() + 300
    progress = tmp_path / "runs" / "catsdogs" / "progress.log"
    # Trial 0 is scored apart beside trial 1: kill once it was told, so the kill lands in trial 1 alone. Trial 1
    # trains 24+ epochs (about 12 s) so that a scoring slowed by a loaded machine still ends first.
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2
                                          and progress.exists() and "trial   0 " in progress.read_text()):
        time.sleep(0.1)
    # Ansible's workers and modules run in sessions of their own: kill every process of the tree
    # except the trainer, which must go down by itself with its controller.
    for pid in _descendants(controller.pid) + [controller.pid]:
        if b"autotune_trainer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    controller.wait()
    assert not (metrics.parent / "result.json").exists(), "trial 1 ended before trial 0 was told: killed too late"
    epochs_before = len(metrics.read_text().splitlines())
    assert 2 <= epochs_before < 24
    time.sleep(1.5)
    assert subprocess.run(["pgrep", "-f", "autotune_trainer"], capture_output=True, check=False).stdout == b"", \
        "the trainer dies with its controller"

    again = run_playbook("tune.yml", extra)
    assert "resuming trial 1: the controller stopped while it ran" in again.stdout
    summary = json.loads((tmp_path / "runs" / "catsdogs" / "summary.json").read_text())
    # Optuna's own retry: the interrupted trial 1 is failed and retried as trial 2, in trial 1's folder;
    # the budget of 3 counts it once.
    assert [(t["number"], t["outcome"]) for t in summary["trials"]][:3] == [
        (0, "finished"), (1, "interrupted"), (2, "finished")]
    assert len(summary["trials"]) == 4
    resumed = summary["trials"][2]
    assert resumed["resumed"] is True and resumed["trial_dir"].endswith("trials/0001")
    assert resumed["code"].endswith("code/0001.py"), "the controller's copy of the code, outside the trial folder"
    assert resumed["resumed_from_epoch"] >= epochs_before - 1
    assert [e["epoch"] for e in resumed["epochs"]][-1] == resumed["params"]["epochs"] - 1
    epochs_logged = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs_logged == sorted(set(epochs_logged)), "no epoch trained twice"
    assert summary["trials"][0]["outcome"] == "finished" and summary["trials"][0]["params"]["epochs"] == 24


def test_tune_report_check_mode_writes_nothing(tuned_run, monkeypatch):
    """The report module on a real run folder (the module's unit tests, tests/unit/test_modules.py, train nothing)."""
    import tune_report
    raise_on_exit(monkeypatch)
    run_dir = tuned_run["run_dir"]
    before = sorted(p.name for p in run_dir.iterdir())
    outcome = run_module(tune_report, {"run_dir": str(run_dir), "write_eml": True, "recipients": ["a@b.c"]},
                         check_mode=True)
    assert not outcome.failed and outcome.result["changed"] is False
    assert sorted(p.name for p in run_dir.iterdir()) == before
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{summary['best_value']:.4f}" in outcome.result["subject"]


def _swapped_test_folder(sample_data, target, per_class=60):
    """A held-out folder whose labels are swapped (dogs under cat/, cats under dog/): it refuses every claim."""
    for name, other in (("cat", "dog"), ("dog", "cat")):
        (target / name).mkdir(parents=True)
        for image in sorted((sample_data / other).iterdir())[-per_class:]:
            (target / name / image.name).write_bytes(image.read_bytes())
    return target


def test_a_candidate_the_held_out_split_refuses_trains_on_from_its_checkpoint(tmp_path, sample_data):
    # The baseline may train 6 epochs; its goal stop ends it early at 0.72, the swapped held-out split refuses the
    # claim, and the next trial carries its checkpoint on (issue 21 item 4) instead of searching from scratch.
    test = _swapped_test_folder(sample_data, tmp_path / "test")
    config = write_config(tmp_path, dataset={"path": str(sample_data), "test": str(test)},
                          model={"template": "cnn", "baseline": {"blocks": 2, "filters": 16, "kernel_size": 3,
                                                                 "dense_units": 32, "learning_rate": 0.003,
                                                                 "epochs": 6}},
                          target={"metric": "val_accuracy", "goal": 0.72}, budget={"max_trials": 2})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = run_playbook("tune.yml", {"autotune_config": str(config), "autotune_runs_root": str(tmp_path / "runs"),
                                       "autotune_storage": storage})
    assert "Goal not reached" in result.stdout, result.stdout[-3000:]
    run_dir = tmp_path / "runs" / "catsdogs"
    study = optuna.load_study(study_name="catsdogs", storage=storage)
    refused, carried = study.trials[0], study.trials[1]
    done = len(refused.user_attrs["epochs"])
    assert done < 6 and refused.user_attrs["verified_value"] >= 0.72 > refused.user_attrs["test_value"]
    assert carried.user_attrs["continues"] == 0 and carried.user_attrs["params"] == refused.user_attrs["params"]
    assert carried.user_attrs["resumed_from_epoch"] == done, "it trained on from the refused trial's checkpoint"
    assert carried.user_attrs["epochs"][:done] == refused.user_attrs["epochs"], "its first epochs are the refused one's"
    assert len(carried.user_attrs["epochs"]) > done
    assert not (run_dir / refused.user_attrs["trial_dir"] / "checkpoint").exists(), "a checkpoint is carried once"
    assert f"trial   1  continues trial 0 from its checkpoint after epoch {done}" in result.stdout
