"""One study over many trainer hosts (playbooks/fleet.yml): Optuna's own distributed mode, deployed by Ansible.

The controller packs the data set once and creates the study in a database server (``create``): the data set's
fingerprint goes into the study, the committed baseline is enqueued as trial 0, once. Each trainer host runs a
worker (``work``): the same study loop as a single host (study.py: ask/tell, TPE with constant_liar, heartbeats,
goal and budget over every worker), trials in fresh local processes, each trial's files copied off the host into
Optuna's artifact store as it ends. A host whose shipped data set does not match the study's fingerprint refuses
to join; so does one whose copy of a ``model.file`` model's folder (a script or a build_model(hp) file, shipped as
one archive) differs from the controller's. The controller then reads the study and the artifacts into one run folder (``collect``) for the report.
docs/fleet.md.
"""
import hashlib
import os
import stat
import tarfile
import time

import optuna
from sqlalchemy.exc import SQLAlchemyError

from ansible.module_utils.autotune import artifacts as artifact_stores
from ansible.module_utils.autotune import checkpoints
from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune import report, scriptcode, trialdir, trialrun
from ansible.module_utils.autotune.dataset import pack_fingerprint  # noqa: F401 - fleet.pack_fingerprint, as before
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.progress import ProgressLog
from ansible.module_utils.autotune.runners import runner_class
from ansible.module_utils.autotune.storage import make_storage, masked_storage, open_study, shared
from ansible.module_utils.autotune.study import VERIFY_DIR, verification_data
from ansible.module_utils.autotune.tune import STUDY_MARK, StudyRun, check_run_dir, summarise

FINGERPRINT_ATTR = "fleet_dataset_fingerprint"  # study user attribute: the packed data set every worker must hold
MODEL_FINGERPRINT_ATTR = "fleet_model_fingerprint"  # study user attribute: the model.file folder every worker must hold
# A model's folder goes whole to every host (its script may read its own images there): bounded, so a checkout's
# stray gigabytes never reach the fleet. The seed's folder with its images is about 4 MB in 2,000 files.
MAX_MODEL_FOLDER_BYTES = 1 << 30
MAX_MODEL_FOLDER_FILES = 20000
# The files of a trial folder that reach the artifact store when it ends (trialdir.py names them); its checkpoint goes
# there while it trains (checkpoints.py) and is removed when it is told.
ARTIFACT_FILES = (trialdir.SPEC, trialdir.MODEL, trialdir.METRICS, trialdir.RESULT, trialdir.LOG, trialdir.SAVED_MODEL)


def _need_server(storage):
    if not shared(storage):
        raise AutotuneError(f"storage: {masked_storage(str(storage))!r} is a file of one host; expected a database "
                            "server URL every trainer host reaches (postgresql://..., docs/postgresql.md)")


def _model_files(folder, exclude=()):
    """The files of a model's folder that are shipped, as sorted relative paths: regular files only (never a link),
    not in hidden or skipped folders (scriptcode.SKIPPED_FOLDERS) nor in ``exclude`` (the controller's run folder),
    no hidden files (a checkout's .env or .netrc stays home); at most MAX_MODEL_FOLDER_FILES and _BYTES."""
    found, total = [], 0
    excluded = {os.path.realpath(p) for p in exclude}
    for root, dirs, files in os.walk(folder):  # os.walk never descends through a link to a folder
        dirs[:] = sorted(d for d in dirs if d not in scriptcode.SKIPPED_FOLDERS and not d.startswith(".")
                         and os.path.realpath(os.path.join(root, d)) not in excluded)
        for name in sorted(n for n in files if not n.startswith(".")):
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(info.st_mode):
                found.append(os.path.relpath(os.path.join(root, name), folder))
                total += info.st_size
        if len(found) > MAX_MODEL_FOLDER_FILES or total > MAX_MODEL_FOLDER_BYTES:
            raise AutotuneError(f"model.file: its folder {folder!r} holds over {MAX_MODEL_FOLDER_FILES} files or "
                                f"{MAX_MODEL_FOLDER_BYTES >> 20} MiB; expected a model's folder of ordinary size "
                                "(it is shipped to every trainer host): move other data out of it")
    return sorted(found)


class _ReadThrough:
    """A file opened for reading that feeds ``digest`` with its name, size and every byte read from it, so the
    archive and its fingerprint come from one read of each file."""

    def __init__(self, path, digest, name):
        self.handle, self.digest = trialdir.open_regular(path, "rb"), digest
        self.size = os.fstat(self.handle.fileno()).st_size
        digest.update(name.encode() + b"\0" + str(self.size).encode() + b"\0")

    def read(self, size=-1):
        block = self.handle.read(size)
        self.digest.update(block)
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def model_fingerprint(folder, files=None):
    """A model folder's identity: a digest of its shipped files' names, sizes and bytes (16 hex digits)."""
    digest = hashlib.sha256()
    for name in files if files is not None else _model_files(folder):
        with _ReadThrough(os.path.join(folder, name), digest, name) as handle:
            while handle.read(1 << 20):
                pass
    return digest.hexdigest()[:16]


def _script_data(plan, config, folder):
    """A script reads its own images: on a fleet they must be inside its folder, which is what the hosts get."""
    if plan["api"] != "script":
        return None
    data, real = os.path.realpath(config["dataset"]["path"]), os.path.realpath(folder)
    if not data.startswith(real + os.sep):
        raise AutotuneError(f"dataset.path: {config['dataset']['path']!r} is outside the script's folder {folder!r}; "
                            "expected the images a script reads inside its folder on a fleet (the folder is what "
                            "the trainer hosts get), or model.template")
    return os.path.relpath(data, real)


def stage_model(plan, config, run_dir):
    """Controller: a model.file model's folder as one archive in the run folder, to ship to every host, and its
    fingerprint (None for a template, which the hosts render from model_templates/)."""
    if plan["api"] == "template":
        return None
    folder = os.path.dirname(os.path.abspath(plan["file"]))
    data = _script_data(plan, config, folder)
    files = _model_files(folder, exclude=(run_dir,))
    digest, partial = hashlib.sha256(), os.path.join(run_dir, ".model.tar.tmp")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        for name in files:
            with _ReadThrough(os.path.join(folder, name), digest, name) as handle:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = handle.size, int(time.time()), 0o640
                archive.addfile(info, handle)
    fingerprint = digest.hexdigest()[:16]
    path = os.path.join(run_dir, f"model-{fingerprint}.tar")
    os.replace(partial, path)
    return {"archive": path, "folder": f"model-{fingerprint}", "file": os.path.relpath(plan["file"], folder),
            "data": data, "fingerprint": fingerprint, "files": len(files)}


def shipped_model(model, worker):
    """A worker's overrides for its shipped copy of a model.file model's folder, once the copy is the controller's:
    model.file, and for a script dataset.path (the images it reads, inside that folder)."""
    found = model_fingerprint(model["path"]) if os.path.isdir(model["path"]) else "none"
    if found != model["fingerprint"]:
        raise AutotuneError(f"model.file: host {worker} holds model folder {found} at {model['path']!r}, the controller "
                            f"shipped {model['fingerprint']}; expected the controller's copy, so this host does not join")
    override = {"model": {"file": os.path.join(model["path"], _inside(model["file"]) or "?")}}
    if model.get("data"):
        override["dataset"] = {"path": os.path.join(model["path"], _inside(model["data"]) or "?")}
    return override


def check_pushed(config, worker):
    """Pushed code on a worker meets the bounds it meets on one host: trials that would share the worker's user
    (which holds the module's arguments, the storage URL) are refused, as the local runner refuses them there."""
    lines = runner_class("local").pushed_lines(config["runner"].get("local", {}))
    if lines:
        raise AutotuneError(f"worker {worker}: {lines[0]}")


def create(config, plan, run_dir, storage):
    """Controller: pack the data set, create the study with its fingerprint, enqueue the baseline once."""
    _need_server(storage)
    os.makedirs(run_dir, exist_ok=True)
    check_run_dir(run_dir, config["study"])
    with open(os.path.join(run_dir, STUDY_MARK), "w", encoding="utf-8") as handle:
        handle.write(config["study"])
    dataset = tune_dataset.prepare(config["dataset"], os.path.join(run_dir, "data"), ProgressLog(run_dir))
    fingerprint = pack_fingerprint(dataset["path"])
    model = stage_model(plan, config, run_dir)
    study = open_study(config, plan, make_storage(storage, config["workers"]))
    known = study.user_attrs.get(FINGERPRINT_ATTR)
    if known and known != fingerprint:
        raise AutotuneError(f"dataset: study {config['study']!r} was created with data set {known}, the controller's "
                            f"packs to {fingerprint}; expected the same data for every run of a study (give new data "
                            "its own study name)")
    if not known:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    # The model may change between runs of a study (a new commit): the hosts must hold this run's.
    study.set_user_attr(MODEL_FINGERPRINT_ATTR, model["fingerprint"] if model else None)
    enqueued = not study.get_trials(deepcopy=False)
    if enqueued:  # the committed model is trial 0, enqueued here once, not by each worker
        study.enqueue_trial({n: plan["baseline"][n] for n in plan["space"]}, user_attrs={"baseline": True})
    return {"run_dir": run_dir, "study": config["study"], "config": config["source"], "dataset": dataset["path"],
            "fingerprint": fingerprint, "model": model,
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


def check_data(packed, fingerprint, study, storage, worker, shipped_model_print=None):
    """A worker joins only with the study's data set and model: its packed folder must match the study's fingerprint,
    and the model folder it was shipped (``shipped_model_print``, None for a template) the study's."""
    found = pack_fingerprint(packed)
    if found != fingerprint:
        raise AutotuneError(f"dataset: host {worker} holds data set {found} at {packed!r}, study {study!r} uses "
                            f"{fingerprint}; expected the controller's packed data set, so this host does not join")
    try:
        attrs = optuna.load_study(study_name=study, storage=storage).user_attrs
    except (KeyError, optuna.exceptions.OptunaError, SQLAlchemyError) as exc:
        raise AutotuneError(f"storage: study {study!r} cannot be loaded from {masked_storage(storage)} "
                            f"({type(exc).__name__}); expected it created by the controller play of playbooks/fleet.yml")
    if attrs.get(FINGERPRINT_ATTR) != fingerprint:
        raise AutotuneError(f"dataset: study {study!r} was created with data set {attrs.get(FINGERPRINT_ATTR)}, host "
                            f"{worker} was given {fingerprint}; expected the data set the study was created with")
    if attrs.get(MODEL_FINGERPRINT_ATTR) != shipped_model_print:
        raise AutotuneError(f"model.file: study {study!r} was last created with model folder "
                            f"{attrs.get(MODEL_FINGERPRINT_ATTR)}, host {worker} was given {shipped_model_print}; "
                            "expected the model of the controller's latest run")


def _pack_facts(packed, fingerprint):
    meta = trialdir.read_json(os.path.join(packed, tune_dataset.PACK_META), {})
    return {"path": packed, "classes": meta.get("classes", []), "counts": {}, "n_train": meta.get("n_train"),
            "n_val": meta.get("n_val"), "input_shape": meta.get("input_shape"), "fingerprint": fingerprint,
            "source": packed}


def work(config, plan, run_dir, storage, worker, packed, fingerprint, artifacts=None, trainer_path=None,
         shipped_model_print=None, s3=None):
    """A trainer host: join the study with the shipped data set (and model folder) and train until the study stops."""
    _need_server(storage)
    check_data(packed, fingerprint, config["study"], storage, worker, shipped_model_print)
    store = artifact_stores.make_store(artifacts, s3)
    os.makedirs(run_dir, exist_ok=True)
    started = time.time()
    # Each worker its own seed: workers started together would otherwise draw the same points in the same order.
    config = dict(config, search=dict(config["search"], seed=config["search"]["seed"] + worker_seed(worker)))
    with StudyRun(config, plan, run_dir, storage, trainer_path) as session:
        session.warm_up(packed)  # the host's first trial starts warm
        session.progress(f"worker {worker}: study {config['study']}, {session.runner.describe()}")
        # Each running trial's checkpoint goes to the store too, so a retry on another host resumes from it.
        shipper = checkpoints.Shipper(store, run_dir, config["runner"], session.progress) if store else None
        study, reason, new_trials = session.run(
            _pack_facts(packed, fingerprint), after_trial=ArtifactUploader(store, worker, session.progress),
            checkpoints=shipper,
            stopped=lambda detail: (f"worker {worker}: stopped ({detail}); expected a reachable storage: the study "
                                    "keeps what finished, run the play again"))
    trained = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("run_dir") == run_dir]
    return {"worker": worker, "run_dir": run_dir, "stop_reason": reason, "new_trials": new_trials,
            "trained": trained, "seconds": round(time.time() - started, 3), "progress": session.progress.lines}


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

