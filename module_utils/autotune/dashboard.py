"""What a person watching a study in optuna-dashboard sees beyond Optuna's own records.

optuna-dashboard already shows each trial's params, its per-epoch values (reported with
trial.report) and its user attributes (outcome, reason, ...). This module adds:

* on the study: its goal, metric, strategy and runner as study user attributes, the metric's name
  (instead of "Objective 0"), and a note;
* on each finished trial: a note (optuna_dashboard.save_note) saying how it ended and why,
  its per-epoch values, and the diff of its model code from the baseline's (trial 0);
* the study's address in the dashboard, for the progress header and the mail.

The notes live in the study storage (as optuna-dashboard keeps them), so a dashboard started
later, on another host, shows them too. Writing a note is never worth a tuning run: a failure
is said in one progress line and the loop goes on.
"""
import difflib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import optuna

from ansible.module_utils.autotune import bounded, trialdir
from ansible.module_utils.autotune.objective import relation
from ansible.module_utils.autotune.printable import escape, escape_lines
from ansible.module_utils.autotune.storage import masked_storage, open_study, reused

# A note is stored in chunks of study system attributes; a diff longer than this is cut.
MAX_DIFF_CHARS = 20000


def study_url(base_url, study_id):
    """The study's page in optuna-dashboard served at base_url (None when no dashboard is configured)."""
    if not base_url or study_id is None:
        return None
    return f"{base_url.rstrip('/')}/dashboard/studies/{int(study_id)}"


def study_attrs(config, runner_name):
    """The study user attributes a person filters and reads studies by in the dashboard."""
    target = config["target"]
    return {"goal": target["goal"], "metric": target["metric"], "direction": target["direction"],
            "strategy": config["search"]["strategy"], "runner": runner_name}


def study_note(config, runner_name):
    target, budget = config["target"], config["budget"]
    return "\n".join([
        f"## {config['study']}",
        "",
        f"Goal: **{target['metric']} {relation(target['direction'])} {target['goal']:g}**; strategy **{config['search']['strategy']}**, "
        f"runner **{runner_name}**.",
        "",
        f"Budget: {budget['max_trials']} trials, {budget['max_seconds']} s, {budget['trial_timeout']} s per trial, "
        f"{budget['max_consecutive_failures']} consecutive failures.",
        "",
        "Trial 0 is the committed baseline; each trial's note shows how it ended and its code diff from the baseline.",
    ])


def prepare(config, plan, storage, runner_name, base_url=None, progress=None, notes=None):
    """Open (or create) the study, give it its user attributes and note; return its id and dashboard address.

    Called before the loop, so the progress header can give the address of a study that has no trial yet.
    The note goes through ``notes`` (a Notes writer) when given, else it is written here and now.
    """
    study = open_study(config, plan, storage)
    for name, value in study_attrs(config, runner_name).items():
        study.set_user_attr(name, value)
    study.set_metric_names([config["target"]["metric"]])  # the dashboard's axes say val_accuracy, not "Objective 0"
    (notes or Notes(progress, background=False)).study(study, study_note(config, runner_name))
    study_id = optuna.storages.get_storage(reused(storage)).get_study_id_from_name(study.study_name)
    return {"study_id": study_id, "dashboard_url": study_url(base_url, study_id)}


def _save_note(target, body, what, progress):
    try:
        with bounded.background_import():  # on the notes thread: no bounded child is forked in its middle
            from optuna_dashboard import save_note  # pylint: disable=import-outside-toplevel  # pinned in requirements.txt
        save_note(target, body() if callable(body) else body)
    except Exception as exc:  # pylint: disable=broad-except  # a lost note must not end a tuning run
        if progress:
            progress(f"{what} not saved: {type(exc).__name__}: {masked_storage(str(exc))[:200]}")
        return False
    return True


def _lower_this_threads_priority():
    """Linux gives each thread its own nice value: the notes thread yields the CPU to the trainers."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (OSError, AttributeError):
        pass


class Notes:
    """Writes the dashboard notes, in order, from one low-priority worker thread.

    Importing optuna_dashboard takes seconds (it imports optuna.importance, and scikit-learn where that is
    installed): on the loop's thread it would delay trial 0 and every trial after a note. Here it happens
    while trial 0 trains. ``close()`` waits for the notes still queued. ``background=False`` writes at once
    (tests, and callers without a loop)."""

    def __init__(self, progress=None, background=True):
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autotune-notes") if background else None
        if self.pool:
            self.pool.submit(_lower_this_threads_priority)

    def _submit(self, function, *args):
        if self.pool is None:
            return function(*args)
        self.pool.submit(function, *args)
        return None

    def study(self, study, body):
        return self._submit(_save_note, study, body, "study note", self.progress)

    def trial(self, study, trial, run_dir, metric):
        return self._submit(annotate_trial, study, trial, run_dir, metric, self.progress)

    def close(self):
        if self.pool:
            self.pool.shutdown(wait=True)


def _read_code(run_dir, attrs):
    """The lines of a trial's model code; [] when it has none (a repeat) or it cannot be read safely."""
    if not attrs.get("code"):
        return []
    path = os.path.join(attrs.get("run_dir") or run_dir, attrs["code"])
    try:  # trial folders are writable by the code under test: a link there is never followed
        with trialdir.open_regular(path) as handle:
            return handle.read().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return []


def code_diff(run_dir, baseline, trial):
    """Unified diff of the trial's model code from the baseline's (both FrozenTrials)."""
    diff = "".join(difflib.unified_diff(_read_code(run_dir, baseline.user_attrs), _read_code(run_dir, trial.user_attrs),
                                        fromfile=f"trial {baseline.number}/model.py",
                                        tofile=f"trial {trial.number}/model.py"))
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + f"\n... (cut at {MAX_DIFF_CHARS} characters)\n"
    return diff


def _fence(text):
    """A Markdown code fence that the text itself cannot close."""
    fence = "```"
    while fence in text:
        fence += "`"
    return fence


def trial_note(trial, baseline, run_dir, metric):
    """The Markdown note of one finished trial."""
    attrs = trial.user_attrs
    outcome = escape(attrs.get("outcome", trial.state.name.lower()))
    shown = f"{metric} **{trial.value:.4f}**" if trial.value is not None else trial.state.name
    lines = [f"### Trial {trial.number}: {outcome}, {shown}", ""]
    if attrs.get("test_value") is not None:
        lines += [f"Held-out test {metric[len('val_'):]} **{attrs['test_value']:.4f}** (scored by the controller on "
                  f"images no trial held); the {metric} above is on the validation split the search saw.", ""]
    if attrs.get("reason"):  # written by the trial's own code path: one line, its control characters escaped
        lines += [f"Reason: {escape(attrs['reason'])}", ""]
    if attrs.get("duplicate_of") is not None:
        lines += [f"Same parameters as trial {attrs['duplicate_of']}: answered with its value, not trained again.", ""]
    if attrs.get("resumes_trial") is not None:
        lines += [f"Resumes trial {attrs['resumes_trial']}, whose controller stopped while it ran.", ""]
    values = [record.get(metric) for record in attrs.get("epochs", [])]
    if values:
        lines += [f"{metric} per epoch: " + ", ".join("-" if v is None else f"{v:.4f}" for v in values), ""]
    if trial.number == baseline.number:
        lines.append("The committed baseline model: the trials' diffs start from its code.")
    elif attrs.get("code"):
        diff = code_diff(run_dir, baseline, trial)
        if diff:
            fence = _fence(diff)
            lines += ["Model code, diff from the baseline (trial 0):", "", f"{fence}diff",
                      escape_lines(diff.rstrip("\n")), fence]
        else:
            lines.append("Model code: the same as the baseline's.")
    return "\n".join(lines) + "\n"


def annotate_trial(study, trial, run_dir, metric, progress=None):
    """Save the note of a trial the loop has just told the study (trial: the optuna.Trial it asked for)."""
    def body():
        trials = study.get_trials(deepcopy=False)
        baseline = next((t for t in trials if t.user_attrs.get("baseline")), trials[0])
        return trial_note(trials[trial.number], baseline, run_dir, metric)
    return _save_note(trial, body, f"trial {trial.number:3d}  dashboard note", progress)
