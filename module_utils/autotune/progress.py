"""The one line a person sees per finished trial, and the run's progress log."""
import os
import time

import optuna

from ansible.module_utils.autotune.budget import best_trial
from ansible.module_utils.autotune.objective import direction_of
from ansible.module_utils.autotune.printable import escape


def _format_params(params, names):
    return " ".join(f"{n}={params[n]:.4g}" if isinstance(params[n], float) else f"{n}={params[n]}"
                    for n in names if n in params)


def trial_line(study, number, metric, names, goal):
    """The trial's parameters and value, with its held-out score when it was scored apart, and the best so far
    (budget.best_trial: the one the report will name)."""
    trials = study.get_trials(deepcopy=False)
    trial = trials[number]
    attrs = trial.user_attrs
    best = best_trial(trials, goal, direction_of(study.direction))
    shown = f"{metric}={trial.value:.4f}" if trial.value is not None else attrs.get("outcome", trial.state.name.lower())
    if attrs.get("test_value") is not None:
        shown += f" (held-out {attrs['test_value']:.4f})"
    best_text = f"best={best.value:.4f} (trial {best.number})" if best else "best=-"
    line = (f"trial {number:3d}  {_format_params(attrs.get('params', {}), names)}  "
            f"{shown}  {attrs.get('seconds', 0):.1f}s  {best_text}")
    if attrs.get("reason") and trial.state != optuna.trial.TrialState.COMPLETE:
        line += f"  [{attrs['reason']}]"
    return line


class ProgressLog:
    """Keeps the lines, and appends each, time-stamped, to the run's progress.log and the live file
    the progress callback plugin follows (AUTOTUNE_PROGRESS_FILE).

    Every line is escaped first (printable.escape): hyperparameter names, values and failure reasons come
    from the code under test, and a CR/LF or an ANSI escape in them must not forge a line or drive a terminal."""

    def __init__(self, run_dir):
        self.lines = []
        self.paths = [p for p in (os.path.join(run_dir, "progress.log"), os.environ.get("AUTOTUNE_PROGRESS_FILE")) if p]

    def __call__(self, line):
        line = escape(line)
        self.lines.append(line)
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n"
        for path in self.paths:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(stamped)
