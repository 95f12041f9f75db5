"""The train -> evaluate -> mutate loop on an Optuna study (ask/tell).

Trial 0 is the committed baseline. Each later trial's parameters come from the
strategy's sampler (strategies.py); it trains through a runner (runners/), its
per-epoch metric is reported to Optuna as it appears so the pruner can stop
hopeless trials (trialrun.py), and the loop stops the moment the goal is reached
or a budget is spent (budget.py). The study lives in an Optuna storage, so
running again resumes it: a trial its controller left running is failed and
retried (Optuna's RetryHeartbeatStaleTrialCallback) in the same folder, from its checkpoint.
"""
import os
import time

import optuna

from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import dashboard
from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune import strategies, trialdir, trialrun
from ansible.module_utils.autotune.progress import trial_line
from ansible.module_utils.autotune.runners.base import FinishedTrial
from ansible.module_utils.autotune.storage import open_study

RUNNING = optuna.trial.TrialState.RUNNING
COMPLETE = optuna.trial.TrialState.COMPLETE


class StudyLoop:
    def __init__(self, config, plan, dataset, runner, run_dir, storage, progress=None):
        self.config, self.plan, self.dataset, self.runner = config, plan, dataset, runner
        self.run_dir = run_dir
        self.storage = storage
        self.progress = progress or (lambda line: None)
        self.metric = config["target"]["metric"]
        self.budget = config["budget"]
        self.started = time.time()

    def run(self):
        """Ask, train, tell until a stop reason; returns (study, stop reason, trials run by this call)."""
        study = open_study(self.config, self.plan, self.storage)
        self._retry_interrupted(study)
        tried = {search_space.frozen(t.user_attrs["params"]): t for t in study.trials
                 if t.state == COMPLETE and "params" in t.user_attrs and not t.user_attrs.get("duplicate_of")}
        new_trials = 0
        while True:
            reason = self._stop_reason(study)
            if reason:
                return study, reason, new_trials
            trial = study.ask()
            new_trials += 1
            params = search_space.suggest(trial, self.plan["space"], self.plan["baseline"])
            earlier = tried.get(search_space.frozen(params))
            if earlier is not None:
                self._answer_repeat(study, trial, params, earlier)
                continue
            finished = self._train(study, trial, params)
            if finished.state == COMPLETE:
                tried[search_space.frozen(params)] = finished

    def _stop_reason(self, study):
        trials = study.get_trials(deepcopy=False)
        reason = study_budget.stop_reason(trials, self.config["target"]["goal"], self.budget, time.time() - self.started)
        if reason:
            return reason
        if not trials:
            # The committed model is always trial 0, whatever the strategy.
            study.enqueue_trial({n: self.plan["baseline"][n] for n in self.plan["space"]}, user_attrs={"baseline": True})
            return None
        return strategies.exhausted(study.sampler, study)

    def _answer_repeat(self, study, trial, params, earlier):
        """Optuna's FAQ: answer a repeated draw with the earlier value instead of training again."""
        for name, value in {"params": params, "duplicate_of": earlier.number, "outcome": "duplicate",
                            "seconds": 0.0, "epochs": []}.items():
            trial.set_user_attr(name, value)
        study.tell(trial, earlier.value)
        dashboard.annotate_trial(study, trial, self.run_dir, self.metric, self.progress)
        self.progress(trial_line(study, trial.number, self.metric, sorted(self.plan["space"])))

    def _retry_interrupted(self, study):
        """Trials a dead controller of this run directory left RUNNING are failed, and retried when they had started.

        The run-directory lock guarantees no live controller owns them; RUNNING trials of other run
        directories (other hosts sharing the storage) are left alone.
        """
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
        for left in study.get_trials(deepcopy=False, states=(RUNNING,)):
            if left.user_attrs.get("run_dir") != self.run_dir:
                continue
            study.tell(left.number, state=optuna.trial.TrialState.FAIL)
            folder = os.path.join(self.run_dir, left.user_attrs.get("trial_dir", ""))
            if "params" in left.user_attrs and os.path.isfile(os.path.join(folder, trialdir.SPEC)):
                retry(study, study.get_trials(deepcopy=False)[left.number])

    def _train(self, study, trial, params):
        """Train one trial (or resume the one it retries), tell the study, show the line; returns the frozen trial."""
        frozen = study.get_trials(deepcopy=False)[trial.number]
        resumes = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        relative = frozen.user_attrs["trial_dir"] if resumes is not None else os.path.relpath(
            trialdir.trial_path(self.run_dir, trial.number), self.run_dir)
        trial_dir = os.path.join(self.run_dir, relative)
        if resumes is None:
            trialrun.prepare(trial_dir, self.plan, self.config, trial.number, params)
        else:
            self.progress(f"trial {trial.number:3d}  resuming trial {resumes}: the controller stopped while it ran")
        # Recorded before training, so a controller that dies mid-trial can be followed by one that resumes it.
        for name, value in {"run_dir": self.run_dir, "params": params, "trial_dir": relative,
                            "code": os.path.join(relative, trialdir.MODEL), "resumed": resumes is not None,
                            "resumes_trial": resumes}.items():
            trial.set_user_attr(name, value)
        state, value, attrs = self._run(trial, trial_dir, resumes is not None)
        for name, item in attrs.items():
            trial.set_user_attr(name, item)
        study.tell(trial, value if state == COMPLETE else None, state=None if state == COMPLETE else state)
        dashboard.annotate_trial(study, trial, self.run_dir, self.metric, self.progress)
        self.progress(trial_line(study, trial.number, self.metric, sorted(self.plan["space"])))
        return study.get_trials(deepcopy=False)[trial.number]

    def _run(self, trial, trial_dir, resume):
        """Start (or adopt) the trainer, follow it to its end, and say how it ended."""
        timeout = min(self.budget["trial_timeout"], max(1.0, self.budget["max_seconds"] - (time.time() - self.started)))
        if resume and FinishedTrial(trial_dir).result():
            process = FinishedTrial(trial_dir)  # it finished while no controller watched it: train nothing again
            seen = trialrun.replay(process, trial, self.metric)
        else:
            labels = {"study": self.config["study"], "run_dir": self.run_dir,
                      "trial": os.path.basename(trial_dir)}
            process = self.runner.start(trial_dir, self.dataset["path"], labels)
            seen = trialrun.follow(process, trial, self.metric, timeout)
        try:
            return trialrun.conclude(process, seen, self.metric, timeout)
        finally:
            process.cleanup()
