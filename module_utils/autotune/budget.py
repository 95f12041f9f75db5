"""When a study stops: the goal reached, or a budget (trials, seconds, consecutive failures) spent."""
import optuna

from ansible.module_utils.autotune.objective import best
from ansible.module_utils.autotune.trialdir import MINIMIZE, reaches

COMPLETE, FAIL, WAITING = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                           optuna.trial.TrialState.WAITING)
# A finished trial of an earlier study, given to this study's sampler (learn.py): it was not trained here, so no
# budget, best, goal or report counts it; it only informs the sampler.
IMPORTED = "imported_from"
# A trial asked for past the trial budget: two fleet hosts that checked the budget at the same moment each asked for
# one more. The later one (by number) is failed at once, untrained, and like an imported one never counted or shown.
OVER_BUDGET = "over_budget"


def own(trials):
    """The trials of this study itself: those imported from earlier studies and those asked past the budget left
    out."""
    return [t for t in trials if IMPORTED not in t.user_attrs and OVER_BUDGET not in t.user_attrs]


def superseded(trials):
    """Numbers of trials an interrupted controller left behind and a later trial resumed (they count once)."""
    retried = (optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials)
    return {number for number in retried if number is not None}


def counted(trials):
    gone = superseded(trials)
    return [t for t in own(trials) if t.number not in gone]


def past_budget(trials, number, budget):
    """True when trial ``number`` was asked past the trial budget: as many counted trials come before it as the
    budget allows. Trial numbers are handed out by the storage one at a time, so every worker agrees which it is."""
    return len([t for t in counted(trials) if t.number < number]) >= budget["max_trials"]


def goal_reached_by(trials, goal, direction):
    """The trial that reached the goal (its verified held-out score, ``goal_value``), the best of them if several
    did (in ``direction``: the lowest when minimising); None when none did. A trial's own claim never counts: only
    what the verifier scored (study.py)."""
    reached = [t for t in counted(trials)
               if t.state == COMPLETE and reaches(t.user_attrs.get("goal_value"), goal, direction)]
    return best(reached, direction)


# At most this much (times the goal's size, at least 1) is added to the goal a trial stops itself at.
MAX_STOP_MARGIN = 0.05


def stop_goal(trials, goal, direction):
    """The value a trial's own goal stop waits for (trial.json's ``goal``): the goal, moved past it by the widest gap
    seen between a claim that reached it and the score its saved model had apart (goal_value) when that fell short.

    A trial stops at the first epoch its own validation score reaches the goal; when the scorer apart then finds
    less (another split, a different read of the images), the epochs it had left were never trained, and every
    trial like it stopped at the same epoch again (CI: five trials of 2-6 epochs each stopped after epoch 1 at a
    claimed 0.805, scored 0.795). The controller still judges the goal as before; only where a trial stops moves."""
    gaps = [abs(t.user_attrs["reported_value"] - t.user_attrs["goal_value"]) for t in counted(trials)
            if t.state == COMPLETE and t.user_attrs.get("goal_value") is not None
            and t.user_attrs.get("reported_value") is not None
            and reaches(t.user_attrs["reported_value"], goal, direction)
            and not reaches(t.user_attrs["goal_value"], goal, direction)]
    margin = min(max(gaps, default=0.0), MAX_STOP_MARGIN * max(1.0, abs(goal)))
    return goal - margin if direction == MINIMIZE else goal + margin


def learned_stop_goal(stop_at, learned, goal, direction):
    """The stop goal of a trial queued as an earlier study's best (learn.py): where that best stopped, when it is
    further past the goal than ``stop_at`` and within MAX_STOP_MARGIN of it. The earlier study moved its stop goal
    there because the held-out split refused claims at the goal: retrained, the same model would stop at the same
    refused epoch, then need a continuation (continuation.py) to get where it was."""
    earlier = (learned or {}).get("stop_goal") if isinstance(learned, dict) else None
    if not isinstance(earlier, (int, float)) or isinstance(earlier, bool):
        return stop_at
    margin = goal - earlier if direction == MINIMIZE else earlier - goal
    if not 0 < margin <= MAX_STOP_MARGIN * max(1.0, abs(goal)):
        return stop_at
    return min(stop_at, earlier) if direction == MINIMIZE else max(stop_at, earlier)


def best_trial(trials, goal, direction):
    """The trial reported as the best, always one scored apart: the one that reached the goal, else the best
    verified validation score; None when no trial was scored apart. Progress lines, summary, report, mail and
    the published commit all name this one."""
    reached = goal_reached_by(trials, goal, direction)
    if reached:
        return reached
    verified = [t for t in counted(trials) if t.state == COMPLETE and t.user_attrs.get("verified") is True]
    return best(verified, direction)


def stop_reason(trials, goal, budget, elapsed, direction):
    """Why the study stops now, or None while it goes on."""
    if goal_reached_by(trials, goal, direction):
        return "goal reached"
    trials = counted(trials)
    # A queued trial (the baseline, a continuation, a dead worker's retry) is in the budget once it is asked.
    if len([t for t in trials if t.state != WAITING]) >= budget["max_trials"]:
        return f"trial budget spent ({budget['max_trials']} trials)"
    if elapsed >= budget["max_seconds"]:
        return f"time budget spent ({budget['max_seconds']} s)"
    if trials and trials[0].state == FAIL and trials[0].user_attrs.get("baseline") and \
            trials[0].user_attrs.get("cause") == "model":
        # The committed code itself is broken: every later trial would crash the same way.
        return f"the committed model (trial {trials[0].number}) cannot train: {trials[0].user_attrs.get('reason')}"
    failures = 0
    for trial in reversed(trials):
        if trial.state != FAIL:
            break
        failures += 1
    if failures >= budget["max_consecutive_failures"]:
        return (f"{failures} consecutive trials failed (last: {trials[-1].user_attrs.get('reason', 'unknown')}); "
                "fix the model or raise budget.max_consecutive_failures")
    return None
