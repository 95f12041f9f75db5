"""Results a person reads: summary.json, the plot, the code diff, the mail text and its .eml."""
import difflib
import email.headerregistry
import email.message
import email.policy
import email.utils
import mimetypes
import os
import threading

from ansible.module_utils.autotune import bounded, trialdir, trialtable
from ansible.module_utils.autotune.objective import relation
from ansible.module_utils.autotune.printable import escape, escape_lines

PLOT_NAME = "accuracy_per_trial.png"
SUMMARY_NAME = "summary.json"
_PLOTTING = []  # the thread importing what plot() needs, once started


def import_plotting_ahead():
    """Import matplotlib and Optuna's plots in a thread while the trials train (0.4-0.5 s), so drawing the plot after
    the goal does not wait for them (issue 21). plot() waits for the thread, then imports as before."""
    if not _PLOTTING:
        _PLOTTING.append(threading.Thread(target=_import_plotting, name="import-plotting", daemon=True))
        _PLOTTING[0].start()


def _import_plotting():
    # pylint: disable=import-outside-toplevel,unused-import
    try:
        with bounded.background_import():  # no bounded child is forked in the middle of these imports
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
            import optuna.visualization.matplotlib  # noqa: F401
    except Exception:  # pylint: disable=broad-except  # plot() imports them again and fails there with the reason
        pass


def trial_records(study):
    """One record per trial, from the study storage (the single source of truth)."""
    from ansible.module_utils.autotune.budget import own  # pylint: disable=import-outside-toplevel  # imports optuna

    records = []
    trials = own(study.trials)  # trials imported from earlier studies (learn.py) were not run here
    resumed_as = {attrs.get("resumes_trial"): t.number for t in trials for attrs in [t.user_attrs]
                  if attrs.get("resumes_trial") is not None}
    for t in trials:
        attrs = t.user_attrs
        epochs = attrs.get("epochs", [])
        interrupted = t.number in resumed_as
        records.append({
            "number": t.number,
            "state": t.state.name,
            "outcome": "interrupted" if interrupted else attrs.get("outcome", t.state.name.lower()),
            "value": t.value,
            "params": attrs.get("params", t.params),
            "epochs": epochs,
            "seconds": attrs.get("seconds"),
            "fit_seconds": attrs.get("fit_seconds"),
            "startup_seconds": attrs.get("startup_seconds"),
            "reason": (f"its controller stopped while it ran; resumed as trial {resumed_as[t.number]}"
                       if interrupted else attrs.get("reason")),
            "duplicate_of": attrs.get("duplicate_of"),
            "resumed": attrs.get("resumed", False),
            "relaunches": attrs.get("relaunches", 0),
            "resumed_from_epoch": attrs.get("resumed_from_epoch"),
            "continues": attrs.get("continues"),  # the refused candidate it trained on from (continuation.py)
            "checkpoint_discarded": attrs.get("checkpoint_discarded"),
            "code": attrs.get("code"),
            "trial_dir": attrs.get("trial_dir"),
            "reported_value": attrs.get("reported_value"),
            "verified_value": attrs.get("verified_value"),
            "verified": attrs.get("verified", False),
            "test_value": attrs.get("test_value"),
            "n_test": attrs.get("n_test"),
            "goal_value": attrs.get("goal_value"),
            "log_tail": attrs.get("log_tail"),
        })
    return records


def write_json(path, payload):
    trialdir.write_json(path, payload, default=str)


def write_summary(run_dir, summary):
    """trials.csv, then summary.json naming it: the results a run leaves for people and their tools."""
    summary["trials_csv"] = trialtable.write(run_dir, summary["trials"], summary["metric"])
    write_json(os.path.join(run_dir, SUMMARY_NAME), summary)


def plot(study, goal, metric, path):
    """Optuna's optimisation-history plot (each trial and the best so far) with the goal drawn in."""
    # optuna and matplotlib only here and in trial_records (tune_model): tune_report, which only writes the
    # message, never pays their imports.
    for thread in _PLOTTING:
        thread.join()
    import matplotlib  # pylint: disable=import-outside-toplevel
    import optuna  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    ax = optuna.visualization.matplotlib.plot_optimization_history(_run_here(study), target_name=metric)
    ax.axhline(goal, color="tab:green", linestyle="--", label=f"goal {goal:g}")
    ax.set_title(f"{study.study_name}: {metric} per trial")
    ax.legend(loc="best")  # the curve climbs when maximising and falls when minimising
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=100)
    plt.close(ax.figure)
    return path


def _run_here(study):
    """The study as plotted: a trial imported from an earlier study (learn.py) shows as a gap at its number, neither a
    point nor the best so far (it was not trained here)."""
    import optuna  # pylint: disable=import-outside-toplevel

    from ansible.module_utils.autotune.budget import IMPORTED, own  # pylint: disable=import-outside-toplevel

    trials = study.get_trials(deepcopy=False)
    if len(own(trials)) == len(trials):
        return study
    view = optuna.create_study(study_name=study.study_name, direction=study.direction)  # in memory
    view.add_trials([t if IMPORTED not in t.user_attrs else optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params=t.params, distributions=t.distributions) for t in trials])
    return view


def code_diff(baseline_path, best_path):
    def read(path):
        try:  # trial folders are writable by the code under test: a link there is never followed
            with trialdir.open_regular(path) as handle:
                return handle.read().splitlines(keepends=True)
        except (OSError, TypeError):
            return []
    return "".join(difflib.unified_diff(read(baseline_path), read(best_path),
                                        fromfile="baseline/model.py", tofile="best/model.py"))


def _figure(value):
    return f"{value:.4f}" if value is not None else "-"


def _table(records, metric, searched):
    rows = [f"{'#':>3}  {'outcome':<10} {metric:>12} {'test':>7} {'seconds':>8}  searched hyperparameters"]
    for r in records:
        shown = {k: v for k, v in r["params"].items() if not searched or k in searched}
        params = " ".join(_param(k, v) for k, v in sorted(shown.items()))
        rows.append(f"{r['number']:>3}  {escape(r['outcome']):<10} {_figure(r['value']):>12} "
                    f"{_figure(r.get('test_value')):>7} {r['seconds'] or 0:>8.1f}  {params}")
    return "\n".join(rows)


def _param(name, value):
    """name=value, escaped: a hyperparameter named at run time by the code under test may hold CR/LF or ESC."""
    return f"{escape(name)}={value:.4g}" if isinstance(value, float) else f"{escape(name)}={escape(value)}"


def _test_name(summary):
    """The metric as scored on the held-out split: val_auc's "auc" (summaries before target.metric: accuracy)."""
    return (summary.get("test") or {}).get("metric") or "accuracy"


def score_lines(summary):
    """The two figures and which is which: the held-out test score (the headline) and the validation score."""
    test = summary.get("test") or {}
    error = f" ± {test['standard_error']:.3f}" if test.get("standard_error") is not None else ""
    lines = [f"Held-out test {_test_name(summary)}: {_figure(summary.get('best_test_value'))}{error} on "
             f"{test.get('n') or '?'} images ({escape(test.get('source') or 'unknown')}) the search never trained or "
             "chose on; measured by the controller's verifier, not by the trial.",
             f"Validation {summary['metric']}: {_figure(summary['best_value'])} (the split the search saw; "
             "re-scored apart from the trial)."]
    if test.get("caveat"):
        lines.append(f"Caveat: the test score was {test['caveat']}.")
    return lines


def verdict(summary):
    """The run's last line for a person: the goal reached or not, and why; never a blank value.

    When no trial completed there is no best value to compare: the line says so and gives the first
    trial's outcome and reason (with max_trials: 1, trial 0's failure is the whole story)."""
    metric, goal, stop = summary["metric"], summary["goal"], escape(summary["stop_reason"])
    if summary["best_value"] is not None:
        direction, tested = summary.get("direction", "maximize"), summary.get("best_test_value")
        word = "reached" if summary["reached"] else "not reached"
        # The goal needs both figures; each is compared on its own, so a validation score that fell short while
        # the held-out one passed is named rather than shown as "0.82 < 0.8".
        test_ok = summary["reached"] or trialdir.reaches(tested, goal, direction)
        test_part = f"best held-out test {_test_name(summary)} {_figure(tested)} {relation(direction, test_ok)} {goal:g}"
        search_part = f"{metric} {summary['best_value']:.4f}"
        if test_ok and not summary["reached"]:
            search_part = f"but {search_part} {relation(direction, False)} {goal:g}"
        return f"Goal {word}: {test_part} ({search_part}; trial {summary['best_trial']}; {stop})"
    first = (summary.get("trials") or [{}])[0]
    why = (f"; trial {first['number']} {escape(first.get('outcome') or 'failed')}: "
           f"{escape(first.get('reason') or 'no reason recorded')}" if first else "")
    return f"Goal not reached: no trial completed ({summary['n_trials']} trial(s){why}); stopped: {stop}"


def learned_lines(summary):
    """What the study started from (learn.py): one line per earlier study, or why none; nothing when not asked."""
    learned = summary.get("learned")
    if not isinstance(learned, dict):
        return []
    return [f"Learned: {escape(line)}" for line in learned.get("lines") or []]


def message(summary, records, diff):
    """Subject and plain-text body of the result mail."""
    reached = "reached" if summary["reached"] else "NOT reached"
    subject = escape(f"[autotune] {summary['study']}: goal {summary['goal']:g} {reached} "
                     f"(held-out test {_figure(summary.get('best_test_value'))}, {summary['metric']} "
                     f"{_figure(summary['best_value'])}, after {summary['n_trials']} trials)")
    params = "\n".join(f"  {escape(k)}: {escape(v)}" for k, v in sorted((summary["best_params"] or {}).items()))
    tested = _test_name(summary)
    summary = {key: escape(value) if isinstance(value, str) else value for key, value in summary.items()}
    body = "\n".join([
        f"Study {summary['study']}: goal {summary['goal']:g} {reached} on the held-out test split.",
        *score_lines(summary),
        f"Best trial: {summary['best_trial']}; stopped because: {summary['stop_reason']}.",
        f"Trials: {summary['n_trials']}; runner: {summary['runner']}; storage: {summary['storage']}.",
        *learned_lines(summary),
        f"Run directory: {summary['run_dir']}",
        *([f"Dashboard: {summary['dashboard_url']}"] if summary.get("dashboard_url") else []),
        "",
        "Winning hyperparameters:",
        params or "  (none)",
        "",
        f"All trials (test: held-out {tested}, scored for the trials that could be the best):",
        _table(records, summary["metric"], summary.get("searched")),
        "",
        "Baseline model code -> winning model code:",
        escape_lines(diff) if diff else "(no difference: the baseline won)",
        "",
        f"Attached: {PLOT_NAME} ({summary['metric']} per trial, goal line dashed).",
    ])
    return subject, escape_lines(body)


def write_eml(path, sender, recipients, subject, body, attachments):
    """The same message the mail task would send, as an RFC 5322 file (when no SMTP host is set).

    Built with the standard library's header objects (email.policy.default): addresses go in as
    email.headerregistry.Address, so CR/LF can never start a header of their own; a value that would
    raises ValueError here instead of being written."""
    msg = email.message.EmailMessage(policy=email.policy.default)
    msg["From"] = email.headerregistry.Address(addr_spec=sender)
    msg["To"] = [email.headerregistry.Address(addr_spec=r) for r in recipients] or "undisclosed-recipients:;"
    msg["Subject"] = escape(subject)
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain="autotune.local")
    msg.set_content(escape_lines(body))
    for attachment in attachments:
        kind = mimetypes.guess_type(attachment)[0] or "application/octet-stream"
        with open(attachment, "rb") as handle:
            data = handle.read()
        if kind.startswith("text/"):
            msg.add_attachment(data.decode("utf-8", "replace"), subtype=kind.split("/")[1],
                               filename=os.path.basename(attachment))
        else:
            msg.add_attachment(data, maintype=kind.split("/")[0], subtype=kind.split("/")[1],
                               filename=os.path.basename(attachment))
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(bytes(msg))
    os.replace(tmp, path)
    return path


def failure_message(study, step, reason, run_dir, context=None, during=False):
    """Subject and body of the mail sent when a run fails: before tuning (no trial was trained), or ``during`` it (the
    storage lost, a full disk, a crash of the module), then with what was kept and how to resume."""
    reason = (reason or "").strip() or "no reason given"
    study, step, run_dir = escape(study), escape(step), escape(run_dir)
    when = "while tuning" if during else "before tuning"
    subject = f"[autotune] {study}: FAILED {when} at '{step}': {escape(reason.splitlines()[0][:200])}"
    lines = [f"The run for {study} stopped {when}" + ("." if during else "; no trial was trained."),
             f"Step: {step}",
             f"Reason: {escape(reason)}",
             f"Run directory: {run_dir}"]
    lines += [f"{escape(key.capitalize())}: {escape(value)}" for key, value in sorted((context or {}).items()) if value]
    if during:
        lines += ["", *_kept(run_dir), "",
                  "To resume, fix the cause and run the same command again: the study resumes from its storage, "
                  "finished trials are kept and a trial that was running resumes from its last checkpoint."]
    else:
        lines += ["", "Fix the cause and push again, or re-run the pipeline for this commit."]
    return subject, "\n".join(lines)


def _kept(run_dir):
    """What a run that failed while tuning leaves: its trial folders, and the last progress line (the best so far)."""
    trials = os.path.join(run_dir, "trials")
    folders = sorted(name for name in (os.listdir(trials) if os.path.isdir(trials) else ()) if name.isdigit())
    kept = [f"Kept: {len(folders)} trial folder(s) in {trials}, and the study's finished trials in its storage."]
    try:  # the log's end, read from its last bytes only (trialdir.read_tail): a long run's log is never read whole
        last = [line for line in trialdir.read_tail(os.path.join(run_dir, "progress.log"), 200) if " best=" in line][-1:]
    except (OSError, trialdir.TrialFileError):
        last = []
    return kept + [f"Last trial recorded: {escape(line)}" for line in last]


def notify_from_config(path):
    """notify.to, notify.sender and notify.pusher of a tune configuration that may be invalid; ([], None, False)
    when unreadable."""
    import yaml  # pylint: disable=import-outside-toplevel

    try:
        with open(path, encoding="utf-8") as handle:
            notify = (yaml.safe_load(handle) or {}).get("notify") or {}
        recipients = notify.get("to") or []
        recipients = [recipients] if isinstance(recipients, str) else recipients
        sender = notify.get("sender")
        return ([r for r in recipients if isinstance(r, str)],
                sender if isinstance(sender, str) else None, notify.get("pusher") is True)
    except (OSError, TypeError, ValueError, AttributeError, yaml.YAMLError):
        return [], None, False
