"""The train -> evaluate -> mutate loop on an Optuna study (ask/tell).

Trial 0 is the committed baseline. Each trial runs in a fresh process or
container through a runner; its per-epoch metric is reported to Optuna as it
appears, so the pruner can stop hopeless trials. The loop stops the moment the
goal is reached or the budget (trials, seconds, consecutive failures) is spent.
The study lives in an Optuna storage, so running again resumes it.
"""
import json
import os
import re
import shutil
import time
import warnings

import optuna

from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.modelcode import code_for
from ansible.module_utils.autotune.runner import tail

POLL_SECONDS = 0.2
# Keras reports metrics as float32: 380/400 = 0.95 arrives as 0.9499999881. A goal counts as reached
# within this tolerance, here and in the trainer's GoalStop, so both agree on the same trial.
GOAL_TOLERANCE = 1e-6


def reaches(value, goal):
    return value is not None and value >= goal - GOAL_TOLERANCE
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def masked_storage(url):
    """A storage URL fit for reports: any password replaced."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def default_storage(run_dir):
    return f"sqlite:///{os.path.join(os.path.abspath(run_dir), 'study.db')}"


def _sampler(config, n_existing):
    search = config["search"]
    # Offset the seed by the trials already stored: a resumed study must not replay the same draws.
    seed = search["seed"] + n_existing
    if search["strategy"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search["startup_trials"])


def _pruner(config):
    if config["search"]["pruner"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=config["search"]["startup_trials"], n_warmup_steps=1)


def open_study(config, storage, n_hint=0):
    try:
        return optuna.create_study(
            study_name=config["study"], storage=storage, direction="maximize", load_if_exists=True,
            sampler=_sampler(config, n_hint), pruner=_pruner(config),
        )
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as exc:
        raise AutotuneError(f"storage: cannot open study {config['study']!r} at {masked_storage(storage)} "
                            f"({type(exc).__name__}: {exc}); expected a reachable Optuna storage URL")


def _read_metrics(path, seen):
    """New epoch records appended since ``seen`` lines were read."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return []
    fresh = []
    for line in lines[seen:]:
        try:
            fresh.append(json.loads(line))
        except ValueError:
            break  # a line still being written: read it on the next poll
    return fresh


class _Finished:
    """Stands in for the process of a trial that already ended with a result."""

    def __init__(self, trial_dir):
        self.log_path = os.path.join(trial_dir, "trainer.log")

    def exit_code(self):
        return 0

    def stop(self):
        """Nothing runs."""

    def outcome(self):
        return "finished", None

    def cleanup(self):
        """Nothing to remove."""


def _format_params(params, names):
    return " ".join(f"{n}={params[n]:.4g}" if isinstance(params[n], float) else f"{n}={params[n]}" for n in names)


class StudyLoop:
    def __init__(self, config, plan, dataset, runner, run_dir, storage, progress=None):
        self.config, self.plan, self.dataset, self.runner = config, plan, dataset, runner
        self.run_dir = run_dir
        self.storage = storage
        self.progress = progress or (lambda line: None)
        self.metric = config["target"]["metric"]
        self.goal = config["target"]["goal"]
        self.budget = config["budget"]
        self.started = time.time()

    # --- one trial -------------------------------------------------------
    def _trial_dir(self, number):
        return os.path.join(self.run_dir, "trials", f"{number:04d}")

    def _prepare_trial(self, number, params):
        trial_dir = self._trial_dir(number)
        if os.path.isdir(trial_dir):
            shutil.rmtree(trial_dir)  # left by a run that died before the trial was recorded
        os.makedirs(trial_dir)
        with open(os.path.join(trial_dir, "model.py"), "w", encoding="utf-8") as handle:
            handle.write(code_for(self.plan, params, number))
        spec = {
            "number": number, "params": params, "model_file": "model.py", "model_api": self.plan["api"],
            "metric": self.metric, "goal": self.goal, "stop_at_goal": self.config["target"]["stop_at_goal"],
            "seed": self.config["search"]["seed"], "defaults": self.plan.get("training_defaults", {}),
        }
        with open(os.path.join(trial_dir, "trial.json"), "w", encoding="utf-8") as handle:
            json.dump(spec, handle, indent=2, sort_keys=True)
        return trial_dir

    def _run_trial(self, trial, params, resume=False):
        """Train one trial (or resume it from its checkpoint); return (state, value, attrs) without telling the study."""
        if resume:
            trial_dir = self._trial_dir(trial.number)
        else:
            trial_dir = self._prepare_trial(trial.number, params)
            # Recorded before training, so a controller that dies mid-trial can be followed by one that resumes it.
            trial.set_user_attr("run_dir", self.run_dir)
            trial.set_user_attr("params", params)
        timeout = min(self.budget["trial_timeout"], max(1.0, self.budget["max_seconds"] - (time.time() - self.started)))
        labels = {"trial": str(trial.number), "study": self.config["study"], "run_dir": self.run_dir}
        started = time.time()
        metrics_path = os.path.join(trial_dir, "metrics.jsonl")
        result_path = os.path.join(trial_dir, "result.json")
        epochs, pruned, timed_out = [], False, False
        if resume and os.path.exists(result_path):
            # It finished while no controller watched it: take its result, train nothing again.
            process, code = _Finished(trial_dir), 0
            epochs = _read_metrics(metrics_path, 0)
            for step, record in enumerate(epochs):
                if record.get(self.metric) is not None:
                    trial.report(float(record[self.metric]), step=step)
        else:
            process = self.runner.start(trial_dir, self.dataset["path"], labels)
            code = None
        while code is None:
            code = process.exit_code()
            for record in _read_metrics(metrics_path, len(epochs)):
                epochs.append(record)
                value = record.get(self.metric)
                if value is not None:
                    trial.report(float(value), step=len(epochs) - 1)
                    if trial.should_prune():
                        pruned = True
            if code is not None or pruned:
                break
            if time.time() - started > timeout:
                timed_out = True
                break
            time.sleep(POLL_SECONDS)
        if code is None:
            process.stop()
        seconds = round(time.time() - started, 3)
        status, detail = process.outcome()
        process.cleanup()
        relative = os.path.relpath(trial_dir, self.run_dir)  # the run directory stays relocatable
        attrs = {"seconds": seconds, "epochs": epochs, "trial_dir": relative,
                 "code": os.path.join(relative, "model.py"), "params": params}
        result = {}
        health = os.path.join(trial_dir, "health.json")
        if os.path.exists(health):
            with open(health, encoding="utf-8") as handle:
                attrs["relaunches"] = json.load(handle).get("relaunches", 0)
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as handle:
                result = json.load(handle)
            attrs.update({k: result[k] for k in ("fit_seconds", "startup_seconds", "resumed_from_epoch",
                                                 "checkpoint_discarded") if k in result})
        if pruned:
            attrs["outcome"] = "pruned"
            attrs["reason"] = f"pruned at epoch {len(epochs)}: {self.metric} below the median of earlier trials"
            return optuna.trial.TrialState.PRUNED, None, attrs
        if timed_out:
            attrs["outcome"] = "timed_out"
            attrs["reason"] = f"timed out after {timeout:.0f} s"
            return optuna.trial.TrialState.FAIL, None, attrs
        if status == "finished" and result.get("status") == "ok" and result.get("value") is not None:
            attrs["outcome"] = "finished"
            return optuna.trial.TrialState.COMPLETE, float(result["value"]), attrs
        attrs["outcome"] = "oom" if status == "killed" else ("nan" if result.get("status") == "nan" else "failed")
        last_lines = tail(process.log_path)
        attrs["reason"] = result.get("reason") or detail or "failed"
        attrs["log_tail"] = last_lines
        if attrs["outcome"] == "failed" and last_lines:
            attrs["reason"] = f"{attrs['reason']}: {last_lines[-1][:300]}"
        return optuna.trial.TrialState.FAIL, None, attrs

    # --- the loop --------------------------------------------------------
    def _stop_reason(self, study):
        trials = study.trials
        completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if completed and reaches(max(t.value for t in completed), self.goal):
            return "goal reached"
        if len(trials) >= self.budget["max_trials"]:
            return f"trial budget spent ({self.budget['max_trials']} trials)"
        if time.time() - self.started >= self.budget["max_seconds"]:
            return f"time budget spent ({self.budget['max_seconds']} s)"
        failures = 0
        for t in reversed(trials):
            if t.state != optuna.trial.TrialState.FAIL:
                break
            failures += 1
        if failures >= self.budget["max_consecutive_failures"]:
            return (f"{failures} consecutive trials failed (last: {trials[-1].user_attrs.get('reason', 'unknown')}); "
                    "fix the model or raise budget.max_consecutive_failures")
        return None

    def _enqueue_next(self, study, tried):
        """Queue the baseline first; for escalate, the ladder's next step from the best trial."""
        space = self.plan["space"]
        if not study.trials:
            study.enqueue_trial({n: self.plan["baseline"][n] for n in space}, user_attrs={"baseline": True})
            return None
        if self.config["search"]["strategy"] != "escalate":
            return None
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = max(completed, key=lambda t: t.value) if completed else study.trials[0]
        best_params = best.user_attrs.get("params") or self.plan["baseline"]
        step = search_space.escalate(best_params, space, self.plan["ladder"], len(study.trials) - 1, tried)
        if step is None:
            return "search space exhausted: every ladder rung is at its limit"
        params, _, rung = step
        study.enqueue_trial({n: params[n] for n in space}, user_attrs={"escalated": rung})
        return None

    def run(self):
        # Opened twice: the sampler's seed depends on how many trials the storage already holds.
        probe = open_study(self.config, self.storage)
        study = open_study(self.config, self.storage, n_hint=len(probe.trials))
        self._resume_interrupted(study)
        tried = {search_space.frozen(t.user_attrs["params"]): t for t in study.trials
                 if t.state.is_finished() and "params" in t.user_attrs and not t.user_attrs.get("duplicate_of")}
        new_trials = 0
        while True:
            reason = self._stop_reason(study) or self._enqueue_next(study, tried)
            if reason:
                break
            trial = study.ask()
            params = search_space.suggest(trial, self.plan["space"], self.plan["baseline"])
            key = search_space.frozen(params)
            new_trials += 1
            if key in tried and tried[key].state == optuna.trial.TrialState.COMPLETE:
                # Optuna's FAQ: answer a repeated draw with the earlier value instead of training again.
                earlier = tried[key]
                for name, value in {"params": params, "duplicate_of": earlier.number, "outcome": "duplicate",
                                    "seconds": 0.0, "epochs": []}.items():
                    trial.set_user_attr(name, value)
                study.tell(trial, earlier.value)
                self._announce(study, trial.number)
                continue
            tried[key] = self._finish(study, trial, params)
        return study, reason, new_trials

    def _resume_interrupted(self, study):
        """Trials left RUNNING by a controller of this run directory that died are resumed from their checkpoints.

        The run-directory lock guarantees no live controller owns them; RUNNING trials of other run
        directories (other hosts sharing the storage) are left alone.
        """
        for frozen_trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen_trial.user_attrs.get("run_dir") != self.run_dir:
                continue
            trial = optuna.trial.Trial(study, frozen_trial._trial_id)  # noqa: SLF001 - ask/tell handle for a stored trial
            params = frozen_trial.user_attrs.get("params")
            if not params or not os.path.exists(os.path.join(self._trial_dir(trial.number), "trial.json")):
                trial.set_user_attr("outcome", "interrupted")
                trial.set_user_attr("reason", "the controller stopped before this trial started")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            self.progress(f"trial {trial.number:3d}  resuming: the controller stopped while it ran")
            self._finish(study, trial, params, resume=True)

    def _finish(self, study, trial, params, resume=False):
        state, value, attrs = self._run_trial(trial, params, resume=resume)
        attrs["resumed"] = resume
        for name, item in attrs.items():
            trial.set_user_attr(name, item)
        if state == optuna.trial.TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
        self._announce(study, trial.number)
        return study.trials[trial.number]

    def _announce(self, study, number):
        trial = study.trials[number]
        attrs = trial.user_attrs
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = max(completed, key=lambda t: t.value) if completed else None
        shown = f"{self.metric}={trial.value:.4f}" if trial.value is not None else attrs.get("outcome", trial.state.name.lower())
        best_text = f"best={best.value:.4f} (trial {best.number})" if best else "best=-"
        line = (f"trial {number:3d}  {_format_params(attrs.get('params', {}), sorted(self.plan['space']))}  "
                f"{shown}  {attrs.get('seconds', 0):.1f}s  {best_text}")
        if attrs.get("reason") and trial.state != optuna.trial.TrialState.COMPLETE:
            line += f"  [{attrs['reason']}]"
        self.progress(line)
