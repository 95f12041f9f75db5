"""Search strategies as Optuna samplers, and the pruners; one registry each.

``tpe`` and ``random`` are Optuna's own samplers. ``escalate`` is the original
pipeline's rule ladder (more filters, the next kernel size, one more block, more
epochs, applied to the best trial so far) written as a BaseSampler subclass, so
the study loop treats every strategy alike. An unknown name is an error.
"""
import copy

import optuna

from ansible.module_utils.autotune import objective
from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.budget import IMPORTED
from ansible.module_utils.autotune.trialdir import reaches


class EscalateSampler(optuna.samplers.BaseSampler):
    """Each trial is the best trial's parameters moved one rung up the ladder, never a set tried before.

    Rungs are taken in turn (trial N starts at rung N-1), each walking its
    hyperparameter up until it meets an untried set. When every rung is at its
    limit the search is exhausted (``exhausted``), and the study loop stops.
    """

    def __init__(self, space, ladder, baseline, seed=None):
        self._space, self._ladder, self._baseline = space, ladder, baseline
        self._distributions = search_space.distributions(space)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def next_params(self, study, number):
        """The parameters trial ``number`` should train, or None when the ladder is exhausted."""
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number and "params" in t.user_attrs]
        if not earlier:
            return dict(self._baseline)
        completed = [t for t in earlier if t.state == optuna.trial.TrialState.COMPLETE]
        best = objective.best(completed, study.direction) or earlier[0]
        tried = {search_space.frozen(t.user_attrs["params"]) for t in earlier}
        step = search_space.escalate(best.user_attrs["params"], self._space, self._ladder, number - 1, tried)
        return step[0] if step else None

    def exhausted(self, study):
        return self.next_params(study, len(study.get_trials(deepcopy=False))) is None

    def infer_relative_search_space(self, study, trial):
        return dict(self._distributions)

    def sample_relative(self, study, trial, search_space):
        params = self.next_params(study, trial.number)
        return {name: params[name] for name in search_space} if params else {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        # Reached only for a parameter outside the ladder's space: keep it random rather than fail.
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


def _tpe(config, plan, seed):
    # constant_liar: trials in flight in other slots (or on other hosts) count as bad, so none draws the same point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config["search"]["startup_trials"], constant_liar=True)


def _random(config, plan, seed):
    return optuna.samplers.RandomSampler(seed=seed)


def _escalate(config, plan, seed):
    return EscalateSampler(plan["space"], plan["ladder"], plan["baseline"], seed=seed)


STRATEGIES = {"tpe": _tpe, "random": _random, "escalate": _escalate}

def _max_epochs(plan):
    """The most epochs a trial of this space can train: the resource multi-fidelity pruners divide."""
    spec = plan["space"].get("epochs")
    return int(spec["high"]) if spec and spec.get("type") == "int" else int(plan["baseline"].get("epochs", 1) or 1)


class AnyOf(optuna.pruners.BasePruner):
    """Stops a trial when any of its pruners would; each is asked at every step, so Hyperband records its rungs."""

    def __init__(self, *pruners):
        self.pruners = pruners

    def prune(self, study, trial):
        return any([pruner.prune(study, trial) for pruner in self.pruners])  # a list: no pruner is skipped


def _hyperband(config, plan):
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(_max_epochs(plan), 3), reduction_factor=3)


# Hyperband judges a trial against the earlier trials of its own bracket only, so the first trial of each bracket
# trains every epoch it may; beside it, the study-wide median of the finished trials at the same epoch (from the
# third) judges those too. Fixed startup of 2: few trials finish under Hyperband (bench/pruner_replay.py's rule).
MEDIAN_BESIDE_HYPERBAND = {"n_startup_trials": 2, "n_warmup_steps": 2}

# Epochs are the resource: each reported epoch is a rung step. ASHA and Hyperband stop a trial at a rung
# (1, 3, 9... epochs) when it is not in the top third there; the median pruner after its first epoch.
PRUNERS = {
    "median": lambda config, plan: optuna.pruners.MedianPruner(
        n_startup_trials=config["search"]["startup_trials"], n_warmup_steps=1),
    "asha": lambda config, plan: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    "hyperband": _hyperband,
    "hyperband+median": lambda config, plan: AnyOf(_hyperband(config, plan),
                                                   optuna.pruners.MedianPruner(**MEDIAN_BESIDE_HYPERBAND)),
    "none": lambda config, plan: optuna.pruners.NopPruner(),
}


def make_sampler(config, plan, n_existing=0):
    """The strategy's sampler; its seed is offset by the trials already stored, so a resumed study draws anew."""
    name = config["search"]["strategy"]
    if name not in STRATEGIES:
        raise AutotuneError(f"search.strategy: {name!r} is unknown; expected one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](config, plan, config["search"]["seed"] + n_existing)


# How a trial's number of epochs is chosen (search.epochs). ``scheduled``: epochs are the fidelity, not a drawn
# hyperparameter: every drawn trial may train the most epochs the space allows and the pruner stops it at a rung
# (1, 3, 9... epochs) when it is not among the best there, so many configurations are judged after one epoch and
# the promising ones go on training in the same process. ``sampled``: the sampler draws epochs like any value.
EPOCH_MODES = ("scheduled", "sampled")
DEFAULT_PRUNER = {"scheduled": "hyperband", "sampled": "median"}


def scheduled_epochs(config, plan):
    """The name of the epochs hyperparameter the pruner schedules (search.epochs: scheduled), or None: epochs are
    sampled, the space has none, or the strategy is escalate (its ladder has an epochs rung of its own)."""
    if config["search"].get("epochs") != "scheduled" or config["search"]["strategy"] == "escalate":
        return None
    return epochs_parameter(plan["space"])


def pruner_name(config, plan):
    """search.pruner, or by default the one that suits how epochs are chosen."""
    name = config["search"].get("pruner")
    if name:
        return name
    return DEFAULT_PRUNER["scheduled" if scheduled_epochs(config, plan) else "sampled"]


def make_pruner(config, plan):
    """The configured pruner, wrapped in Optuna's PatientPruner when search.pruner_patience is set."""
    name = pruner_name(config, plan)
    if name not in PRUNERS:
        raise AutotuneError(f"search.pruner: {name!r} is unknown; expected one of {', '.join(PRUNERS)}")
    pruner = PRUNERS[name](config, plan)
    patience = config["search"].get("pruner_patience")
    return optuna.pruners.PatientPruner(pruner, patience=patience) if patience else pruner


# Accuracy metrics (target.metric without its val_ prefix) whose floor is the largest class's share of the split.
ACCURACY_METRICS = ("accuracy", "acc", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy")
CHANCE_MARGIN = 1  # standard error above the constant answer's accuracy: a nearly constant answer stays below it


def chance_floor(config, constant_answer, n_val):
    """The validation accuracy a trial must pass from search.chance_epochs on, or None (off, ``pruner: none``: no
    trial is stopped early, a metric other than accuracy, or a split whose constant answer is not known): what
    answering the largest class for every image scores (``constant_answer``), plus CHANCE_MARGIN standard errors on
    ``n_val`` images."""
    metric, epochs = config["target"]["metric"], config["search"].get("chance_epochs")
    if (not epochs or config["search"].get("pruner") == "none" or constant_answer is None or not n_val
            or metric.removeprefix("val_") not in ACCURACY_METRICS
            or objective.direction_of(config["target"]["direction"]) != objective.MAXIMIZE):
        return None
    spread = (constant_answer * (1 - constant_answer) / n_val) ** 0.5
    return min(1.0, constant_answer + CHANCE_MARGIN * spread)


class ChanceStop(optuna.pruners.BasePruner):
    """The configured pruner, and a stop for a trial that learned nothing: from search.chance_epochs epochs on, its
    validation accuracy is still below the floor (chance_floor), Optuna's ThresholdPruner says.

    A learning rate that diverged or a dead network scores what one constant answer scores, and Hyperband judges a
    trial only against the earlier trials of its own bracket, so one that came first in its bracket trained every
    epoch (docs/measurements.md, the second workload). ``stopped`` holds the numbers of the trials stopped here.
    """

    def __init__(self, inner, floor, epochs):
        self.inner, self.floor, self.epochs = inner, floor, epochs
        self.below = optuna.pruners.ThresholdPruner(lower=floor, n_warmup_steps=epochs - 1)
        self.stopped = set()

    def prune(self, study, trial):
        if self.below.prune(study, trial):
            self.stopped.add(trial.number)
            return True
        return self.inner.prune(study, trial)

    def reason(self, number, metric):
        """The pruned trial's reason when this stop pruned it, else None."""
        if number not in self.stopped:
            return None
        return f"stopped at chance: {metric} below {self.floor:.3f} after {self.epochs} epochs or more, about " \
               "what one constant answer scores"


class ScoredApartPruner(optuna.pruners.BasePruner):
    """The configured pruner, judging as if the trials whose saved models are being scored apart had finished, and
    by this study's own trials only.

    A candidate is told only once its scores are in (study.py), but its learning curve is known epoch by epoch:
    a trial beside it is judged against that curve at once, not after the scoring (a hopeless trial could
    otherwise train to its end on a fast machine). ``awaiting`` maps such a trial's number to its claimed value.
    Trials imported from earlier studies (learn.py) inform the sampler, not the pruner: counted as finished they
    would end the pruner's startup trials at once, and the earlier best queued after the baseline would be judged
    against the baseline's curve alone.
    """

    def __init__(self, inner):
        self.inner, self.awaiting = inner, {}

    def prune(self, study, trial):
        return self.inner.prune(_WithAwaiting(study, dict(self.awaiting)), trial)


class _WithAwaiting:
    """A study whose trials being scored apart read as COMPLETE with their claimed values, and whose trials imported
    from earlier studies are left out (for a pruner only)."""

    def __init__(self, study, awaiting):
        self._study, self._awaiting = study, awaiting

    def __getattr__(self, name):
        return getattr(self._study, name)

    @property
    def trials(self):
        return self.get_trials()

    def get_trials(self, deepcopy=True, states=None):
        trials = []
        for trial in self._study.get_trials(deepcopy=False):
            if IMPORTED in trial.user_attrs:
                continue
            if trial.number in self._awaiting and trial.state == optuna.trial.TrialState.RUNNING:
                trial = copy.copy(trial)
                trial.state, trial.value = optuna.trial.TrialState.COMPLETE, self._awaiting[trial.number]
            if states is None or trial.state in states:
                trials.append(copy.deepcopy(trial) if deepcopy else trial)
        return trials


def epochs_parameter(space):
    """The searched hyperparameter that is the number of epochs (``epochs``, a script's ``fit.epochs`` or its
    ``EPOCHS`` constant), or None."""
    for name, spec in space.items():
        if name.split(".")[-1].lower() == "epochs" and spec.get("type") == "int":
            return name
    return None


PROMOTION_RUNG = 3  # Hyperband's reduction factor: the best of at least three finished trials is promoted


def promotion(study, space, goal, metric):
    """Hyperband's promotion, one trial at a time: (params, trial number) to train next, or None.

    The best trial so far (of three or more finished), when it ran all its epochs short of the goal and was
    still improving at the last one, is trained again with the most epochs the space allows (a fresh trial
    from epoch 0: its code is the winner's code as it will be committed); the goal stops it as soon as it
    gets there, the pruner when it falls behind. Each trial is promoted once.
    """
    name = epochs_parameter(space)
    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and "params" in t.user_attrs
                 and not t.user_attrs.get("duplicate_of")]
    if not name or len(completed) < PROMOTION_RUNG:
        return None
    best = objective.best(completed, study.direction)
    curve = [record.get(metric) for record in best.user_attrs.get("epochs") or []]
    params, most = best.user_attrs["params"], int(space[name]["high"])
    direction = objective.direction_of(study.direction)
    if (reaches(best.value, goal, direction) or any(t.user_attrs.get("promoted_from") == best.number for t in trials)
            or None in curve or len(curve) != params.get(name) or params[name] >= most
            or (len(curve) > 1 and not objective.improved(curve[-1], curve[-2], direction))):
        return None
    # Names registered at run time after the best trial ran are left to the sampler.
    return {n: (most if n == name else params[n]) for n in space if n in params}, best.number


def exhausted(sampler, study):
    """Why the search cannot go on, when the strategy knows it has nothing left to try; else None."""
    if getattr(sampler, "exhausted", None) and sampler.exhausted(study):
        return "search space exhausted: every ladder rung is at its limit"
    return None
