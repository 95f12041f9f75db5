"""One study over many trainer hosts (playbooks/fleet.yml): Optuna's own distributed mode, deployed by Ansible.

The controller packs the data set once and creates the study in a database server (``create``): the data set's
fingerprint goes into the study, the committed baseline is enqueued as trial 0, once. Each trainer host runs a
worker (``work``): the same study loop as a single host (study.py: ask/tell, TPE with constant_liar, heartbeats,
goal and budget over every worker), trials in fresh local processes, each trial's files copied off the host into
Optuna's artifact store as it ends. A host whose shipped data set does not match the study's fingerprint refuses
to join. The controller then reads the study and the artifacts into one run folder (``collect``) for the report.
docs/fleet.md.
"""
import hashlib
import os
import time

import optuna
from sqlalchemy.exc import SQLAlchemyError

from ansible.module_utils.autotune import artifacts as artifact_stores
from ansible.module_utils.autotune import checkpoints, dashboard
from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune import report, trialdir, trialrun
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.progress import ProgressLog
from ansible.module_utils.autotune.runners import make_runner, runner_class
from ansible.module_utils.autotune.storage import make_storage, masked_storage, open_study, shared
from ansible.module_utils.autotune.study import VERIFY_DIR, StudyLoop, verification_data
from ansible.module_utils.autotune.tune import STUDY_MARK, RunDirLock, check_run_dir, summarise

FINGERPRINT_ATTR = "fleet_dataset_fingerprint"  # study user attribute: the packed data set every worker must hold
# The files of a trial folder that reach the artifact store when it ends (trialdir.py names them); its checkpoint goes
# there while it trains (checkpoints.py) and is removed when it is told.
ARTIFACT_FILES = (trialdir.SPEC, trialdir.MODEL, trialdir.METRICS, trialdir.RESULT, trialdir.LOG, trialdir.SAVED_MODEL)


def pack_fingerprint(packed):
    """The packed data set's identity: a digest of its bytes (names and contents of its files)."""
    if not os.path.isfile(os.path.join(packed, tune_dataset.PACK_META)):
        raise AutotuneError(f"dataset: {packed!r} is not a packed data set (no {tune_dataset.PACK_META}); "
                            "expected the folder the controller packed and shipped")
    digest = hashlib.sha256()
    for name in sorted(os.listdir(packed)):
        path = os.path.join(packed, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        digest.update(name.encode() + b"\0")
        with trialdir.open_regular(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _need_server(storage):
    if not shared(storage):
        raise AutotuneError(f"storage: {masked_storage(str(storage))!r} is a file of one host; expected a database "
                            "server URL every trainer host reaches (postgresql://..., docs/postgresql.md)")


def _need_template(plan):
    if plan["api"] != "template":
        raise AutotuneError(f"model: a {plan['api']} model is not shipped to trainer hosts; expected model.template "
                            "(the hosts render it from model_templates/)")


def create(config, plan, run_dir, storage):
    """Controller: pack the data set, create the study with its fingerprint, enqueue the baseline once."""
    _need_server(storage)
    _need_template(plan)
    os.makedirs(run_dir, exist_ok=True)
    check_run_dir(run_dir, config["study"])
    with open(os.path.join(run_dir, STUDY_MARK), "w", encoding="utf-8") as handle:
        handle.write(config["study"])
    dataset = tune_dataset.prepare(config["dataset"], os.path.join(run_dir, "data"), ProgressLog(run_dir))
    fingerprint = pack_fingerprint(dataset["path"])
    study = open_study(config, plan, make_storage(storage, config["workers"]))
    known = study.user_attrs.get(FINGERPRINT_ATTR)
    if known and known != fingerprint:
        raise AutotuneError(f"dataset: study {config['study']!r} was created with data set {known}, the controller's "
                            f"packs to {fingerprint}; expected the same data for every run of a study (give new data "
                            "its own study name)")
    if not known:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    enqueued = not study.get_trials(deepcopy=False)
    if enqueued:  # the committed model is trial 0, enqueued here once, not by each worker
        study.enqueue_trial({n: plan["baseline"][n] for n in plan["space"]}, user_attrs={"baseline": True})
    return {"run_dir": run_dir, "study": config["study"], "config": config["source"], "dataset": dataset["path"],
            "fingerprint": fingerprint,
            "n_trials": len(study.get_trials(deepcopy=False)), "baseline_enqueued": enqueued,
            "storage": masked_storage(storage), "n_train": dataset["n_train"], "n_val": dataset["n_val"]}


class ArtifactUploader:
    """StudyLoop.after_trial: each ended trial's files go to Optuna's artifact store (optuna.artifacts), so they
    outlive the host; the worker that trained it is recorded on the trial."""

    def __init__(self, store, worker, progress):
        self.store, self.worker, self.progress = store, worker, progress

    def __call__(self, trial, trial_dir, attrs):
        attrs["worker"] = self.worker
        if self.store is None:
            return
        uploaded = []
        try:
            for name in ARTIFACT_FILES:
                path = os.path.join(trial_dir, name)
                if os.path.isfile(path) and not os.path.islink(path):  # the folder is writable by the trained code
                    optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=path, study_or_trial=trial)
                    uploaded.append(name)
        except artifact_stores.STORE_ERRORS as exc:
            attrs["artifacts_error"] = f"{type(exc).__name__}: {exc}"
            self.progress(f"trial {trial.number:3d}  artifacts not stored ({attrs['artifacts_error']})")
        attrs["artifacts"] = uploaded


def worker_seed(worker):
    """A stable offset of the sampler's seed per worker name."""
    return int(hashlib.sha256(worker.encode()).hexdigest()[:6], 16)


def check_data(packed, fingerprint, study, storage, worker):
    """A worker joins only with the study's data set: its packed folder must match the study's fingerprint."""
    found = pack_fingerprint(packed)
    if found != fingerprint:
        raise AutotuneError(f"dataset: host {worker} holds data set {found} at {packed!r}, study {study!r} uses "
                            f"{fingerprint}; expected the controller's packed data set, so this host does not join")
    try:
        recorded = optuna.load_study(study_name=study, storage=storage).user_attrs.get(FINGERPRINT_ATTR)
    except (KeyError, optuna.exceptions.OptunaError, SQLAlchemyError) as exc:
        raise AutotuneError(f"storage: study {study!r} cannot be loaded from {masked_storage(storage)} "
                            f"({type(exc).__name__}); expected it created by the controller play of playbooks/fleet.yml")
    if recorded != fingerprint:
        raise AutotuneError(f"dataset: study {study!r} was created with data set {recorded}, host {worker} was given "
                            f"{fingerprint}; expected the data set the study was created with")


def _pack_facts(packed, fingerprint):
    meta = trialdir.read_json(os.path.join(packed, tune_dataset.PACK_META), {})
    return {"path": packed, "classes": meta.get("classes", []), "counts": {}, "n_train": meta.get("n_train"),
            "n_val": meta.get("n_val"), "input_shape": meta.get("input_shape"), "fingerprint": fingerprint,
            "source": packed}


def work(config, plan, run_dir, storage, worker, packed, fingerprint, artifacts=None, trainer_path=None, s3=None):
    """A trainer host: join the study with the shipped data set and train until the study stops."""
    _need_server(storage)
    check_data(packed, fingerprint, config["study"], storage, worker)
    store = artifact_stores.make_store(artifacts, s3)
    os.makedirs(run_dir, exist_ok=True)
    started = time.time()
    # Each worker its own seed: workers started together would otherwise draw the same points in the same order.
    config = dict(config, search=dict(config["search"], seed=config["search"]["seed"] + worker_seed(worker)))
    with RunDirLock(run_dir):
        progress = ProgressLog(run_dir)
        runner = make_runner(config["runner"], plan["facts"]["framework"], trainer_path, plan.get("read_only_paths", ()))
        runner.warm_up(packed, {"study": config["study"], "run_dir": run_dir})  # the host's first trial starts warm
        notes = dashboard.Notes(progress)
        loop = StudyLoop(config, plan, _pack_facts(packed, fingerprint), runner, run_dir, storage, progress, notes)
        loop.after_trial = ArtifactUploader(store, worker, progress)
        if store is not None:  # each running trial's checkpoint too, so a retry on another host resumes from it
            loop.checkpoints = checkpoints.Shipper(store, run_dir, config["runner"], progress)
        progress(f"worker {worker}: study {config['study']}, {runner.describe()}")
        try:
            study, reason, new_trials = loop.run()
        except (OSError, optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
            raise AutotuneError(f"worker {worker}: stopped ({type(exc).__name__}: {masked_storage(str(exc))[:300]}); "
                                "expected a reachable storage: the study keeps what finished, run the play again")
        finally:
            runner.close()
            notes.close()
        trained = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("run_dir") == run_dir]
        return {"worker": worker, "run_dir": run_dir, "stop_reason": reason, "new_trials": new_trials,
                "trained": trained, "seconds": round(time.time() - started, 3), "progress": progress.lines}


def _inside(relative):
    """A relative folder from a trial's attributes, kept inside the run folder."""
    relative = os.path.normpath(relative or "")
    return None if relative in ("", ".") or relative.startswith("..") or os.path.isabs(relative) else relative


def _download(store, storage, trial, run_dir):
    """One trial's artifacts into the controller's run folder, at the paths its attributes name."""
    folder = _inside(trial.user_attrs.get("trial_dir"))
    if folder is None:
        return 0
    code = _inside(trial.user_attrs.get("code"))
    count = 0
    for meta in optuna.artifacts.get_all_artifact_meta(trial, storage=storage):
        name = os.path.basename(meta.filename)
        if name not in ARTIFACT_FILES:
            continue
        targets = [os.path.join(run_dir, folder, name)]
        if name == trialdir.MODEL and code:
            targets.append(os.path.join(run_dir, code))
        for target in targets:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.exists(target):
                os.remove(target)  # download_artifact refuses to overwrite; a second collect refreshes
            optuna.artifacts.download_artifact(artifact_store=store, file_path=target, artifact_id=meta.artifact_id)
        count += 1
    return count


def _held_out_scorer(config, plan, run_dir, dataset):
    """The workers never hold the test split: the controller scores the best trial's model on it when it collects."""
    def score(record):
        if not record["trial_dir"]:
            return {}
        data = verification_data(config, plan, dataset)
        out_dir = os.path.join(run_dir, VERIFY_DIR, "held-out-" + os.path.basename(record["trial_dir"]))
        runner = runner_class("local")(warm=False)
        labels = {"study": config["study"], "run_dir": run_dir, "trial": os.path.basename(record["trial_dir"])}
        scores, why = trialrun.verify(runner, record["trial_dir"], out_dir, data, labels, config["target"]["metric"])
        if scores is None:
            return {"reason": f"its saved model could not be scored on the held-out split: {why}"}
        return {"test_value": scores["test"], "n_test": scores.get("n_test"), "goal_value": scores["test"]}
    return score


class FleetWorkers:
    """Where the trials ran, for summary.json's runner fields: the trainer hosts of the fleet."""
    name = "fleet"

    def __init__(self, workers):
        self.workers = workers

    def describe(self):
        return {"hosts": [w.get("worker") for w in self.workers],
                "lost": [w.get("worker") for w in self.workers if w.get("lost")]}


def collect(config, plan, run_dir, storage, artifacts, workers, s3=None):
    """Controller: the study and every trial's artifacts into run_dir; summary.json as for one host."""
    database = make_storage(storage, config["workers"])
    study = optuna.load_study(study_name=config["study"], storage=database)
    store = artifact_stores.make_store(artifacts, s3)
    fetched = sum(_download(store, database, t, run_dir) for t in study.trials) if store else 0
    trials = study.get_trials(deepcopy=False)
    reasons = [w["stop_reason"] for w in workers if w.get("stop_reason")]
    target = config["target"]
    reason = (study_budget.stop_reason(trials, target["goal"], config["budget"], 0, target["direction"])
              or (reasons[0] if reasons else "every worker ended"))
    dataset = tune_dataset.prepare(config["dataset"], os.path.join(run_dir, "data"))
    summary = summarise(config, study, reason, run_dir, storage, FleetWorkers(workers), dataset, plan,
                        scorer=_held_out_scorer(config, plan, run_dir, dataset))
    lines = [line for w in workers for line in w.get("progress", [])]
    summary.update(new_trials=sum(w.get("new_trials", 0) for w in workers), artifacts_fetched=fetched,
                   seconds=max([w.get("seconds", 0) for w in workers] or [0]), progress=lines, workers=workers,
                   dashboard_url=None)
    summary["verdict"] = report.verdict(summary)
    report.write_summary(run_dir, summary)
    return summary

