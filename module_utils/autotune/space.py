"""Search spaces: how a trial's hyperparameters are drawn, and the escalate rule ladder."""
import json
import re

import optuna

from ansible.module_utils.autotune.errors import AutotuneError


def frozen(params):
    """A hashable, order-free form of a parameter set (to spot repeats)."""
    return json.dumps(params, sort_keys=True)


def suggest(trial, space, baseline, scheduled=None, fixed=()):
    """Ask an Optuna trial for every searched value; the rest keep their baseline value.

    ``scheduled`` names the epochs hyperparameter the pruner schedules (strategies.scheduled_epochs): a drawn trial
    gets the most epochs of its range, and the sampler never models it; a queued trial (``fixed``: the names
    it was queued with, e.g. the committed baseline) keeps its value."""
    params = dict(baseline)
    for name, spec in space.items():
        kind = spec["type"]
        if name == scheduled and name not in fixed:
            params[name] = int(spec["high"])
            continue
        if kind == "int":
            params[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]),
                                             step=int(spec.get("step", 1)), log=bool(spec.get("log", False)))
        elif kind == "float":
            params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               step=spec.get("step"), log=bool(spec.get("log", False)))
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        else:
            params[name] = trial.suggest_categorical(name, [False, True])
    return params


def distributions(space):
    """The Optuna distributions ``suggest`` asks for, by name (a sampler that proposes whole sets needs them)."""
    found = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "int":
            found[name] = optuna.distributions.IntDistribution(
                int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)), step=int(spec.get("step", 1)))
        elif kind == "float":
            found[name] = optuna.distributions.FloatDistribution(
                float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)), step=spec.get("step"))
        elif kind == "categorical":
            found[name] = optuna.distributions.CategoricalDistribution(list(spec["choices"]))
        else:
            found[name] = optuna.distributions.CategoricalDistribution([False, True])
    return found


def check(space, baseline, field="search.space"):
    """Every searched name must be a hyperparameter of the model, and the baseline inside its range."""
    lines = []
    for name, spec in space.items():
        if name not in baseline:
            lines.append(f"{field}.{name}: not a hyperparameter of the model; expected one of {sorted(baseline)}")
            continue
        if spec.get("log") and spec.get("step") not in (None, 1) and spec["type"] in ("int", "float"):
            lines.append(f"{field}.{name}: log and step are both set; expected only one of them")
        if not contains(spec, baseline[name]):
            lines.append(f"{field}.{name}: baseline value {baseline[name]!r} is outside {spec!r}; "
                         "expected the committed baseline inside the searched range")
    return lines


def contains(spec, value):
    kind = spec["type"]
    if kind == "categorical":
        return value in spec["choices"]
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return spec["low"] <= value <= spec["high"]


def _next_value(spec, value):
    """The ladder's next step for one hyperparameter, or None when it cannot grow."""
    kind = spec["type"]
    if kind == "categorical":
        choices = list(spec["choices"])
        index = choices.index(value) if value in choices else -1
        return choices[index + 1] if index + 1 < len(choices) else None
    if kind == "bool":
        return True if value is False else None
    if value >= spec["high"]:
        return None
    if spec.get("log"):
        grown = value * 2
    else:
        grown = value + (spec.get("step") or (1 if kind == "int" else (spec["high"] - spec["low"]) / 4))
    grown = min(grown, spec["high"])
    return int(round(grown)) if kind == "int" else float(grown)


def escalate(best_params, space, ladder, start_rung, tried):
    """Apply the ladder's rungs to the best parameters so far, from ``start_rung`` on.

    Each rung walks its hyperparameter up (more filters, the next kernel size,
    one more block, more epochs) until it meets a parameter set not tried yet.
    Returns (params, rung index, rung name), or None when every rung is at its limit.
    """
    for offset in range(len(ladder)):
        rung = (start_rung + offset) % len(ladder)
        name = ladder[rung]
        value = best_params[name]
        while True:
            value = _next_value(space[name], value)
            if value is None:
                break
            candidate = dict(best_params, **{name: value})
            if frozen(candidate) not in tried:
                return candidate, rung, name
    return None


def check_ladder(ladder, space):
    missing = [name for name in ladder if name not in space]
    if missing:
        raise AutotuneError(f"search.ladder: {missing} not in the search space; expected names from {sorted(space)}")


# At most this many names a build_model(hp) builds at run time join the search (in all, over the study), each a
# printable identifier: 20,000 names cost the controller about 90 s per trial and lines of 500 KB (issue 20).
MAX_REGISTERED = 100
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_SHOWN = 5  # problem lines shown one by one; the rest are counted in one line


def registered(seen, baseline, room=MAX_REGISTERED):
    """Of the names a trial's build_model(hp) asked for at run time (trainer hp.py), those new to the model with a
    valid range, at most ``room`` of them: ({name: spec}, {name: default}, [lines: names left out and why])."""
    space, defaults, lines, over = {}, {}, [], 0
    for name, entry in sorted(seen.items(), key=lambda item: str(item[0])):
        if name in baseline or not isinstance(entry, dict) or entry.get("spec") is None:
            continue  # known already, or hp.Fixed: nothing to search
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
            lines.append(f"hyperparameter {ascii(str(name)[:40])}: not a printable identifier; expected letters, "
                         "digits, '_', '.', '-' (at most 64, not starting with a digit)")
            continue
        if len(space) >= room:
            over += 1
            continue
        problems = _registration_problems(name, entry)
        if problems:
            lines.extend(problems)
            continue
        space[name], defaults[name] = entry["spec"], entry.get("default")
    shown = lines[:_SHOWN] + ([f"{len(lines) - _SHOWN} more names with the same kinds of problems"]
                              if len(lines) > _SHOWN else [])
    if over:
        shown.append(f"{over} more names: at most {MAX_REGISTERED} hyperparameters may be registered at run time")
    return space, defaults, shown


def _registration_problems(name, entry):
    spec, default = entry["spec"], entry.get("default")
    if not isinstance(spec, dict) or spec.get("type") not in ("int", "float", "categorical", "bool") or \
            (spec["type"] in ("int", "float") and not all(isinstance(spec.get(k), (int, float)) for k in ("low", "high"))) \
            or (spec["type"] == "categorical" and not isinstance(spec.get("choices"), list)):
        return [f"hyperparameter.{name}: {str(spec)[:200]} is not a range autotune can search; expected hp.Int, "
                "hp.Float, hp.Choice or hp.Boolean with literal bounds"]
    return check({name: spec}, {name: default}, field="hyperparameter")
