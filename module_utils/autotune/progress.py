"""The one line a person sees per finished trial, and the run's progress log."""
import os
import time

import optuna

from ansible.module_utils.autotune.printable import escape


def _format_params(params, names):
    return " ".join(f"{n}={params[n]:.4g}" if isinstance(params[n], float) else f"{n}={params[n]}"
                    for n in names if n in params)


def trial_line(study, number, metric, names):
    trials = study.get_trials(deepcopy=False)
    trial = trials[number]
    attrs = trial.user_attrs
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(completed, key=lambda t: t.value) if completed else None
    shown = f"{metric}={trial.value:.4f}" if trial.value is not None else attrs.get("outcome", trial.state.name.lower())
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
