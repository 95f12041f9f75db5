"""Which way the target metric is better (target.direction), for every place that compares trial values.

``maximize`` (accuracy, AUC, precision, recall) or ``minimize`` (a loss). The goal test itself is
trialdir.reaches, which the trainer's GoalStop shares; this module holds the comparisons only the
controller makes: the best of several trials, the worse of two scores, and the words a report uses.
"""
import sys

from ansible.module_utils.autotune.trialdir import MAXIMIZE, MINIMIZE, default_direction  # noqa: F401

DIRECTIONS = (MAXIMIZE, MINIMIZE)


def direction_of(direction):
    """"maximize" or "minimize", from either word or an Optuna StudyDirection (study.direction)."""
    # A StudyDirection exists only once optuna is imported: the report path (tune_report) never imports it (0.3 s).
    optuna = sys.modules.get("optuna")
    if optuna is not None and isinstance(direction, optuna.study.StudyDirection):
        return MINIMIZE if direction == optuna.study.StudyDirection.MINIMIZE else MAXIMIZE
    return direction


def at_least_as_good(value, other, direction):
    return value <= other if direction_of(direction) == MINIMIZE else value >= other


def best(trials, direction):
    """The trial with the best value (the lowest when minimising); None when there is none."""
    if not trials:
        return None
    pick = min if direction_of(direction) == MINIMIZE else max
    return pick(trials, key=lambda t: t.value)


def worse(value, other, direction):
    """The worse of two scores: the goal needs both the validation and the held-out score to reach it."""
    return max(value, other) if direction_of(direction) == MINIMIZE else min(value, other)


def improved(last, before, direction):
    """Whether a learning curve still improved from ``before`` to ``last``."""
    return last < before if direction_of(direction) == MINIMIZE else last > before


def relation(direction, reached=True):
    """The comparison a goal line shows: '>=' / '<' when maximising, '<=' / '>' when minimising."""
    if direction_of(direction) == MINIMIZE:
        return "<=" if reached else ">"
    return ">=" if reached else "<"
