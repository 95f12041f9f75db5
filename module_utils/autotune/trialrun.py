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
SPLIT = "split.json"        # the images it scores ({val, test}), for a model that reads images itself (a script)
SCORE = "score.json"        # what it scores: {"metric": target.metric}
# What the trainer's result.json may add to the trial's record.
RESULT_FIELDS = ("fit_seconds", "startup_seconds", "resumed_from_epoch", "checkpoint_discarded")


def prepare(trial_dir, code_path, plan, config, number, params, stop_at=None):
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
    trialdir.write_json(os.path.join(trial_dir, trialdir.SPEC), spec_for(plan, config, number, params, stop_at))


def spec_for(plan, config, number, params, stop_at=None):
    """trial.json's content: what the trainer trains (reproduce.py records it as the controller wrote it). ``goal`` is
    where the trainer stops itself: target.goal, or ``stop_at`` past it (budget.stop_goal)."""
    target = config["target"]
    return {
        "number": number, "params": params, "model_file": trialdir.MODEL, "model_api": plan["api"],
        "metric": target["metric"], "direction": target["direction"],
        "goal": target["goal"] if stop_at is None else stop_at,
        "stop_at_goal": target["stop_at_goal"], "seed": config["search"]["seed"],
        "deterministic": config["search"].get("deterministic", True), "defaults": plan.get("training_defaults", {}),
    }


class Running:
    """One trial in flight: its Optuna trial, its process, and what was seen of it so far."""

    def __init__(self, trial, params, trial_dir, labels, process, timeout):
        self.trial, self.params, self.trial_dir, self.labels = trial, params, trial_dir, labels
        self.process, self.timeout = process, timeout
        self.epochs, self.code, self.pruned, self.timed_out, self.stopped = [], None, False, False, None
        self.bad_file = None  # the one line of a malformed trial file, once one was read
        self.started = time.time()
        self.seconds = 0.0
        self.watch, self.capped = None, None  # trialcaps.FolderWatch; (outcome, line) once a cap is passed

    @property
    def number(self):
        return self.trial.number

    def step(self, metric):
        """One poll: report new epochs to Optuna (which may prune), check the end and the timeout.
        Returns True once the trial is over (its process ended, or was stopped here). A malformed trial file
        (trialdir.TrialFileError) ends it here: stopped, and failed by conclude with the file's one line."""
        try:
            self.code = self.process.exit_code()
            fresh = self.process.new_epochs()
        except trialdir.TrialFileError as exc:
            self.bad_file = str(exc)
            self.process.stop()  # the trainer may still run: a bad file never leaves its container behind
            self.seconds = round(time.time() - self.started, 3)
            return True
        for record in fresh:
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
        try:
            fresh = self.process.new_epochs()
            while fresh:  # read a chunk (1 MiB) at a time: a long finished file takes more than one
                self.epochs += fresh
                fresh = self.process.new_epochs()
        except trialdir.TrialFileError as exc:
            self.bad_file = str(exc)  # conclude fails it with this line
        for step, record in enumerate(self.epochs):
            if record.get(metric) is not None:
                self.trial.report(float(record[metric]), step=step)
        return self


def conclude(seen, metric):
    """(state, value, attrs) of a trial that ended: finished, pruned, stopped, timed out, or failed with its reason."""
    process = seen.process
    status, detail = process.outcome()
    attrs = {"seconds": seen.seconds, "epochs": seen.epochs}
    try:
        result, health = process.result(), process.health()
        process.hp_seen(strict=True)
        last_lines = process.log_tail() if _failed(seen, status, result) else []
    except trialdir.TrialFileError as exc:
        if not (seen.pruned or seen.stopped or seen.timed_out):
            seen.bad_file = seen.bad_file or str(exc)
        # Ended by the controller already: that is its outcome; nothing the trial wrote is taken, the line is kept.
        result, health, last_lines, attrs["bad_file"] = {}, {}, [], str(exc)[:500]
    if seen.bad_file:
        # One line naming the file and the field; nothing else the trial wrote is taken.
        attrs.update(outcome="bad_trial_file", reason=seen.bad_file[:500])
        return optuna.trial.TrialState.FAIL, None, attrs
    attrs.update({k: result[k] for k in RESULT_FIELDS if k in result})
    if health:
        attrs["relaunches"] = health.get("relaunches", 0)
    if seen.capped:  # its folder passed runner.max_trial_bytes, or the disk its floor (trialcaps.py)
        attrs.update(outcome=seen.capped[0], reason=seen.capped[1])
        return optuna.trial.TrialState.FAIL, None, attrs
    if seen.pruned:
        attrs.update(outcome="pruned",
                     reason=f"pruned at epoch {seen.pruned}: {metric} behind the earlier trials at that epoch")
        return optuna.trial.TrialState.PRUNED, None, attrs
    if seen.stopped:
        attrs.update(outcome="stopped", reason=seen.stopped)
        return optuna.trial.TrialState.PRUNED, None, attrs
    if seen.timed_out:
        attrs.update(outcome="timed_out", reason=f"timed out after {seen.timeout:.0f} s")
        return optuna.trial.TrialState.FAIL, None, attrs
    if not _failed(seen, status, result):
        attrs["outcome"] = "finished"
        return optuna.trial.TrialState.COMPLETE, float(result["value"]), attrs
    attrs["outcome"] = "oom" if status == "killed" else ("nan" if result.get("status") == "nan" else "failed")
    attrs["log_tail"] = last_lines
    attrs["reason"] = str(result.get("reason") or detail or "failed")[:500]
    if result.get("status") == trialdir.MODEL_ERROR:
        attrs["cause"] = "model"  # the trainer's one line names the cause and the fix (trainer diagnose.py)
    elif attrs["outcome"] == "failed" and last_lines:
        attrs["reason"] = f"{attrs['reason']}: {last_lines[-1][:300]}"
    return optuna.trial.TrialState.FAIL, None, attrs


def _failed(seen, status, result):
    """Not pruned, stopped or timed out, and no finished result with a value: its log's end explains it."""
    if seen.pruned or seen.stopped or seen.timed_out:
        return False
    return not (status == "finished" and result.get("status") == "ok" and _number(result.get("value")))


class Verification:
    """A trial's saved model being scored apart from it (autotune_trainer.verify), polled like a trial: the study
    loop goes on meanwhile and tells the trial once its scores are in. ``split`` ({val, test}: dataset.split_files)
    makes it score the images themselves, as a script's model reads them; ``test_path`` is the held-out pack.
    ``metric`` (target.metric) is what it scores, told through out_dir/score.json: the trial's own folder, which
    its code may rewrite, never says it."""

    def __init__(self, runner, trial_dir, out_dir, data, labels, metric, timeout=600):
        if os.path.lexists(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(out_dir)
        if data.get("split"):
            trialdir.write_json(os.path.join(out_dir, SPLIT), data["split"])
        trialdir.write_json(os.path.join(out_dir, SCORE), {"metric": metric})
        self.metric, self.out_dir, self.timeout, self.started = metric, out_dir, timeout, time.time()
        self.expects_test = bool(data.get("test_path") or (data.get("split") or {}).get("test"))
        self.scores, self.why = None, None
        self.process = runner.verify(trial_dir, data["path"], out_dir, labels, data.get("test_path"),
                                     data.get("read_only", ()))

    def step(self):
        """One poll; True once the scores (``scores``) or the reason there are none (``why``) are known."""
        if self.process.exit_code() is None:
            if time.time() - self.started <= self.timeout:
                return False
            self.process.stop()
            self.why = f"scoring the saved model took over {self.timeout} s"
        else:
            self.scores, self.why = self._read()
        self.process.cleanup()
        return True

    def _read(self):
        """({val, test, n_test}, None): the metric on each split; or (None, why) from the verifier's last line."""
        measured = trialdir.read_json(os.path.join(self.out_dir, VERIFIED), {}) or {}
        val_key, test_key = score_keys(self.metric)
        if not isinstance(measured, dict) or not _number(measured.get(val_key)) or (
                self.expects_test and not _number(measured.get(test_key))):
            try:
                last = self.process.log_tail(1)
            except trialdir.TrialFileError as exc:  # the verifier's own folder: nothing of a trial writes there
                last = [str(exc)]
            return None, f"the saved model could not be scored ({last[-1][:300] if last else 'no output'})"
        scores = {"val": float(measured[val_key])}
        if self.expects_test:
            scores.update(test=float(measured[test_key]), n_test=measured.get("n_test"))
        return scores, None


def score_keys(metric):
    """verified.json's keys for ``metric`` on the validation and the held-out split: val_auc -> val_auc, test_auc."""
    return metric, "test_" + metric[len("val_"):]


def verify(runner, trial_dir, out_dir, data, labels, metric, timeout=600):
    """The same as Verification, waited for: (scores, None) or (None, why)."""
    pending = Verification(runner, trial_dir, out_dir, data, labels, metric, timeout)
    while not pending.step():
        time.sleep(POLL_SECONDS)
    return pending.scores, pending.why


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and json.dumps(value) not in ("NaN", "Infinity")
