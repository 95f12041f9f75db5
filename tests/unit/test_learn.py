"""A second push learns from the first (learn.py): the matching of an earlier study's trials to a new space, and the
study loop started from an earlier study (in-memory runner, tests/fakes.py; real training: tests/integration/
test_second_push.py)."""
import optuna
import pytest

from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune import learn, modelcode, report
from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.storage import default_storage
from ansible.module_utils.autotune.study import StudyLoop
from conftest import TEMPLATES
from fakes import FakeRunner

SPACE = {"filters": {"type": "int", "low": 4, "high": 32, "log": True},
         "kernel_size": {"type": "categorical", "choices": [3, 5]}}
BASELINE = {"filters": 4, "kernel_size": 3, "blocks": 1, "epochs": 1}


def _trial(params, value, number_attrs=None, searched=None):
    searched = searched or {k: v for k, v in params.items() if k in ("filters", "kernel_size", "blocks")}
    distributions = {"filters": optuna.distributions.IntDistribution(2, 64, log=True),
                     "kernel_size": optuna.distributions.CategoricalDistribution([3, 5, 7]),
                     "blocks": optuna.distributions.IntDistribution(1, 3)}
    return optuna.trial.create_trial(params=searched, distributions={k: distributions[k] for k in searched},
                                     value=value, user_attrs=dict({"params": dict(BASELINE, **params)}, **(number_attrs or {})))


def test_an_earlier_trial_is_matched_by_name_dropped_names_go_new_names_take_the_committed_value():
    distributions = search_space.distributions(dict(SPACE, dense_units={"type": "int", "low": 8, "high": 64}))
    baseline = dict(BASELINE, dense_units=16)
    params, searched = learn.trained_with(_trial({"filters": 16, "blocks": 2}, 0.9))
    fitted = learn.fit(params, distributions, baseline, searched=searched)
    assert fitted == {"params": {"filters": 16, "kernel_size": 3, "dense_units": 16}, "new": ["dense_units"],
                      "outside": [], "dropped": ["blocks"]}
    far = learn.trained_with(_trial({"filters": 64, "kernel_size": 7}, 0.9))[0]
    assert learn.fit(far, distributions, baseline) is None, "a finished trial outside the new space is not given"
    assert learn.fit(far, distributions, baseline, strict=False)["outside"] == ["filters", "kernel_size"]
    assert learn.fit(far, distributions, baseline, strict=False)["params"]["filters"] == 4


def test_only_trials_trained_there_and_fitting_the_space_are_given_to_the_sampler():
    distributions = search_space.distributions(SPACE)
    trials = [_trial({"filters": 8}, 0.7), _trial({"filters": 64}, 0.95),  # 64: outside the new range
              _trial({"filters": 8}, 0.7, {"duplicate_of": 0}), _trial({"filters": 16}, 0.8, {"imported_from": {}})]
    for number, trial in enumerate(trials):
        trial.number = number
    kept = learn.importable(trials, distributions, BASELINE, "model-aaaaaaa")
    assert [(t.params, t.value) for t in kept] == [({"filters": 8, "kernel_size": 3}, 0.7)]
    assert kept[0].user_attrs == {"imported_from": {"study": "model-aaaaaaa", "trial": 0}}


def test_values_scored_on_other_data_or_for_another_target_do_not_compare():
    ours = {"data": "abc/testset-1", "metric": "val_accuracy", "direction": "maximize"}
    attrs = {"metric": "val_accuracy", "data": "abc/testset-1"}
    assert learn.differs(attrs, optuna.study.StudyDirection.MAXIMIZE, ours) is None
    assert "other data" in learn.differs(dict(attrs, data="def/testset-1"), "maximize", ours)
    assert learn.differs(dict(attrs, metric="val_loss"), "minimize", ours) == \
        "it was scored to minimize val_loss, not to maximize val_accuracy"
    assert learn.differs({"metric": "val_accuracy"}, "maximize", ours) == "its data set is not recorded"


def test_the_learn_option_is_checked_in_one_line():
    assert learn.settings(None) is None
    assert learn.settings({"repository": "model", "earlier": True})["latest"] == learn.LATEST
    assert learn.settings({"repository": "", "earlier": True})["earlier"] is False, "no repository: nothing to find"
    with pytest.raises(AutotuneError) as error:
        learn.settings({"studies": ["../other"]})
    assert str(error.value) == ("learn.studies: '../other' is not a study or repository name; expected letters, "
                                "digits, '-', '_' and '.', starting with a letter or digit")
    with pytest.raises(AutotuneError, match="learn.latest: -1 is invalid"):
        learn.settings({"latest": -1})


# The study loop, twice: the first push of repository "model" and the push after it, each in its own run folder
# with its own SQLite study (the pipeline's default).

def _setup(runs, study, space=None, baseline=None, search=None):
    data = runs.parent / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True, exist_ok=True)
    document = {"dataset": {"path": str(data)}, "study": study, "target": {"goal": 0.85},
                "model": {"template": "cnn", "baseline": baseline or {"filters": 4, "kernel_size": 3}},
                "search": {"strategy": "escalate", "ladder": ["filters"], "startup_trials": 1, "pruner": "none",
                           "space": space or {"filters": {"type": "int", "low": 4, "high": 32, "log": True}},
                           **(search or {})}}
    config = tune_config.validate(document, base_dir=str(runs.parent))
    run_dir = runs / study
    run_dir.mkdir(parents=True, exist_ok=True)
    return config, modelcode.plan(config, str(TEMPLATES)), str(run_dir)


CURVES = {4: [0.6], 8: [0.7], 16: [0.9]}  # filters -> val_accuracy per epoch


def _push(runs, study, learned=None, fingerprint="same-data", storage=None, curves=None, **plan_args):
    config, plan, run_dir = _setup(runs, study, **plan_args)
    config["learn"] = learn.settings(learned)
    runner = FakeRunner(lambda params: (curves or CURVES).get(params["filters"], [0.5]))
    lines = []
    loop = StudyLoop(config, plan, {"path": "unused.npz", "fingerprint": fingerprint}, runner, run_dir,
                     storage or default_storage(run_dir), lines.append)
    study_, reason, new_trials = loop.run()
    return study_, reason, new_trials, lines


def test_the_next_push_tries_the_earlier_best_right_after_the_baseline_and_gives_the_sampler_its_trials(tmp_path):
    runs = tmp_path / "runs"
    first, reason, new, _ = _push(runs, "model-aaaaaaa", {"repository": "model", "commit": "a" * 40, "earlier": True})
    assert (reason, new) == ("goal reached", 3), "filters 4, 8, then 16 reaches the goal"
    assert first.user_attrs["repository"] == "model" and first.user_attrs["commit"] == "a" * 40
    assert first.user_attrs["learned_from"]["lines"] == [
        "learn: no earlier study of repository model with a finished trial (looked in "
        f"sqlite:///{runs}/model-aaaaaaa/study.db); the search starts from the baseline alone"]

    second, reason, new, lines = _push(runs, "model-bbbbbbb", {"repository": "model", "commit": "b" * 40,
                                                               "earlier": True})
    assert (reason, new) == ("goal reached", 2), "the baseline, then the first push's best, which reaches the goal"
    trials = second.get_trials(deepcopy=False)
    assert trials[0].user_attrs["baseline"] and trials[1].params == {"filters": 16}
    assert trials[1].user_attrs["learned_from"] == {"study": "model-aaaaaaa", "trial": 2, "stop_goal": 0.85}
    imported = [t for t in trials if "imported_from" in t.user_attrs]
    assert [(t.number, t.params["filters"], t.value) for t in imported] == [(2, 4, 0.6), (3, 8, 0.7), (4, 16, 0.9)]
    assert lines[0] == ("learned from study model-aaaaaaa (commit aaaaaaa): its best (trial 2, val_accuracy 0.9000) "
                        f"is trial 1; 3 of its 3 finished trials given to the sampler")
    # What a person reads counts the trials run here only: two trials, the best is trial 1.
    assert [r["number"] for r in report.trial_records(second)] == [0, 1]
    assert study_budget.best_trial(trials, 0.85, "maximize").number == 1
    plotted = report._run_here(second).get_trials(deepcopy=False)  # pylint: disable=protected-access
    assert [t.number for t in plotted if t.state.name == "COMPLETE"] == [0, 1]


def test_imported_trials_spend_no_trial_budget_and_a_study_that_resumes_learns_nothing_again(tmp_path):
    runs = tmp_path / "runs"
    _push(runs, "model-aaaaaaa", {"repository": "model", "earlier": True})
    learned = {"repository": "model", "earlier": True}
    second, _, new, _ = _push(runs, "model-bbbbbbb", learned)
    assert new == 2
    again, _, new_again, lines = _push(runs, "model-bbbbbbb", learned)
    assert new_again == 0 and not any(line.startswith("learned from") for line in lines)
    assert len(again.get_trials(deepcopy=False)) == len(second.get_trials(deepcopy=False))


def test_values_of_other_data_are_not_given_but_the_earlier_best_is_still_tried(tmp_path):
    runs = tmp_path / "runs"
    _push(runs, "model-aaaaaaa", {"repository": "model", "earlier": True})
    second, _, new, lines = _push(runs, "model-bbbbbbb", {"repository": "model", "earlier": True},
                                  fingerprint="new-images")
    assert new == 2 and second.trials[1].params == {"filters": 16}
    assert not [t for t in second.trials if "imported_from" in t.user_attrs]
    assert lines[0].endswith("no value given to the sampler: it was scored on other data (the images, their split "
                             "or the held-out split differ)")


def test_a_repository_marked_off_learns_nothing_and_other_repositories_are_never_learned_from(tmp_path):
    runs = tmp_path / "runs"
    _push(runs, "model-aaaaaaa", {"repository": "model", "earlier": True})
    off, _, new, lines = _push(runs, "model-bbbbbbb", {"repository": "model", "earlier": False})
    assert new == 3 and "learned_from" not in off.user_attrs and off.user_attrs["repository"] == "model"
    other, _, new, lines = _push(runs, "other-ccccccc", {"repository": "other", "earlier": True})
    assert new == 3 and other.user_attrs["learned_from"]["studies"] == []


def test_a_study_named_by_hand_is_learned_from_in_a_shared_storage_and_a_newly_searched_name_matched(tmp_path):
    runs, shared = tmp_path / "runs", f"sqlite:///{tmp_path}/shared.db"
    _push(runs, "catsdogs-v1", storage=shared)
    space = {"filters": {"type": "int", "low": 4, "high": 32, "log": True},
             "kernel_size": {"type": "categorical", "choices": [3, 5]}}
    second, _, new, lines = _push(runs, "catsdogs-v2", {"studies": ["catsdogs-v1", "nowhere"]}, storage=shared,
                                  space=space)
    assert new == 2 and second.trials[1].params == {"filters": 16, "kernel_size": 3}
    # kernel_size was not searched there: the value that study trained with (its committed one) is matched.
    assert lines[0] == ("learned from study catsdogs-v1: its best (trial 2, val_accuracy 0.9000) is trial 1; "
                        "3 of its 3 finished trials given to the sampler")
    assert lines[1] == (f"learn: study nowhere not found (looked in {shared}); started without it")


def test_an_unreadable_study_file_beside_the_run_folder_is_passed_over_in_one_line(tmp_path):
    bad = tmp_path / "runs" / "model-ccccccc"
    bad.mkdir(parents=True)
    (bad / "study.db").write_bytes(b"not a database, e.g. a file cut short by a full disk")
    here = tmp_path / "runs" / "model-ddddddd"
    here.mkdir()
    places = learn._places(default_storage(str(here)), str(here),  # pylint: disable=protected-access
                           learn.settings({"repository": "model", "earlier": True}))
    assert [where for where, _ in places] == [default_storage(str(here)), str(bad)]
    lines, opened = [], []
    assert learn._found(places[1:], "model-ddddddd", opened, lines.append) == {}  # pylint: disable=protected-access
    assert len(lines) == 1 and lines[0].startswith(f"learn: passed over {bad}: cannot read its studies (")


def test_the_pruner_judges_by_this_studys_own_trials_so_the_earlier_best_is_not_pruned_against_the_baseline(tmp_path):
    """Imported trials counted as finished would end the median pruner's 3 startup trials at once: the earlier best,
    slower at epoch 2 than the baseline, would be pruned there (against the baseline's curve alone)."""
    runs, learned = tmp_path / "runs", {"repository": "model", "earlier": True}
    curves = {4: [0.6, 0.7, 0.72], 8: [0.6, 0.65, 0.7], 16: [0.5, 0.6, 0.9]}
    search = {"pruner": "median", "startup_trials": 3}
    _, reason, _, _ = _push(runs, "model-aaaaaaa", learned, curves=curves, search=search)
    assert reason == "goal reached"
    second, reason, new, _ = _push(runs, "model-bbbbbbb", learned, curves=curves, search=search)
    assert (reason, new) == ("goal reached", 2) and second.trials[1].state.name == "COMPLETE"
