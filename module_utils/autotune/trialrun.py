"""One trial across the runner boundary: prepare its folder, follow it while it trains, say how it ended.

Everything here talks to a TrialProcess (runners/base.py), never to a process,
a container or the trial folder's files directly, so any runner kind fits.
"""
import json
import os
import shutil
import time

import optuna

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.modelcode import code_for

POLL_SECONDS = 0.2
VERIFIED = "verified.json"  # written by autotune_trainer.verify
# What the trainer's result.json may add to the trial's record.
RESULT_FIELDS = ("fit_seconds", "startup_seconds", "resumed_from_epoch", "checkpoint_discarded")


def prepare(trial_dir, code_path, plan, config, number, params):
    """A fresh trial folder holding the trial's model code and spec (trial.json).

    The code is also kept at ``code_path``, outside the folder the trial can write: what is reported,
    mailed and committed as this trial's code is that copy, whatever the trial does to its folder.
    """
    if os.path.lexists(trial_dir):
        shutil.rmtree(trial_dir)  # left by a run that died before the trial was recorded
    os.makedirs(trial_dir)
    code = code_for(plan, params, number)
    os.makedirs(os.path.dirname(code_path), exist_ok=True)
    for path in (code_path, os.path.join(trial_dir, trialdir.MODEL)):
        with trialdir.open_regular(path, "w") as handle:
            handle.write(code)
    target = config["target"]
    spec = {
        "number": number, "params": params, "model_file": trialdir.MODEL, "model_api": plan["api"],
        "metric": target["metric"], "goal": target["goal"], "stop_at_goal": target["stop_at_goal"],
        "seed": config["search"]["seed"], "defaults": plan.get("training_defaults", {}),
    }
    trialdir.write_json(os.path.join(trial_dir, trialdir.SPEC), spec)


class Followed:
    """What was seen while a trial ran."""

    def __init__(self):
        self.epochs, self.code, self.pruned, self.timed_out = [], None, False, False
        self.started = time.time()
        self.seconds = 0.0


def follow(process, trial, metric, timeout):
    """Poll the trial until it ends, is pruned or times out; each new epoch is reported to Optuna as it appears."""
    seen = Followed()
    while seen.code is None:
        seen.code = process.exit_code()
        for record in process.new_epochs():
            seen.epochs.append(record)
            value = record.get(metric)
            if value is not None:
                trial.report(float(value), step=len(seen.epochs) - 1)
                seen.pruned = seen.pruned or trial.should_prune()
        if seen.code is not None or seen.pruned:
            break
        if time.time() - seen.started > timeout:
            seen.timed_out = True
            break
        time.sleep(POLL_SECONDS)
    if seen.code is None:
        process.stop()
    seen.seconds = round(time.time() - seen.started, 3)
    return seen


def replay(process, trial, metric):
    """A trial that finished unwatched: report its epochs to Optuna as if they had been followed."""
    seen = Followed()
    seen.code = process.exit_code()
    seen.epochs = process.new_epochs()
    for step, record in enumerate(seen.epochs):
        if record.get(metric) is not None:
            trial.report(float(record[metric]), step=step)
    return seen


def conclude(process, seen, metric, timeout):
    """(state, value, attrs) of a trial that ended: finished, pruned, timed out, or failed with its reason."""
    status, detail = process.outcome()
    result = process.result()
    attrs = {"seconds": seen.seconds, "epochs": seen.epochs}
    attrs.update({k: result[k] for k in RESULT_FIELDS if k in result})
    health = process.health()
    if health:
        attrs["relaunches"] = health.get("relaunches", 0)
    if seen.pruned:
        attrs.update(outcome="pruned",
                     reason=f"pruned at epoch {len(seen.epochs)}: {metric} below the median of earlier trials")
        return optuna.trial.TrialState.PRUNED, None, attrs
    if seen.timed_out:
        attrs.update(outcome="timed_out", reason=f"timed out after {timeout:.0f} s")
        return optuna.trial.TrialState.FAIL, None, attrs
    if status == "finished" and result.get("status") == "ok" and _number(result.get("value")):
        attrs["outcome"] = "finished"
        return optuna.trial.TrialState.COMPLETE, float(result["value"]), attrs
    attrs["outcome"] = "oom" if status == "killed" else ("nan" if result.get("status") == "nan" else "failed")
    last_lines = process.log_tail()
    attrs["log_tail"] = last_lines
    attrs["reason"] = str(result.get("reason") or detail or "failed")[:500]
    if attrs["outcome"] == "failed" and last_lines:
        attrs["reason"] = f"{attrs['reason']}: {last_lines[-1][:300]}"
    return optuna.trial.TrialState.FAIL, None, attrs


def verify(runner, trial_dir, out_dir, data_path, labels, timeout=600):
    """The validation accuracy of the trial's saved model, measured apart from it: (value, None) or (None, why)."""
    if os.path.lexists(out_dir):
        shutil.rmtree(out_dir)
    process = runner.verify(trial_dir, data_path, out_dir, labels)
    started = time.time()
    try:
        while process.exit_code() is None:
            if time.time() - started > timeout:
                process.stop()
                return None, f"scoring the saved model took over {timeout} s"
            time.sleep(POLL_SECONDS)
        measured = trialdir.read_json(os.path.join(out_dir, VERIFIED), {}) or {}
        if _number(measured.get("val_accuracy")):
            return float(measured["val_accuracy"]), None
        last = process.log_tail(1)
        return None, f"the saved model could not be scored ({last[-1][:300] if last else 'no output'})"
    finally:
        process.cleanup()


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and json.dumps(value) not in ("NaN", "Infinity")
