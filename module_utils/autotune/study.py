"""The train -> evaluate -> mutate loop on an Optuna study (ask/tell), with up to ``runner.slots`` trials in flight.

Trial 0 is the committed baseline. Each later trial's parameters come from the
strategy's sampler (strategies.py); it trains through a runner (runners/), its
per-epoch metric is reported to Optuna as it appears so the pruner can stop
hopeless trials (trialrun.py), and the loop stops the moment the goal is reached
or a budget is spent (budget.py): a goal reached in one slot stops the trials of
the others. Values compare in target.direction (the lowest loss is the best). A trial
that could be reported as the best (it claims the goal, or a validation score at least
as good as the best verified one) is scored apart before it is told
(trialrun.Verification, beside the next trial): on the validation split, to check
its claim, and on the held-out test split, which decides the goal. The study lives in an Optuna storage, so running again resumes it: a
trial its controller left running is failed and retried (Optuna's
RetryHeartbeatStaleTrialCallback) in the same folder, from its checkpoint.
"""
import os
import threading
import time

import optuna

from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune import checkpoints, continuation, dashboard, learn, objective
from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune import strategies, trialcaps, trialdir, trialrun
from ansible.module_utils.autotune.kinds import kind_of
from ansible.module_utils.autotune.progress import trial_line
from ansible.module_utils.autotune.runners.base import FinishedTrial
from ansible.module_utils.autotune.storage import make_storage, open_study
from ansible.module_utils.autotune.trialdir import reaches

RUNNING = optuna.trial.TrialState.RUNNING
COMPLETE = optuna.trial.TrialState.COMPLETE
CODE_DIR = "code"      # controller-owned copies of each trial's model code (never mounted into a trial)
VERIFY_DIR = "verify"  # where autotune_trainer.verify writes the score it measured
# A reported score further than this from the saved model's own is shown as a reason on the trial (relative to the
# score above 1: a loss of 2.3 is not reproduced to three decimals by another batching).
VERIFY_TOLERANCE = 0.005


def verification_data(config, plan, dataset):
    """What the verifier reads: the trials' pack (validation split), the held-out test pack when this host has it,
    and for a script (it reads image files, not the pack) the same splits as files."""
    data = {"path": dataset["path"], "test_path": dataset.get("test_path")}
    data.update(kind_of(plan).verification_data(config, dataset))
    return data


class Heartbeat:
    """Optuna's heartbeats, recorded by hand (ask/tell has no heartbeat thread of its own): this controller's running
    trials beat from a thread every interval — also while the loop is busy (verifying a model, starting a trainer)
    — and trials of controllers whose beat stopped are failed and retried (fail_stale_trials)."""

    def __init__(self, storage):
        self.storage = storage
        self.interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.last = 0.0
        self.beaten = set()
        self.ids = frozenset()
        self.stopped = threading.Event()
        self.thread = None

    def beat(self, study, running):
        """A trial beats as soon as it runs (one never beaten is never found stale), then every interval."""
        if not self.interval:
            return
        # Optuna's record_heartbeat takes the storage's trial id; Trial exposes no public accessor for it.
        ids = frozenset(slot.trial._trial_id for slot in running)  # pylint: disable=protected-access
        for trial_id in ids - self.beaten:
            self.storage.record_heartbeat(trial_id)
        self.beaten |= ids
        self.ids = ids  # read by the thread; a frozenset is replaced whole, never changed in place
        if self.thread is None:
            self.thread = threading.Thread(target=self._beat_on, name="autotune-heartbeat", daemon=True)
            self.thread.start()
        if time.time() - self.last >= self.interval:
            self.last = time.time()
            optuna.storages.fail_stale_trials(study)

    def _beat_on(self):
        while not self.stopped.wait(self.interval):
            for trial_id in self.ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # pylint: disable=broad-except  # the loop's own next call reports a lost storage
                    break

    def close(self):
        self.stopped.set()


class StudyLoop:
    def __init__(self, config, plan, dataset, runner, run_dir, storage, progress=None, notes=None):
        self.config, self.plan, self.dataset, self.runner = config, plan, dataset, runner
        self.notes = notes or dashboard.Notes(progress, background=False)
        self.run_dir = run_dir
        self.storage = storage
        self.progress = progress or (lambda line: None)
        self.metric, self.direction, self.goal = (config["target"][k] for k in ("metric", "direction", "goal"))
        self.budget = config["budget"]
        self.slots = config["runner"].get("slots") or 1
        self.started = time.time()
        self.tried = {}
        self.verifying = []  # trials whose saved model is being scored apart: told once their scores are in
        self.space = trialcaps.SpaceWatch(run_dir, config["runner"])  # the run folder's free space (a stop reason)
        # Called as after_trial(trial, trial_dir, attrs) when a trial ended, before it is told: a fleet worker
        # copies the trial's files off the host there (fleet.py, optuna.artifacts); attrs may take more attributes.
        self.after_trial = None
        # A fleet worker ships each running trial's checkpoint to the artifact store and lays a dead host's into its
        # retry's folder (checkpoints.Shipper: watch, restore, ended, close); None on one host, whose folder stays.
        self.checkpoints = None

    def run(self):
        """Ask, train, tell until a stop reason; returns (study, stop reason, trials run by this call)."""
        self.heartbeat = Heartbeat(make_storage(self.storage, self.config["workers"]))
        try:
            return self._run()
        finally:
            self.heartbeat.close()
            if self.checkpoints:
                self.checkpoints.close()

    def _run(self):
        study = open_study(self.config, self.plan, self.heartbeat.storage)
        self.chance = self._chance_stop(study.pruner)
        study.pruner = self.pruner = strategies.ScoredApartPruner(self.chance or study.pruner)
        self._retry_interrupted(study)
        for earlier in study.trials:  # names registered by trials of an earlier run of this study
            self._register(earlier.user_attrs.get("registered_hp") or {}, earlier.number)
        self.tried = {search_space.frozen(t.user_attrs["params"]): t for t in study.trials
                      if t.state == COMPLETE and "params" in t.user_attrs and not t.user_attrs.get("duplicate_of")}
        running, new_trials, reason = [], 0, None
        while True:
            reason = self._stop_reason(study)
            if reason == "goal reached":
                self._stop_all(study, running)
                running = []
            while (reason is None or self._owed_retry(study, reason)) and len(running) < self.slots \
                    and not self._goal_claim_pending():
                new_trials += 1
                started = self._start(study, self._free_slot(running))
                running += [started] if started else []
                reason = self._stop_reason(study)
            waiting = not running and not self.verifying  # nothing of ours runs: we stay for other workers' trials
            if waiting and not self._others_running(study, reason):
                return study, reason, new_trials
            self.heartbeat.beat(study, running + [pending.slot for pending in self.verifying])
            for pending in list(self.verifying):
                if pending.step():
                    self._settle(study, pending, running)
            for slot in list(running):
                try:
                    if slot.step(self.metric):
                        running.remove(slot)
                        self._finish(study, slot)
                    elif self.checkpoints:
                        self.checkpoints.watch(slot)
                except optuna.exceptions.UpdateFinishedTrialError:
                    self._taken_away(slot, running)
            if running or waiting or self.verifying:
                time.sleep(trialrun.POLL_SECONDS)

    def _chance_stop(self, pruner):
        """The study's pruner with a stop for trials whose validation accuracy stays at chance (strategies.py), or
        None when no floor applies (an accuracy metric on the pack's validation split is needed)."""
        known = kind_of(self.plan).fed_the_pack
        answer = tune_dataset.constant_answer_accuracy(self.dataset["path"]) if known else None
        floor = strategies.chance_floor(self.config, answer, self.dataset.get("n_val"))
        return None if floor is None else strategies.ChanceStop(pruner, floor, self.config["search"]["chance_epochs"])

    def _settle(self, study, pending, running=()):
        """A verification is over: tell its trial with the scores it measured."""
        self.verifying.remove(pending)
        self.pruner.awaiting.pop(pending.slot.number, None)
        try:
            state, value, attrs = self._verified(pending)
            self._tell(study, pending.slot, state, value, attrs)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._taken_away(pending.slot, list(running))
            return
        if state == COMPLETE:
            self._continue_refused(study, pending.slot, attrs)

    def _continue_refused(self, study, slot, attrs):
        """A candidate the held-out split refused, stopped by its goal stop with epochs left, trains on next from its
        checkpoint (continuation.py); one host only."""
        if self.checkpoints is not None or not continuation.wanted(self.config, slot.trial, attrs, slot.trial_dir,
                                                                   self.goal, self.direction):
            checkpoints.drop(slot.trial_dir)  # its trainer kept one for this; it is not needed
            return
        study.enqueue_trial(dict(slot.params), user_attrs={continuation.CONTINUES: slot.number})
        self.progress(f"trial {slot.number:3d}  refused by the held-out split with epochs left: "
                      "trains on from its checkpoint next")

    def _taken_away(self, slot, running):
        """Another worker failed this trial as stale (its heartbeat came late): its retry trains it; stop ours."""
        if slot in running:
            running.remove(slot)
        slot.stop("failed by another worker: its heartbeat was late")
        slot.process.cleanup()
        self.progress(f"trial {slot.number:3d}  failed by another worker (heartbeat late); its retry trains it")

    def _owed_retry(self, study, reason):
        """The trial budget counts a dead worker's trial once, as its retry: that retry (WAITING) still trains."""
        return reason.startswith("trial budget spent") and any(
            optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is not None
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))

    def _others_running(self, study, reason):
        """On a shared storage, a worker whose trial budget is spent stays while other workers' trials run: if one
        of those hosts dies, its trial is failed after the grace period and retried here (never lost)."""
        return (bool(self.heartbeat.interval) and bool(reason) and reason.startswith("trial budget spent")
                and time.time() - self.started < self.budget["max_seconds"]
                and bool(study.get_trials(deepcopy=False, states=(RUNNING,))))

    def _free_slot(self, running):
        """The lowest slot index not in use: a slot keeps its GPU (and CPU share) from one trial to the next."""
        used = {int(r.labels["slot"]) for r in running}
        return min(set(range(self.slots)) - used)

    def _stop_reason(self, study):
        if self.space.low():
            return self.space.low()
        trials = study.get_trials(deepcopy=False)
        reason = study_budget.stop_reason(trials, self.goal, self.budget, time.time() - self.started, self.direction)
        if reason:
            return reason
        if not trials:
            # The committed model is always trial 0, whatever the strategy.
            study.enqueue_trial({n: self.plan["baseline"][n] for n in self.plan["space"]}, user_attrs={"baseline": True})
            # A new study: its facts recorded, and (config["learn"], set by tune_model) the best of earlier studies
            # queued next and their finished trials given to the sampler.
            learn.start_from_earlier(study, self.config.get("learn"), self.plan, self.config["target"], self.dataset,
                                     self.heartbeat.storage, self.run_dir, self.progress)
            return None
        return strategies.exhausted(study.sampler, study)

    def _start(self, study, slot):
        """Ask for the next trial and start it; a repeated draw is answered at once (returns None)."""
        self._promote(study)
        trial = study.ask()
        if study_budget.past_budget(study.get_trials(deepcopy=False), trial.number, self.budget):
            trial.set_user_attr(study_budget.OVER_BUDGET, True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.progress(f"trial {trial.number:3d}  not trained: another worker took the budget's last trial first")
            return None
        asked = study.get_trials(deepcopy=False)[trial.number]
        queued = asked.system_attrs.get("fixed_params") or {}
        params = search_space.suggest(trial, self.plan["space"], self.plan["baseline"],
                                      strategies.scheduled_epochs(self.config, self.plan), queued)
        for pending in [p for p in self.verifying if search_space.frozen(p.slot.params) == search_space.frozen(params)]:
            while not pending.step():  # the same draw as a trial being scored: its value comes first
                time.sleep(trialrun.POLL_SECONDS)
            self._settle(study, pending)
        earlier = self.tried.get(search_space.frozen(params))
        if earlier is not None and continuation.CONTINUES not in asked.user_attrs:  # a continuation trains on
            self._answer_repeat(study, trial, params, earlier)
            return None
        trial_dir, resumed = self._prepare(study, trial, params)
        timeout = min(self.budget["trial_timeout"], max(1.0, self.budget["max_seconds"] - (time.time() - self.started)))
        labels = {"study": self.config["study"], "run_dir": self.run_dir, "trial": os.path.basename(trial_dir),
                  "slot": str(slot)}
        if resumed and os.path.lexists(os.path.join(trial_dir, trialdir.RESULT)):
            # It finished while no controller watched it: take its result, train nothing again (conclude checks
            # the result; a malformed one fails the trial with its one line, it never stops the loop here).
            return trialrun.Running(trial, params, trial_dir, labels, FinishedTrial(trial_dir), timeout).replay(self.metric)
        process = self.runner.start(trial_dir, self.dataset["path"], labels)
        running = trialrun.Running(trial, params, trial_dir, labels, process, timeout)
        running.watch = trialcaps.FolderWatch.for_config(trial_dir, self.run_dir, self.config["runner"])
        return running

    def _promote(self, study):
        """Queue the best trial again with more epochs when it stopped below the goal still improving."""
        if not self.config["search"].get("promote") or self.config["search"]["strategy"] == "escalate":
            return  # escalate's ladder has its own epochs rung
        promoted = strategies.promotion(study, self.plan["space"], self.goal, self.metric)
        if promoted:
            params, parent = promoted
            study.enqueue_trial(params, user_attrs={"promoted_from": parent})
            name = strategies.epochs_parameter(self.plan["space"])
            self.progress(f"trial {parent:3d}  best so far and still improving at its last epoch: "
                          f"trained again with {name}={params[name]} next")

    def _prepare(self, study, trial, params):
        """The trial's folder (a fresh one, or the one of the trial it resumes) and its attributes recorded first,
        so a controller that dies mid-trial can be followed by one that resumes it. Returns (folder, resumed)."""
        frozen = study.get_trials(deepcopy=False)[trial.number]
        resumes = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        elsewhere = None
        if resumes is not None and not os.path.isfile(os.path.join(self.run_dir, frozen.user_attrs.get("trial_dir", "-"),
                                                                 trialdir.SPEC)):
            # Retried from a controller (host) that died: its folder is not here; a fresh one, with the checkpoint
            # it shipped to the artifact store when there is one (a fleet), else from epoch 0.
            elsewhere, resumes = resumes, None
        if resumes is None:
            relative = os.path.relpath(trialdir.trial_path(self.run_dir, trial.number), self.run_dir)
            code = os.path.join(CODE_DIR, f"{trial.number:04d}.py")
            stop_at = study_budget.learned_stop_goal(
                study_budget.stop_goal(study.get_trials(deepcopy=False), self.goal, self.direction),
                frozen.user_attrs.get(learn.LEARNED), self.goal, self.direction)
            trial.set_user_attr("stop_goal", stop_at)  # the record (record.py) writes the same trial.json
            trialrun.prepare(os.path.join(self.run_dir, relative), os.path.join(self.run_dir, code), self.plan,
                             self.config, trial.number, params, stop_at)
            if elsewhere is not None:
                self._resume_elsewhere(frozen, elsewhere, os.path.join(self.run_dir, relative))
            elif frozen.user_attrs.get(continuation.CONTINUES) is not None:
                self._carry_over(study, frozen, os.path.join(self.run_dir, relative), stop_at)
        else:
            relative = frozen.user_attrs["trial_dir"]
            code = frozen.user_attrs.get("code") or os.path.join(relative, trialdir.MODEL)
            self.progress(f"trial {trial.number:3d}  resuming trial {resumes}: the controller stopped while it ran")
        for name, value in {"run_dir": self.run_dir, "params": params, "trial_dir": relative, "code": code,
                            "resumed": resumes is not None, "resumes_trial": resumes}.items():
            trial.set_user_attr(name, value)
        return os.path.join(self.run_dir, relative), resumes is not None

    def _resume_elsewhere(self, frozen, failed, trial_dir):
        """A dead host's trial, retried here: from its newest checkpoint in the artifact store, else from epoch 0."""
        epochs, why = self.checkpoints.restore(frozen, trial_dir) if self.checkpoints else (None, None)
        if epochs:
            self.progress(f"trial {frozen.number:3d}  retrying trial {failed} of a host that stopped, from its "
                          f"checkpoint after epoch {epochs}")
        else:
            self.progress(f"trial {frozen.number:3d}  retrying trial {failed} of a controller that stopped, from "
                          f"epoch 0{f' ({why})' if why else ''}")

    def _carry_over(self, study, frozen, trial_dir, stop_at):
        """Lay the refused trial's checkpoint into this trial's fresh folder (checkpoints.carry_over)."""
        source = study.get_trials(deepcopy=False)[frozen.user_attrs[continuation.CONTINUES]]
        folder = os.path.join(self.run_dir, source.user_attrs.get("trial_dir", "-"))
        max_bytes = self.config["runner"].get("max_trial_bytes") or trialcaps.default_max_trial_bytes(self.run_dir)
        epochs = checkpoints.carry_over(folder, source.user_attrs.get("epochs") or [], trial_dir,
                                        os.path.join(self.run_dir, checkpoints.STAGING), max_bytes)
        start = f"from its checkpoint after epoch {epochs}" if epochs else "from epoch 0 (no checkpoint to use)"
        self.progress(f"trial {frozen.number:3d}  continues trial {source.number} {start}, stopping at "
                      f"{self.metric} {stop_at:.4f}")

    def _finish(self, study, slot):
        """Say how a trial ended and tell the study; one that could be the best is scored apart first."""
        try:
            state, value, attrs = trialrun.conclude(slot, self.metric)
        finally:
            slot.process.cleanup()
        self._register(slot.process.hp_seen(), slot.number, attrs)
        if attrs.get("outcome") == "pruned" and self.chance and self.chance.reason(slot.number, self.metric):
            attrs["reason"] = self.chance.reason(slot.number, self.metric)
        if state == COMPLETE and self._candidate(study, value):
            self.verifying.append(self._verification(slot, value, attrs))
            self.pruner.awaiting[slot.number] = value
            return
        if state == COMPLETE:
            attrs["verified"] = False  # below the best scored apart: never reported as the best
        self._tell(study, slot, state, value, attrs)

    def _tell(self, study, slot, state, value, attrs):
        if self.checkpoints:
            self.checkpoints.ended(slot.trial, attrs)
        if self.after_trial:
            self.after_trial(slot.trial, slot.trial_dir, attrs)
        for name, item in attrs.items():
            slot.trial.set_user_attr(name, item)
        study.tell(slot.trial, value if state == COMPLETE else None, state=None if state == COMPLETE else state)
        self.notes.trial(study, slot.trial, self.run_dir, self.metric)
        self.progress(trial_line(study, slot.number, self.metric, sorted(self.plan["space"]), self.goal))
        if state == COMPLETE:
            self.tried[search_space.frozen(slot.params)] = study.get_trials(deepcopy=False)[slot.number]

    def _register(self, seen, number, attrs=None):
        """Names build_model(hp) built at run time (hp.Choice(f"filters_{i}", ...)) join the search from the next
        trial on, as Keras Tuner registers a name when it first sees it (Optuna's define-by-run takes new names)."""
        taken = self.plan.setdefault("registered", [])  # names registered so far: at most MAX_REGISTERED in all
        space, defaults, lines = search_space.registered(seen, self.plan["baseline"],
                                                         room=search_space.MAX_REGISTERED - len(taken))
        for line in lines:
            self.progress(f"trial {number:3d}  WARNING: not searched: {line}")
        if not space:
            return
        taken.extend(space)
        self.plan["space"].update(space)
        self.plan["baseline"].update(defaults)
        if attrs is not None:
            attrs["registered_hp"] = {name: {"spec": spec, "default": defaults[name]} for name, spec in space.items()}
        names = sorted(space)
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        self.progress(f"trial {number:3d}  registered {shown} (named at run time): "
                      "searched from the next trial")

    def _stop_all(self, study, running):
        """The goal was reached: the trials still in flight in other slots are stopped, recorded as stopped."""
        best = study_budget.goal_reached_by(study.get_trials(deepcopy=False), self.goal, self.direction)
        for slot in running:
            slot.stop(f"stopped: trial {best.number} reached the goal")
            self._finish(study, slot)

    def _goal_claim_pending(self):
        """A trial claiming the goal is being scored: no trial starts until we know (it is likely the last)."""
        return any(reaches(pending.reported, self.goal, self.direction) for pending in self.verifying)

    def _candidate(self, study, reported):
        """Could this trial be reported as the best? It claims the goal, or a score at least as good as the best
        verified one."""
        if reaches(reported, self.goal, self.direction):
            return True
        verified = [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,))
                    if t.user_attrs.get("verified_value") is not None]
        return not verified or objective.at_least_as_good(reported, objective.best(verified, self.direction).value,
                                                          self.direction)

    def _verification(self, slot, reported, attrs):
        """Start scoring the trial's saved model apart: the validation split, and the held-out test split."""
        out_dir = os.path.join(self.run_dir, VERIFY_DIR, os.path.basename(slot.trial_dir))
        data = verification_data(self.config, self.plan, self.dataset)
        pending = trialrun.Verification(self.runner, slot.trial_dir, out_dir, data, slot.labels, self.metric)
        pending.slot, pending.reported, pending.attrs = slot, reported, attrs
        return pending

    def _verified(self, pending):
        """(state, value, attrs): the trial counts with the validation score its saved model has, apart from it;
        the goal is judged on its held-out test score (on the validation score where no test split is held here:
        a fleet worker, whose controller scores the best on the test split when it collects)."""
        attrs, scores = pending.attrs, pending.scores
        attrs["reported_value"] = pending.reported
        if scores is None:
            attrs.update(outcome="unverified", reason=pending.why)
            return optuna.trial.TrialState.FAIL, None, attrs
        measured, tested = scores["val"], scores.get("test")
        # The goal needs both: the claim, re-scored, and the held-out split confirming it.
        attrs.update(verified_value=measured, verified=True,
                     goal_value=measured if tested is None else objective.worse(measured, tested, self.direction))
        if tested is not None:
            attrs.update(test_value=tested, n_test=scores.get("n_test"))
        if abs(measured - pending.reported) > VERIFY_TOLERANCE * max(1.0, abs(pending.reported)):
            attrs["reason"] = f"reported {self.metric} {pending.reported:.4f}, its saved model scores {measured:.4f}"
        elif tested is not None and not reaches(tested, self.goal, self.direction) \
                and reaches(measured, self.goal, self.direction):
            attrs["reason"] = (f"{self.metric} {measured:.4f} reaches the goal, but the held-out test split scores "
                               f"{tested:.4f}: searching on")
        return COMPLETE, measured, attrs

    def _answer_repeat(self, study, trial, params, earlier):
        """Optuna's FAQ: answer a repeated draw with the earlier value instead of training again."""
        for name, value in {"params": params, "duplicate_of": earlier.number, "outcome": "duplicate",
                            "seconds": 0.0, "epochs": []}.items():
            trial.set_user_attr(name, value)
        study.tell(trial, earlier.value)
        self.notes.trial(study, trial, self.run_dir, self.metric)
        self.progress(trial_line(study, trial.number, self.metric, sorted(self.plan["space"]), self.goal))

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
