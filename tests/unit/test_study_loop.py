"""The study loop against the in-memory runner (tests/fakes.py): stop rules, pruning, timeouts, repeats, resume.

No training and no engine: each test takes well under a second. The same loop with real
training, processes and containers is tested in tests/integration/.
"""
import json

import optuna
import pytest

from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune import modelcode, report, strategies
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.storage import default_storage, open_study
from ansible.module_utils.autotune.study import StudyLoop
from conftest import TEMPLATES
from fakes import FakeRunner


def _setup(tmp_path, **sections):
    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True, exist_ok=True)
    document = {"dataset": {"path": str(data)}, "model": {"template": "cnn"}, "study": "unit",
                "search": {"strategy": "escalate", "ladder": ["filters"], "startup_trials": 1, "pruner": "none",
                           "space": {"filters": {"type": "int", "low": 4, "high": 32, "log": True}}}}
    for key, value in sections.items():  # a None value drops the key (its default applies)
        document[key] = {k: v for k, v in dict(document.get(key, {}), **value).items() if v is not None}
    config = tune_config.validate(document, base_dir=str(tmp_path))
    plan = modelcode.plan(config, str(TEMPLATES))
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return config, plan, str(run_dir)


def _loop(tmp_path, script, measure=None, scoring_polls=0, **sections):
    config, plan, run_dir = _setup(tmp_path, **sections)
    runner = FakeRunner(script, measure, scoring_polls=scoring_polls)
    lines = []
    loop = StudyLoop(config, plan, {"path": "unused.npz"}, runner, run_dir, default_storage(run_dir), lines.append)
    study, reason, new_trials = loop.run()
    return study, reason, new_trials, runner, lines


def by_filters(table):
    return lambda params: table.get(params["filters"], [0.5])


def test_goal_reached_stops_at_once(tmp_path):
    study, reason, new, runner, lines = _loop(tmp_path, by_filters({4: [0.6], 8: [0.7, 0.85]}))
    assert reason == "goal reached" and new == 2
    assert [t.params["filters"] for t in study.trials] == [4, 8]
    assert [labels["trial"] for _, labels in runner.started] == ["0000", "0001"]
    assert lines[-1].startswith("trial   1  filters=8  val_accuracy=0.8500")


def test_trial_budget_and_ladder_exhaustion(tmp_path):
    _, reason, new, _, _ = _loop(tmp_path, by_filters({}), budget={"max_trials": 3}, target={"goal": 0.99})
    assert (reason, new) == ("trial budget spent (3 trials)", 3)
    # filters 4 -> 8 -> 16 -> 32, then the only rung is at its limit.
    _, reason, new, _, _ = _loop(tmp_path / "b", by_filters({}), target={"goal": 0.99})
    assert (reason, new) == ("search space exhausted: every ladder rung is at its limit", 4)


def test_consecutive_failures_stop_with_the_last_reason(tmp_path):
    study, reason, _, _, _ = _loop(tmp_path, lambda params: "crash", budget={"max_consecutive_failures": 2})
    assert reason.startswith("2 consecutive trials failed (last: exit status 1: RuntimeError: scripted crash)")
    assert [t.user_attrs["outcome"] for t in study.trials] == ["failed", "failed"]
    assert study.trials[0].user_attrs["log_tail"][-1] == "RuntimeError: scripted crash"


def test_hopeless_trial_is_pruned_and_its_process_stopped(tmp_path):
    script = by_filters({4: [0.7, 0.7, 0.7, 0.7], 8: [0.1, 0.1, 0.1, 0.1]})
    study, _, _, runner, _ = _loop(tmp_path, script, budget={"max_trials": 2}, target={"goal": 0.99},
                                   search={"pruner": "median"})
    pruned = study.trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.user_attrs["reason"].startswith("pruned at epoch 2")
    assert runner.log == [("stopped", runner.started[1][0])]


def test_a_trial_is_judged_by_a_curve_whose_model_is_still_being_scored(tmp_path):
    """Trial 0 is scored apart (slowly) while trial 1 trains: the pruner reads trial 0's curve at once."""
    script = by_filters({4: [0.7, 0.7, 0.7, 0.7], 8: [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]})
    study, _, _, runner, _ = _loop(tmp_path, script, scoring_polls=8, budget={"max_trials": 2}, target={"goal": 0.99},
                                   search={"pruner": "median"})
    pruned = study.trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.user_attrs["reason"].startswith("pruned at epoch 2")
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE and study.trials[0].user_attrs["verified"]


def test_a_hanging_trial_times_out_and_the_study_goes_on(tmp_path):
    script = by_filters({4: "hang", 8: [0.9]})
    study, reason, _, _, _ = _loop(tmp_path, script, budget={"trial_timeout": 1})
    assert study.trials[0].user_attrs["outcome"] == "timed_out" and reason == "goal reached"


def test_repeated_draws_are_answered_without_training(tmp_path):
    space = {"augment": {"type": "bool"}}
    study, _, new, runner, _ = _loop(tmp_path, lambda params: [0.6], target={"goal": 0.99}, budget={"max_trials": 6},
                                     search={"strategy": "random", "space": space, "ladder": ["augment"]})
    duplicates = [t for t in study.trials if t.user_attrs.get("outcome") == "duplicate"]
    assert new == 6 and len(runner.started) == 6 - len(duplicates) <= 2
    assert all(t.value == study.trials[t.user_attrs["duplicate_of"]].value for t in duplicates)


def _left_running(config, plan, run_dir, with_result):
    """What a controller killed mid-trial leaves: a RUNNING trial and its prepared folder."""
    study = open_study(config, plan, default_storage(run_dir))
    study.enqueue_trial({"filters": 4})
    trial = study.ask()
    params = dict(plan["baseline"], filters=trial.suggest_int("filters", 4, 32, log=True))
    for name, value in {"run_dir": run_dir, "params": params, "trial_dir": "trials/0000", "code": "code/0000.py"}.items():
        trial.set_user_attr(name, value)
    folder = f"{run_dir}/trials/0000"
    __import__("os").makedirs(folder)
    with open(f"{folder}/trial.json", "w", encoding="utf-8") as handle:
        json.dump({"number": 0, "params": params}, handle)
    if with_result:
        with open(f"{folder}/metrics.jsonl", "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"epoch": 0, "val_accuracy": 0.9}) + "\n")
        with open(f"{folder}/result.json", "w", encoding="utf-8") as handle:
            json.dump({"status": "ok", "value": 0.9}, handle)


@pytest.mark.parametrize("with_result", [False, True])
def test_interrupted_trial_is_retried_in_its_own_folder_through_public_optuna(tmp_path, with_result):
    config, plan, run_dir = _setup(tmp_path)
    _left_running(config, plan, run_dir, with_result)
    runner = FakeRunner(by_filters({4: [0.9]}))
    lines = []
    study, reason, _ = StudyLoop(config, plan, {"path": "x.npz"}, runner, run_dir, default_storage(run_dir),
                                 lines.append).run()
    assert reason == "goal reached"
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    resumed = study.trials[1].user_attrs
    assert resumed["resumes_trial"] == 0 and resumed["trial_dir"] == "trials/0000" and resumed["resumed"] is True
    # A trial that finished while no controller watched is taken as it is: nothing trains again.
    assert [folder for folder, _ in runner.started] == ([] if with_result else [f"{run_dir}/trials/0000"])
    records = report.trial_records(study)
    assert records[0]["outcome"] == "interrupted" and "resumed as trial 1" in records[0]["reason"]
    assert "resuming trial 0" in lines[0]


def test_running_trials_of_another_run_directory_are_left_alone(tmp_path):
    config, plan, run_dir = _setup(tmp_path)
    _left_running(config, plan, run_dir, with_result=False)
    other = str(tmp_path / "elsewhere")
    __import__("os").makedirs(other)
    study = StudyLoop(config, plan, {"path": "x.npz"}, FakeRunner(by_filters({8: [0.9]})), other,
                      default_storage(run_dir)).run()[0]
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING


def test_unknown_strategy_or_pruner_is_an_error_never_a_fallback(tmp_path):
    config, plan, _ = _setup(tmp_path)
    config["search"]["strategy"] = "genetic"
    with pytest.raises(AutotuneError, match="search.strategy: 'genetic' is unknown; expected one of tpe, random, escalate"):
        strategies.make_sampler(config, plan)
    with pytest.raises(AutotuneError, match="search.pruner: 'genetic' is unknown"):
        strategies.make_pruner(dict(config, search=dict(config["search"], pruner="genetic")), plan)


def test_a_claimed_goal_counts_only_with_the_score_its_saved_model_has(tmp_path):
    # filters=8 claims 0.99 but its saved model scores 0.55; filters=16 is honest.
    script = by_filters({4: [0.6], 8: [0.99], 16: [0.9]})
    study, reason, _, runner, _ = _loop(tmp_path, script, measure=lambda params, reported: 0.55 if params["filters"] == 8
                                        else reported)
    liar, honest = study.trials[1], study.trials[2]
    assert liar.value == 0.55 and liar.user_attrs["reported_value"] == 0.99
    assert liar.user_attrs["reason"] == "reported val_accuracy 0.9900, its saved model scores 0.5500"
    assert honest.value == 0.9 and reason == "goal reached"
    assert [folder.rsplit("/", 1)[1] for folder in runner.verified] == ["0000", "0001", "0002"], \
        "a trial that could be the best is scored: the first, and each claiming the best or the goal"


def test_after_a_claim_the_scorer_refuted_trials_stop_themselves_past_the_goal_by_the_gap(tmp_path):
    # filters=4 claims 0.805 at the goal of 0.8 and its saved model scores 0.795: the next trials' own goal stop waits
    # for 0.81 (trial.json's goal), so they train the epochs that could make up the gap; the goal itself is unchanged.
    script = by_filters({4: [0.805], 8: [0.7], 16: [0.85]})
    study, reason, _, _, _ = _loop(tmp_path, script, target={"goal": 0.8},
                                   measure=lambda params, reported: 0.795 if params["filters"] == 4 else reported)
    goals = [json.loads((tmp_path / "run" / "trials" / f"{n:04d}" / "trial.json").read_text())["goal"]
             for n in range(len(study.trials))]
    assert goals[0] == 0.8 and goals[1:] == [pytest.approx(0.81)] * (len(goals) - 1)
    assert [t.user_attrs["stop_goal"] for t in study.trials] == goals, "recorded for the trial's reproduce record"
    assert reason == "goal reached" and study.trials[-1].value == 0.85
    # A wild claim moves the stop by at most MAX_STOP_MARGIN.
    wild = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.6,
                                     user_attrs={"reported_value": 0.99, "goal_value": 0.6})
    assert study_budget.stop_goal([wild], 0.8, "maximize") == pytest.approx(0.8 + study_budget.MAX_STOP_MARGIN)
    loss = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.5,
                                     user_attrs={"reported_value": 0.29, "goal_value": 0.32})
    assert study_budget.stop_goal([loss], 0.3, "minimize") == pytest.approx(0.27), "a loss stops lower"
    assert study_budget.stop_goal([], 0.3, "minimize") == 0.3


def test_a_model_that_cannot_be_scored_does_not_count(tmp_path):
    study, _, _, _, _ = _loop(tmp_path, by_filters({4: [0.95]}), measure=lambda params, reported: None,
                              budget={"max_trials": 1})
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["outcome"] == "unverified"
    assert "could not be scored (ValueError: unsafe model file)" in trial.user_attrs["reason"]


def test_reported_code_is_the_controllers_copy_outside_the_trial_folder(tmp_path):
    study, _, _, _, _ = _loop(tmp_path, by_filters({4: [0.9]}))
    code = study.trials[0].user_attrs["code"]
    assert code == "code/0000.py"
    run_dir = tmp_path / "run"
    assert (run_dir / code).read_text() == (run_dir / "trials" / "0000" / "model.py").read_text()


def test_slots_keep_several_trials_in_flight_within_the_budget(tmp_path):
    study, reason, _, runner, _ = _loop(tmp_path, lambda params: [0.5] * 4, target={"goal": 0.99},
                                        budget={"max_trials": 4}, runner={"slots": 2},
                                        search={"strategy": "random", "space": {
                                            "filters": {"type": "int", "low": 4, "high": 64}}})
    assert runner.flight["most"] == 2 and len(study.trials) == 4 and reason == "trial budget spent (4 trials)"
    assert {labels["slot"] for _, labels in runner.started} == {"0", "1"}


def test_a_trial_another_worker_asked_for_past_the_budget_is_failed_untrained_and_never_counted(tmp_path, monkeypatch):
    """Two fleet hosts check the budget at the same moment and both ask: the later trial (by number) is past the
    budget on every host, so it is failed at once, untrained, and left out of the budget, report and goal."""
    real_promote = StudyLoop._promote

    def another_worker_asks_first(self, study):
        real_promote(self, study)
        if len(study.trials) == 2:  # the budget check said one more; another host takes it before this ask
            study.tell(study.ask(), 0.5)
    monkeypatch.setattr(StudyLoop, "_promote", another_worker_asks_first)
    study, reason, _, runner, lines = _loop(tmp_path, by_filters({}), budget={"max_trials": 3},
                                            target={"goal": 0.99})
    assert reason == "trial budget spent (3 trials)" and len(runner.started) == 2
    over = study.trials[3]
    assert over.state == optuna.trial.TrialState.FAIL and over.user_attrs == {study_budget.OVER_BUDGET: True}
    assert [t.number for t in study_budget.counted(study.trials)] == [0, 1, 2]
    assert [r["number"] for r in report.trial_records(study)] == [0, 1, 2]
    assert "trial   3  not trained: another worker took the budget's last trial first" in lines


def test_a_goal_reached_in_one_slot_stops_the_others(tmp_path):
    script = by_filters({4: [0.5] * 50, 8: [0.9]})
    study, reason, _, runner, _ = _loop(tmp_path, script, runner={"slots": 2})
    slow, fast = study.trials
    assert reason == "goal reached" and fast.value == 0.9
    assert slow.state == optuna.trial.TrialState.PRUNED and slow.user_attrs["outcome"] == "stopped"
    assert slow.user_attrs["reason"] == "stopped: trial 1 reached the goal" and len(slow.user_attrs["epochs"]) < 50
    assert ("stopped", runner.started[0][0]) in runner.log


@pytest.mark.parametrize("pruner", ["asha", "hyperband", "hyperband+median"])
def test_multi_fidelity_pruners_stop_a_hopeless_trial_early(tmp_path, pruner):
    # Epochs are the resource: a trial far below the others at its first rung is stopped there.
    script = by_filters({4: [0.7] * 9, 8: [0.72] * 9, 16: [0.1] * 9, 32: [0.71] * 9})
    study, _, _, runner, _ = _loop(tmp_path, script, target={"goal": 0.99}, search={"pruner": pruner})
    hopeless = next(t for t in study.trials if t.params["filters"] == 16)
    assert hopeless.state == optuna.trial.TrialState.PRUNED and len(hopeless.user_attrs["epochs"]) < 9
    assert ("stopped", next(folder for folder, _ in runner.started if folder.endswith(f"{hopeless.number:04d}"))) \
        in runner.log


def _stopped_at(tmp_path, pruner):
    """Two trials finish at 0.8; the epoch at which a third one, at 0.3, is stopped (None: it trains them all)."""
    config, plan, _ = _setup(tmp_path, search={"pruner": pruner})
    study = optuna.create_study(study_name="beside", direction="maximize",
                                pruner=strategies.make_pruner(config, plan))
    for _ in range(2):
        trial = study.ask()
        for step in range(9):
            trial.report(0.8, step)
        study.tell(trial, 0.8)
    trial = study.ask()
    for step in range(9):
        trial.report(0.3, step)
        if trial.should_prune():
            return step
    return None


def test_the_median_beside_hyperband_judges_the_first_trial_of_a_bracket(tmp_path):
    # The third trial falls in a Hyperband bracket of its own, where no earlier trial judges it; the study-wide
    # median stops it at its third epoch.
    assert _stopped_at(tmp_path / "alone", "hyperband") is None
    assert _stopped_at(tmp_path / "beside", "hyperband+median") == 2


def test_patience_wraps_the_pruner(tmp_path):
    config, plan, _ = _setup(tmp_path, search={"pruner": "asha", "pruner_patience": 2})
    pruner = strategies.make_pruner(config, plan)
    assert isinstance(pruner, optuna.pruners.PatientPruner)


def _held_out_loop(tmp_path, script, test, measure=None, **sections):
    """The loop as tune.run builds it: the trials' pack plus a held-out test pack only the verifier is given."""
    config, plan, run_dir = _setup(tmp_path, **sections)
    runner = FakeRunner(script, measure, test=test)
    loop = StudyLoop(config, plan, {"path": "trials-pack", "test_path": "held-out-pack"}, runner, run_dir,
                     default_storage(run_dir))
    study, reason, _ = loop.run()
    return study, reason, runner


def test_the_goal_is_judged_on_the_held_out_split_not_on_the_validation_claim(tmp_path):
    # filters=8 reaches the goal on validation but not on the held-out split; filters=16 reaches it on both.
    script = by_filters({4: [0.6], 8: [0.9], 16: [0.95]})
    study, reason, runner = _held_out_loop(tmp_path, script, test=lambda params, reported: 0.7 if params["filters"] == 8
                                           else reported)
    overfit, winner = study.trials[1], study.trials[2]
    assert overfit.value == 0.9 and overfit.user_attrs["test_value"] == 0.7 and overfit.user_attrs["goal_value"] == 0.7
    assert "the held-out test split scores 0.7000: searching on" in overfit.user_attrs["reason"]
    assert reason == "goal reached" and len(study.trials) == 3 and winner.user_attrs["test_value"] == 0.95
    assert all(data == "trials-pack" for data in runner.data_given), "a trial is never given the held-out pack"


def test_a_lie_below_the_goal_is_scored_and_never_reported_as_the_best(tmp_path):
    # filters=8 claims 0.98 (below the 0.99 goal) but its saved model scores 0.5: it counts with 0.5.
    script = by_filters({4: [0.6], 8: [0.98], 16: [0.7]})
    study, _, runner = _held_out_loop(tmp_path, script, test=lambda params, reported: reported - 0.05,
                                      measure=lambda params, reported: 0.5 if params["filters"] == 8 else reported,
                                      target={"goal": 0.99}, budget={"max_trials": 3})
    liar = study.trials[1]
    assert liar.value == 0.5 and liar.user_attrs["reported_value"] == 0.98 and liar.user_attrs["verified"] is True
    best = study_budget.best_trial(study.trials, 0.99, "maximize")
    assert best.number == 2 and best.user_attrs["verified"] and best.user_attrs["test_value"] == pytest.approx(0.65)
    assert [folder.rsplit("/", 1)[1] for folder in runner.verified] == ["0000", "0001", "0002"]


def test_a_trial_below_the_best_verified_score_is_not_scored_and_never_the_best(tmp_path):
    script = by_filters({4: [0.8], 8: [0.6]})
    study, _, runner = _held_out_loop(tmp_path, script, test=lambda params, reported: reported,
                                      target={"goal": 0.99}, budget={"max_trials": 2})
    assert [folder.rsplit("/", 1)[1] for folder in runner.verified] == ["0000"]
    assert study.trials[1].user_attrs["verified"] is False and "test_value" not in study.trials[1].user_attrs
    assert study_budget.best_trial(study.trials, 0.99, "maximize").number == 0


# A minimised metric (target.metric val_loss): the goal is reached at or below it, the best is the lowest, the
# pruner stops a trial whose loss stays high, and the held-out split must be as low.
LOSS = {"metric": "val_loss", "goal": 0.3}


def test_a_loss_goal_is_reached_at_or_below_it_and_the_study_minimises(tmp_path):
    study, reason, new, runner, lines = _loop(tmp_path, by_filters({4: [0.6], 8: [0.5, 0.3]}), target=LOSS)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert reason == "goal reached" and new == 2 and study.trials[1].user_attrs["goal_value"] == 0.3
    assert lines[-1].startswith("trial   1  filters=8  val_loss=0.3000") and "best=0.3000 (trial 1)" in lines[-1]
    spec = json.loads(open(f"{runner.started[0][0]}/trial.json", encoding="utf-8").read())
    assert (spec["metric"], spec["direction"], spec["goal"]) == ("val_loss", "minimize", 0.3), "the trainer's GoalStop"


def test_the_best_loss_is_the_lowest_and_only_a_trial_as_low_is_scored_apart(tmp_path):
    script = by_filters({4: [0.6], 8: [0.4], 16: [0.5]})
    study, reason, runner = _held_out_loop(tmp_path, script, test=lambda params, reported: reported,
                                           target=dict(LOSS, goal=0.01), budget={"max_trials": 3})
    assert reason == "trial budget spent (3 trials)"
    assert [folder.rsplit("/", 1)[1] for folder in runner.verified] == ["0000", "0001"], "0.5 is worse than 0.4"
    assert study.trials[2].user_attrs["verified"] is False
    assert study_budget.best_trial(study.trials, 0.01, "minimize").number == 1 and study.best_trial.number == 1


def test_a_loss_goal_needs_the_held_out_loss_as_low(tmp_path):
    script = by_filters({4: [0.6], 8: [0.25], 16: [0.2]})
    study, reason, _ = _held_out_loop(tmp_path, script, target=LOSS,
                                      test=lambda params, reported: 0.45 if params["filters"] == 8 else reported)
    overfit, winner = study.trials[1], study.trials[2]
    assert overfit.user_attrs["goal_value"] == 0.45, "the worse of the two losses: the held-out one"
    assert "the held-out test split scores 0.4500: searching on" in overfit.user_attrs["reason"]
    assert reason == "goal reached" and winner.user_attrs["goal_value"] == 0.2


def test_the_pruner_stops_a_trial_whose_loss_stays_high(tmp_path):
    script = by_filters({4: [0.3, 0.3, 0.3, 0.3], 8: [0.9, 0.9, 0.9, 0.9]})
    study, _, _, _, _ = _loop(tmp_path, script, budget={"max_trials": 2}, target=dict(LOSS, goal=0.01),
                              search={"pruner": "median"})
    pruned = study.trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.user_attrs["reason"].startswith("pruned at epoch 2")


def test_a_trial_whose_loss_is_lower_is_not_pruned(tmp_path):
    script = by_filters({4: [0.9, 0.9, 0.9, 0.9], 8: [0.3, 0.3, 0.3, 0.3]})
    study, _, _, _, _ = _loop(tmp_path, script, budget={"max_trials": 2}, target=dict(LOSS, goal=0.01),
                              search={"pruner": "median"})
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


@pytest.mark.parametrize("direction, best_filters", [("minimize", 8), ("maximize", 4)])
def test_escalate_climbs_from_the_best_trial_in_the_studys_direction(direction, best_filters):
    # Trial 2 takes the blocks rung from the best trial: filters 8 (loss 0.4) when minimising, 4 (0.6) when maximising.
    space = {"filters": {"type": "int", "low": 4, "high": 32, "log": True}, "blocks": {"type": "int", "low": 1, "high": 3}}
    sampler = strategies.EscalateSampler(space, ["filters", "blocks"], {"filters": 4, "blocks": 1})
    study = optuna.create_study(direction=direction)
    for filters, value in ((4, 0.6), (8, 0.4)):
        params = {"filters": filters, "blocks": 1}
        study.add_trial(optuna.trial.create_trial(params=params, value=value, user_attrs={"params": params},
                                                  distributions=sampler.infer_relative_search_space(study, None)))
    assert sampler.next_params(study, 2) == {"filters": best_filters, "blocks": 2}


def test_a_study_made_for_another_direction_is_refused_in_one_line(tmp_path):
    config, plan, run_dir = _setup(tmp_path)
    open_study(config, plan, default_storage(run_dir))
    config["target"].update(metric="val_loss", direction="minimize", goal=0.3)
    with pytest.raises(AutotuneError) as caught:
        open_study(config, plan, default_storage(run_dir))
    assert str(caught.value) == (f"target: study 'unit' at {default_storage(run_dir)} was made to maximize val_accuracy, "
                                 "not to minimize val_loss; expected the same target.metric and target.direction, or "
                                 "another study name (study:) for the new target")
