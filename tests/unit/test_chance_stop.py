"""search.chance_epochs (issue 21 item 4): a trial whose validation accuracy stays at what one constant answer scores
is stopped, whatever the pruner says.

The study loop against the in-memory runner (tests/fakes.py), with a real pack's validation labels; the real
trainer's side is exercised by tests/integration/test_tune_e2e.py, and the time it saves by bench/peers.py.
"""
import numpy as np
import optuna
import pytest

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune import strategies
from ansible.module_utils.autotune.storage import default_storage
from ansible.module_utils.autotune.study import StudyLoop
from fakes import FakeRunner
from test_study_loop import _setup, by_filters


def _pack(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "y_val.npy", np.asarray(labels, dtype=np.int64))
    return str(folder)


def test_the_constant_answer_is_the_largest_class_share_of_the_validation_split(tmp_path):
    assert tune_dataset.constant_answer_accuracy(_pack(tmp_path / "a", [0, 0, 0, 1])) == 0.75
    assert tune_dataset.constant_answer_accuracy(_pack(tmp_path / "b", list(range(10)) * 20)) == pytest.approx(0.1)
    assert tune_dataset.constant_answer_accuracy(str(tmp_path / "none")) is None, "no pack, no floor"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "y_val.npy").write_bytes(b"not an array")
    assert tune_dataset.constant_answer_accuracy(str(tmp_path / "bad")) is None


@pytest.mark.parametrize("target, search, floor", [
    ({"metric": "val_accuracy"}, {}, 0.5 + (0.25 / 400) ** 0.5),     # 1 standard error above chance
    ({"metric": "val_binary_accuracy"}, {}, 0.5 + (0.25 / 400) ** 0.5),
    ({"metric": "val_accuracy"}, {"chance_epochs": 0}, None),            # turned off
    ({"metric": "val_accuracy"}, {"pruner": "none"}, None),              # no trial is stopped early
    ({"metric": "val_loss"}, {}, None),                                  # not an accuracy: no known floor
    ({"metric": "val_auc"}, {}, None),
    ({"metric": "val_accuracy", "direction": "minimize"}, {}, None),
])
def test_the_floor_is_known_only_for_an_accuracy_that_is_maximised(target, search, floor):
    config = {"target": dict({"direction": "maximize"}, **target), "search": dict({"chance_epochs": 3}, **search)}
    assert strategies.chance_floor(config, 0.5, 400) == (pytest.approx(floor) if floor else None)
    assert strategies.chance_floor(config, None, 400) is None


def _run(tmp_path, table, **search):
    # The median pruner has no finished trial to compare with here: every stop is the chance stop's.
    config, plan, run_dir = _setup(tmp_path, search=dict({"ladder": ["filters"], "pruner": "median"}, **search))
    dataset = {"path": _pack(tmp_path / "pack", [0, 1] * 50), "n_val": 100}  # floor 0.5 + 0.05 = 0.55
    runner, lines = FakeRunner(by_filters(table)), []
    return StudyLoop(config, plan, dataset, runner, run_dir, default_storage(run_dir), lines.append).run()[0]


def test_a_trial_at_chance_is_stopped_after_the_set_epochs_and_a_slow_starter_trains_on(tmp_path):
    study = _run(tmp_path, {4: [0.5] * 6, 8: [0.5, 0.52, 0.6, 0.75, 0.9]})
    stuck, climbing = study.trials[0], study.trials[1]
    assert stuck.state == optuna.trial.TrialState.PRUNED and len(stuck.user_attrs["epochs"]) == 3
    assert "0.550" in stuck.user_attrs["reason"] and "chance" in stuck.user_attrs["reason"]
    assert climbing.state == optuna.trial.TrialState.COMPLETE and climbing.value == 0.9, \
        "at chance for two epochs, above the floor at the third: not stopped"


def test_a_trial_that_falls_back_to_chance_is_stopped_and_zero_epochs_turns_the_stop_off(tmp_path):
    diverges = {4: [0.7, 0.72, 0.74, 0.5, 0.5, 0.5], 8: [0.9]}
    study = _run(tmp_path / "on", diverges)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED and len(study.trials[0].user_attrs["epochs"]) == 4
    study = _run(tmp_path / "off", diverges, chance_epochs=0)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE and len(study.trials[0].user_attrs["epochs"]) == 6


def test_a_model_that_reads_its_own_images_has_no_known_floor(tmp_path):
    from ansible.module_utils.autotune.kinds import KINDS  # pylint: disable=import-outside-toplevel
    assert not KINDS["script"].fed_the_pack and KINDS["template"].fed_the_pack and KINDS["keras_tuner"].fed_the_pack
