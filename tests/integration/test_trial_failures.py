"""One broken trial must not kill the search: crash, NaN and timeout are recorded with their reason."""
import json

import pytest

from ansible.module_utils.autotune.tune import prepare, run
from conftest import REPO, TEMPLATES, write_config

MODEL = REPO / "tests" / "fixtures" / "misbehaving_model.py"


def _tune(tmp_path, max_failures, max_trials=4, baseline=None, pruner="none"):
    config_path = write_config(
        tmp_path, model={"file": str(MODEL), "baseline": baseline or {}},
        search={"strategy": "escalate", "ladder": ["behaviour"], "space": None, "pruner": pruner, "startup_trials": 1},
        budget={"max_trials": max_trials, "trial_timeout": 20, "max_consecutive_failures": max_failures},
        target={"goal": 0.99},
    )
    text = config_path.read_text().replace("  space: null\n", "")
    config_path.write_text(text)
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(tmp_path / "runs"))
    return run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer"))


@pytest.fixture(scope="module")
def failing_study(tmp_path_factory, sample_data):
    return _tune(tmp_path_factory.mktemp("failures"), max_failures=4)


def test_each_failure_is_recorded_with_its_reason(failing_study):
    trials = {t["params"]["behaviour"]: t for t in failing_study["trials"]}
    assert trials["crash"]["outcome"] == "failed"
    assert "RuntimeError: deliberate crash in build_model; fix the model code" in trials["crash"]["reason"]
    assert trials["crash"]["log_tail"], "the last lines of the trainer log are kept"
    assert trials["nan"]["outcome"] == "nan" and "NaN" in trials["nan"]["reason"]
    assert trials["hang"]["outcome"] == "timed_out" and trials["hang"]["reason"] == "timed out after 20 s"
    assert 19 <= trials["hang"]["seconds"] < 60


def test_the_study_goes_on_after_failures(failing_study):
    assert [t["params"]["behaviour"] for t in failing_study["trials"]] == ["nan", "crash", "hang", "ok"]
    assert failing_study["trials"][-1]["outcome"] == "finished"
    assert failing_study["best_trial"] == 3 and failing_study["n_failed"] == 3
    assert failing_study["stop_reason"] == "trial budget spent (4 trials)"


def test_no_trainer_process_outlives_its_timeout(failing_study):
    import os
    from pathlib import Path
    # This study's trainers only (they work in its run folder; a root controller's name their folders relative
    # to it, runners/local.py): other studies may train on this host.
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"autotune_trainer" in (proc / "cmdline").read_bytes() and \
                    os.readlink(proc / "cwd").startswith(failing_study["run_dir"]):
                left.append(proc.name)
        except OSError:
            continue  # ended meanwhile
    assert left == []


def test_consecutive_failures_stop_the_study(tmp_path, sample_data):
    summary = _tune(tmp_path, max_failures=2)
    assert summary["n_trials"] == 2 and summary["n_completed"] == 0
    assert summary["stop_reason"].startswith("2 consecutive trials failed (last: build_model(hp) or its fit failed "
                                             "before training: RuntimeError: deliberate crash in build_model")
    saved = json.loads((tmp_path / "runs" / "catsdogs" / "summary.json").read_text())
    assert saved["reached"] is False and saved["best_value"] is None


def test_a_hopeless_trial_is_pruned_after_its_warm_up_epoch(tmp_path, sample_data):
    # 20 epochs of a one-layer model: an epoch takes a fraction of a poll, so a short trial could write all its epochs
    # before the controller, which pruned it at epoch 2, has stopped it.
    summary = _tune(tmp_path, max_failures=3, max_trials=2, baseline={"behaviour": "ok", "epochs": 20}, pruner="median")
    ok, stuck = summary["trials"]
    assert ok["outcome"] == "finished" and len(ok["epochs"]) == 20
    assert stuck["params"]["behaviour"] == "stuck"
    assert stuck["outcome"] == "pruned" and stuck["state"] == "PRUNED"
    assert len(stuck["epochs"]) < 20 and stuck["reason"].startswith("pruned at epoch 2")
