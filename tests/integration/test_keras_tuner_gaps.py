"""Keras Tuner build_model(hp) files in the shapes a new user brings (issue 10, gaps a-e), tuned for real.

Each runs through the real loop (tune.prepare / tune.run, local runner, a fresh trainer process per
trial) on the sample data: one or two short trials. A goal the baseline reaches makes the saved model
be scored apart (autotune_trainer.verify), so the pixels and labels it is fed are checked too.
"""
import json

import pytest

from ansible.module_utils.autotune.tune import prepare, run
from conftest import REPO, TEMPLATES, write_config

FILES = REPO / "tests" / "fixtures" / "keras_tuner"


def _tune(tmp_path, name, max_trials=1, goal=0.7, strategy="tpe"):
    config_path = write_config(tmp_path, model={"file": str(FILES / name)},
                               search={"strategy": strategy, "pruner": "none", "startup_trials": 1, "space": None,
                                       "ladder": None},
                               budget={"max_trials": max_trials, "trial_timeout": 120, "max_consecutive_failures": 3},
                               target={"goal": goal})
    text = config_path.read_text()
    config_path.write_text(text.replace("  space: null\n", "").replace("  ladder: null\n", ""))  # the file's own
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(tmp_path / "runs"))
    return run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer"))


@pytest.mark.parametrize("name", ["categorical.py", "rescaling.py", "binary.py"])
def test_the_model_learns_and_its_saved_model_scores_the_same(tmp_path, sample_data, name):
    """a: one-hot labels for categorical_crossentropy; b: pixels 0..255 for a model with Rescaling(1/255);
    d: one sigmoid unit with binary_crossentropy, binary accuracy."""
    summary = _tune(tmp_path, name)
    trial = summary["trials"][0]
    assert trial["outcome"] == "finished", trial.get("reason")
    assert trial["reported_value"] >= 0.7, "it learns (0.5 is a coin: scaled twice, or labels of the wrong form)"
    assert abs(trial["verified_value"] - trial["reported_value"]) < 0.02, "scored apart on the same pixels and labels"
    assert summary["reached"] is True


def test_names_built_in_a_loop_are_searched_from_the_next_trial(tmp_path, sample_data):
    """c: hp.Choice(f"filters_{i}", ...) inside a loop."""
    summary = _tune(tmp_path, "loop_names.py", max_trials=3, goal=0.99, strategy="random")
    zero, *later = summary["trials"]
    seen = json.loads((tmp_path / "runs" / "catsdogs" / "trials" / "0000" / "hyperparameters_seen.json").read_text())
    assert seen["filters_0"] == {"spec": {"type": "categorical", "choices": [4, 8, 16]}, "default": 4}
    assert "filters_0" not in zero["params"]
    assert all(t["params"]["filters_0"] in (4, 8, 16) for t in later), "searched from trial 1 on"
    assert all(t["outcome"] == "finished" for t in summary["trials"])


def test_a_committed_model_whose_output_does_not_fit_its_loss_stops_at_once(tmp_path, sample_data):
    """e: one line naming the cause and the fix after one trial, not three identical crashes."""
    summary = _tune(tmp_path, "mismatch.py", max_trials=3)
    assert summary["n_trials"] == 1
    reason = summary["stop_reason"]
    assert reason.startswith("the committed model (trial 0) cannot train: build_model(hp) or its fit failed before "
                             "training: ValueError"), reason
    assert 'Dense(1, activation="sigmoid") and loss="binary_crossentropy"' in reason and "\n" not in reason
