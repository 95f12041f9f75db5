"""target.metric and target.direction with real training (tune.prepare / tune.run, local runner, the cnn template).

A loss minimised to its goal; AUC on an imbalanced set, where accuracy would call the majority-class guesser a
success; and a metric the user's own code does not log, which stops the study at trial 0 in one line. Each run is
two trials at most on the sample data (28x28 grayscale), well under a minute of training on two cores.
"""
import json
import shutil
from pathlib import Path

import pytest

from ansible.module_utils.autotune.trialdir import reaches
from ansible.module_utils.autotune.tune import prepare, run
from conftest import REPO, SAMPLE_DATA, TEMPLATES, write_config

# The baseline a trial 0 trains, and escalate's one rung: the number of epochs, 1 then more.
STRONGER = {"filters": 8, "blocks": 2, "epochs": 1}


def _tune(tmp_path, target, baseline, epochs, **sections):
    config_path = write_config(tmp_path, target=target, model={"template": "cnn", "baseline": baseline},
                               search={"strategy": "escalate", "ladder": ["epochs"], "pruner": "none",
                                       "space": {"epochs": {"type": "categorical", "choices": epochs}}},
                               budget={"max_trials": 3, "trial_timeout": 300, "max_seconds": 900}, **sections)
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(tmp_path / "runs"))
    return run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer")), Path(run_dir)


def test_a_loss_is_minimised_to_its_goal(tmp_path, sample_data):
    # Trial 0 (1 epoch) ends near val_loss 0.53: above the goal (a maximised rule would call that reached). Trial 1
    # may train 5 epochs; its loss falls under 0.42 at the third (0.43 at the second) and GoalStop ends it there.
    summary, run_dir = _tune(tmp_path, {"metric": "val_loss", "goal": 0.42}, STRONGER, [1, 5])
    assert (summary["metric"], summary["direction"]) == ("val_loss", "minimize")
    assert summary["reached"] is True and summary["stop_reason"] == "goal reached", summary["verdict"]
    first, winner = summary["trials"]
    assert first["value"] > 0.42 and winner["number"] == summary["best_trial"] == 1
    losses = [epoch["val_loss"] for epoch in winner["epochs"]]
    assert losses[-1] <= 0.42 < min(losses[:-1]) and len(losses) < 5, "stopped at the first epoch at or under it"
    assert abs(winner["verified_value"] - losses[-1]) < 1e-4, "the verifier re-scores the same loss"
    assert winner["test_value"] <= 0.42 and winner["goal_value"] == max(winner["verified_value"], winner["test_value"])
    assert summary["best_value"] == min(t["value"] for t in summary["trials"] if t["value"] is not None)
    assert summary["test"]["metric"] == "loss" and summary["test"]["standard_error"] is None
    assert summary["verdict"].startswith(f"Goal reached: best held-out test loss {winner['test_value']:.4f} <= 0.42")
    assert "goal val_loss <= 0.42" in summary["progress"][0]
    spec = json.loads((run_dir / "trials" / "0001" / "trial.json").read_text())
    assert (spec["metric"], spec["direction"]) == ("val_loss", "minimize")


def _imbalanced(folder, dogs=53):
    """Every cat of the sample and 53 dogs: 5 % positives, where always answering "cat" is 95 % accurate."""
    for name, count in (("cat", None), ("dog", dogs)):
        (folder / name).mkdir(parents=True)
        for image in sorted((SAMPLE_DATA / name).iterdir())[:count]:
            shutil.copy(image, folder / name / image.name)
    return folder


def test_auc_on_an_imbalanced_set_where_accuracy_would_mislead(tmp_path, sample_data):
    data = _imbalanced(tmp_path / "imbalanced")
    # stop_at_goal off: the held-out AUC lags the validation one by an epoch or two on 8 held-out dogs.
    summary, run_dir = _tune(tmp_path, {"metric": "val_auc", "goal": 0.7, "stop_at_goal": False},
                             dict(STRONGER, filters=16, dense_units=32, learning_rate=0.003), [1, 6],
                             dataset={"path": str(data)})
    first = summary["trials"][0]
    accuracy, auc = first["epochs"][-1]["val_accuracy"], first["epochs"][-1]["val_auc"]
    assert accuracy >= 0.9 and reaches(accuracy, 0.8), "accuracy would have stopped the study at trial 0"
    assert auc < 0.6 and not reaches(first["goal_value"], 0.7), "its AUC says it tells no dog from a cat"
    assert summary["direction"] == "maximize" and summary["reached"] is True, summary["verdict"]
    winner = summary["trials"][summary["best_trial"]]
    assert winner["number"] == 1 and winner["value"] >= 0.7 and winner["test_value"] >= 0.7
    assert abs(winner["verified_value"] - winner["epochs"][-1]["val_auc"]) < 1e-4, "the compiled AUC, re-evaluated"
    assert summary["test"]["metric"] == "auc" and summary["verdict"].startswith("Goal reached: best held-out test auc ")
    assert 'keras.metrics.AUC(name="auc"' in (run_dir / "code" / "0000.py").read_text()


@pytest.mark.parametrize("model", [{"file": str(REPO / "tests" / "fixtures" / "keras_tuner" / "categorical.py")},
                                   {"file": str(REPO / "examples" / "catsdogs_script" / "train.py")}])
def test_a_metric_the_users_code_does_not_log_stops_the_study_at_trial_0(tmp_path, sample_data, model):
    config_path = write_config(tmp_path, target={"metric": "val_auc", "goal": 0.8}, model=model,
                               search={"strategy": "tpe", "space": None, "ladder": None},
                               budget={"max_trials": 3, "trial_timeout": 300})
    config_path.write_text(config_path.read_text().replace("  space: null\n", "").replace("  ladder: null\n", ""))
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(tmp_path / "runs"))
    summary = run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer"))
    where = "the script's model" if model["file"].endswith("train.py") else "build_model(hp)'s model"
    assert summary["n_trials"] == 1 and summary["stop_reason"] == (
        f"the committed model (trial 0) cannot train: target.metric 'val_auc' is not logged by {where} (its validation "
        "metrics: val_accuracy, val_loss); expected one of those, or 'auc' in its compile(metrics=[...])")
