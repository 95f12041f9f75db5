"""search.epochs (issue 21 item 3): epochs as the fidelity the pruner schedules, or a hyperparameter the sampler draws.

The study loop against the in-memory runner (tests/fakes.py); the same loop with real training is
tests/integration/test_tune_e2e.py, and which default is faster is measured by bench/peers.py.
"""
import optuna
import pytest

from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune import strategies
from test_study_loop import _loop, _setup

SPACE = {"filters": {"type": "int", "low": 4, "high": 32, "log": True},
         "epochs": {"type": "int", "low": 1, "high": 6}}


def _tpe(**search):
    return dict({"strategy": "tpe", "space": SPACE, "startup_trials": 2, "pruner": None}, **search)


@pytest.mark.parametrize("search, scheduled, pruner", [
    (_tpe(), "epochs", "hyperband"),                          # the default: the pruner schedules epochs
    (_tpe(epochs="sampled"), None, "median"),                 # today's behaviour, one setting away
    (_tpe(pruner="asha"), "epochs", "asha"),                  # a pruner named is the pruner used
    (_tpe(strategy="escalate", ladder=["filters", "epochs"]), None, "median"),  # the ladder has its own epochs rung
    (_tpe(space={"filters": SPACE["filters"]}), None, "median"),  # no epochs to schedule
])
def test_the_schedule_and_its_pruner_follow_the_configuration(tmp_path, search, scheduled, pruner):
    config, plan, _ = _setup(tmp_path, search=search)
    assert strategies.scheduled_epochs(config, plan) == scheduled
    assert strategies.pruner_name(config, plan) == pruner


def test_an_unknown_epochs_mode_is_refused_in_one_line(tmp_path):
    with pytest.raises(Exception) as raised:
        _setup(tmp_path, search=_tpe(epochs="guessed"))
    assert "search.epochs" in str(raised.value) and "scheduled" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_drawn_trial_may_train_the_most_epochs_and_a_queued_one_keeps_its_own():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    study.enqueue_trial({"filters": 8, "epochs": 2})
    queued = study.ask()
    fixed = study.get_trials(deepcopy=False)[queued.number].system_attrs.get("fixed_params") or {}
    assert search_space.suggest(queued, SPACE, {"filters": 4, "epochs": 1}, "epochs", fixed) == {"filters": 8,
                                                                                                 "epochs": 2}
    drawn = study.ask()
    params = search_space.suggest(drawn, SPACE, {"filters": 4, "epochs": 1}, "epochs")
    assert params["epochs"] == 6 and "epochs" not in drawn.params, "the sampler never models the epochs"
    assert search_space.suggest(study.ask(), SPACE, {"filters": 4, "epochs": 1})["epochs"] in range(1, 7)


def _curve(params):
    """Wide models keep climbing to the goal; narrow ones stay flat below them from the first epoch on."""
    if params["filters"] >= 20:
        return [0.75, 0.8, 0.85, 0.92, 0.95, 0.96]
    return [0.4 + params["filters"] / 100] * 6


def test_the_pruner_stops_hopeless_trials_at_an_early_rung_and_lets_the_promising_one_reach_the_goal(tmp_path):
    # Each drawn trial may train six epochs; those below the best at a rung are stopped there, one that keeps
    # climbing trains on in the same process (no retraining from epoch 0) until it reaches the goal.
    study, reason, _, _, _ = _loop(tmp_path, _curve, target={"goal": 0.95}, budget={"max_trials": 40}, search=_tpe())
    trained = [t for t in study.trials if t.user_attrs.get("outcome") != "duplicate"]
    assert reason == "goal reached"
    assert all(t.user_attrs["params"]["epochs"] == 6 for t in trained[1:]), "drawn trials may train the most epochs"
    assert trained[0].user_attrs["params"]["epochs"] == trained[0].params["epochs"], "trial 0 keeps its own epochs"
    pruned = [t for t in trained if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(len(t.user_attrs["epochs"]) < 6 for t in pruned), "hopeless ones stop before their end"
    winner = max(study.trials, key=lambda t: t.value or 0)
    assert winner.user_attrs["params"]["filters"] >= 20 and winner.value >= 0.95
    assert sum(len(t.user_attrs["epochs"]) for t in trained) < 6 * len(trained), "fewer epochs than all trained out"
