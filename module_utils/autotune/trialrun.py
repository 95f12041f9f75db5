"""One trial across the runner boundary: prepare its folder, follow it while it trains, say how it ended.

Following is one poll at a time (``Running.step``), so the study loop keeps several trials in flight, one per slot.

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
SPLIT = "split.json"        # the validation images it scores, for a model that reads images itself (a script)
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


class Running:
    """One trial in flight: its Optuna trial, its process, and what was seen of it so far."""

    def __init__(self, trial, params, trial_dir, labels, process, timeout):
        self.trial, self.params, self.trial_dir, self.labels = trial, params, trial_dir, labels
        self.process, self.timeout = process, timeout
        self.epochs, self.code, self.pruned, self.timed_out, self.stopped = [], None, False, False, None
        self.started = time.time()
        self.seconds = 0.0
        self.watch, self.capped = None, None  # trialcaps.FolderWatch; (outcome, line) once a cap is passed

    @property
    def number(self):
        return self.trial.number

    def step(self, metric):
        """One poll: report new epochs to Optuna (which may prune), check the end and the timeout.
        Returns True once the trial is over (its process ended, or was stopped here)."""
        self.code = self.process.exit_code()
        for record in self.process.new_epochs():
            self.epochs.append(record)
            value = record.get(metric)
            if value is not None:
                self.trial.report(float(value), step=len(self.epochs) - 1)
                if not self.pruned and self.trial.should_prune():
                    # The epoch it was pruned at: a fast trainer may have written the next ones before it stops.
                    self.pruned = len(self.epochs)
        if self.code is None and not self.pruned and time.time() - self.started > self.timeout:
            self.timed_out = True
        if self.code is None and self.watch is not None and not self.capped:
            self.capped = self.watch.check()
        if self.code is None and (self.pruned or self.timed_out or self.capped):
            self.process.stop()
        over = self.code is not None or self.pruned or self.timed_out or bool(self.capped)
        if over:
            self.seconds = round(time.time() - self.started, 3)
        return over

    def stop(self, why):
        """End it on purpose from outside (another slot reached the goal)."""
        self.stopped = why
        self.process.stop()
        self.seconds = round(time.time() - self.started, 3)

    def replay(self, metric):
        """A trial that finished unwatched: report its epochs to Optuna as if they had been followed."""
        self.code = self.process.exit_code()
        self.epochs = self.process.new_epochs()
        for step, record in enumerate(self.epochs):
            if record.get(metric) is not None:
                self.trial.report(float(record[metric]), step=step)
        return self


def conclude(seen, metric):
    """(state, value, attrs) of a trial that ended: finished, pruned, stopped, timed out, or failed with its reason."""
    process = seen.process
    status, detail = process.outcome()
    result = process.result()
    attrs = {"seconds": seen.seconds, "epochs": seen.epochs}
    attrs.update({k: result[k] for k in RESULT_FIELDS if k in result})
    health = process.health()
    if health:
        attrs["relaunches"] = health.get("relaunches", 0)
    if seen.capped:  # its folder passed runner.max_trial_bytes, or the disk its floor (trialcaps.py)
        attrs.update(outcome=seen.capped[0], reason=seen.capped[1])
        return optuna.trial.TrialState.FAIL, None, attrs
    if seen.pruned:
        attrs.update(outcome="pruned",
                     reason=f"pruned at epoch {seen.pruned}: {metric} below the median of earlier trials")
        return optuna.trial.TrialState.PRUNED, None, attrs
    if seen.stopped:
        attrs.update(outcome="stopped", reason=seen.stopped)
        return optuna.trial.TrialState.PRUNED, None, attrs
    if seen.timed_out:
        attrs.update(outcome="timed_out", reason=f"timed out after {seen.timeout:.0f} s")
        return optuna.trial.TrialState.FAIL, None, attrs
    if status == "finished" and result.get("status") == "ok" and _number(result.get("value")):
        attrs["outcome"] = "finished"
        return optuna.trial.TrialState.COMPLETE, float(result["value"]), attrs
    attrs["outcome"] = "oom" if status == "killed" else ("nan" if result.get("status") == "nan" else "failed")
    last_lines = process.log_tail()
    attrs["log_tail"] = last_lines
    attrs["reason"] = str(result.get("reason") or detail or "failed")[:500]
    if result.get("status") == trialdir.MODEL_ERROR:
        attrs["cause"] = "model"  # the trainer's one line names the cause and the fix (trainer diagnose.py)
    elif attrs["outcome"] == "failed" and last_lines:
        attrs["reason"] = f"{attrs['reason']}: {last_lines[-1][:300]}"
    return optuna.trial.TrialState.FAIL, None, attrs


def verify(runner, trial_dir, out_dir, data_path, labels, split=None, timeout=600):
    """The validation accuracy of the trial's saved model, measured apart from it: (value, None) or (None, why).
    ``split`` (dataset.validation_files) makes it score the images themselves, as a script's model reads them."""
    if os.path.lexists(out_dir):
        shutil.rmtree(out_dir)
    if split:
        os.makedirs(out_dir)
        trialdir.write_json(os.path.join(out_dir, SPLIT), split)
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
