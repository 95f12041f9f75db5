"""One tuning run, end to end: config -> data -> study loop -> summary, plot and best model."""
import fcntl
import os
import shutil
import time

import optuna
from sqlalchemy.exc import SQLAlchemyError

from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune import dashboard
from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune import report, strategies, trialdir
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.kinds import kind_of
from ansible.module_utils.autotune.learn import LEARNED
from ansible.module_utils.autotune.modelcode import plan as model_plan
from ansible.module_utils.autotune.objective import relation
from ansible.module_utils.autotune.progress import ProgressLog
from ansible.module_utils.autotune.record import Recorder
from ansible.module_utils.autotune.runners import make_runner, runner_facts
from ansible.module_utils.autotune.storage import check_storage, default_storage, masked_storage, reusing_storages
from ansible.module_utils.autotune.study import StudyLoop
from ansible.module_utils.autotune.trialdir import reaches


STUDY_MARK = ".study"  # the name of the study a run folder belongs to


def resolve_run_dir(config, runs_root):
    return config.get("run_dir") or os.path.join(os.path.abspath(runs_root), config["study"])


def check_run_dir(run_dir, study):
    """One study per run folder: a run_dir shared by two studies would have one overwrite the other's trials."""
    try:
        with open(os.path.join(run_dir, STUDY_MARK), encoding="utf-8") as handle:
            owner = handle.read().strip()
    except OSError:
        return
    if owner and owner != study:
        raise AutotuneError(f"run_dir: {run_dir!r} holds study {owner!r}, not {study!r}; expected one run folder per "
                            "study (leave run_dir unset, or give each study its own)")


class RunDirLock:
    """One controller per run directory: a second one fails at once instead of corrupting the first."""

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, trialdir.RUN_LOCK)
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise AutotuneError(f"run_dir: {os.path.dirname(self.path)!r} is in use by another tune run (pid {holder}); "
                                "expected one controller per run directory")
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def prepare(config_path, templates_dir, overrides=None, runs_root="runs", storage=None, pushed=False, data_roots=(),
            connect_storage=True, limits=None):
    """Validate everything that can be validated before training; nothing is written.

    ``limits``: the operator's caps (autotune_limits), applied over whatever budget the configuration asks
    (config.apply_limits). The returned config's ``warnings`` hold one line per thing that will run but is
    probably not what the user meant (files that are not images, tiny images, a script's surplus outputs or
    second fit). The storage URL is checked last (its scheme; with ``connect_storage`` one connection to a
    database server)."""
    config = tune_config.load(config_path, overrides, pushed=pushed, data_roots=data_roots)
    tune_config.apply_limits(config, limits)
    plan = model_plan(config, templates_dir)
    warnings = []
    classes = tune_dataset.scan(config["dataset"]["path"], warnings)
    warnings += tune_dataset.size_warnings(classes, config["dataset"]["image_size"])
    errors, doubts = kind_of(plan).check(plan, classes)  # a script's output layer against the classes
    if errors:
        raise AutotuneError(errors[0], errors)
    warnings += doubts
    runner_facts(config["runner"], plan["facts"]["framework"])  # fail before anything starts
    run_dir = resolve_run_dir(config, runs_root)
    check_run_dir(run_dir, config["study"])
    storage = storage or config.get("storage") or default_storage(run_dir)
    check_storage(storage, connect=connect_storage)
    config["warnings"] = warnings
    return config, plan, run_dir, storage


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 3) if values else None


class StudyRun:
    """One study loop on this host, built one way for a single host (``run``) and a fleet worker (fleet.work): the
    run folder's lock, the progress log, the runner with its warm spares, the dashboard notes and the loop. A change
    to warm-up, notes or locking is made here once.

    ``with StudyRun(...) as session``: the folder is locked; ``close()`` (also on leaving) ends the spares no trial
    needed and the notes' writer; the lock is released last."""

    def __init__(self, config, plan, run_dir, storage, trainer_path=None):
        self.config, self.plan, self.run_dir, self.storage = config, plan, run_dir, storage
        self.trainer_path = trainer_path
        self.lock = RunDirLock(run_dir)
        self.progress = self.runner = self.notes = None
        self.closed = False

    def __enter__(self):
        os.makedirs(self.run_dir, exist_ok=True)
        self.lock.__enter__()
        try:
            self.progress = ProgressLog(self.run_dir)
            self.runner = make_runner(self.config["runner"], self.plan["facts"]["framework"], self.trainer_path,
                                      self.plan.get("read_only_paths", ()))
            self.notes = dashboard.Notes(self.progress)  # written beside the loop, not in its way
        except BaseException:
            self.lock.__exit__()
            raise
        self.closed = False
        return self

    def warm_up(self, pack):
        """Each slot's first trainer starts (imports Keras) now and waits for ``pack``: the first trial starts warm."""
        self.runner.warm_up(pack, {"study": self.config["study"], "run_dir": self.run_dir})

    def run(self, dataset, stopped, after_trial=None, checkpoints=None):
        """The loop until a stop reason: (study, reason, new trials). A lost disk or storage is one line,
        ``stopped(detail)`` (the storage URL masked in the detail). ``after_trial`` sees each ended trial,
        ``checkpoints`` ships running trials' checkpoints off the host (fleet: checkpoints.Shipper)."""
        loop = StudyLoop(self.config, self.plan, dataset, self.runner, self.run_dir, self.storage, self.progress,
                         self.notes)
        loop.after_trial = after_trial
        if checkpoints is not None:
            loop.checkpoints = checkpoints
        try:
            return loop.run()
        except (OSError, optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
            raise AutotuneError(stopped(f"{type(exc).__name__}: {masked_storage(str(exc))[:300]}"))

    def close(self):
        """Nothing is left running after the study (warm spares); the notes written so far are flushed."""
        if self.runner is not None and not self.closed:
            self.runner.close()
            self.notes.close()
        self.closed = True

    def __exit__(self, *exc):
        try:
            self.close()
        finally:
            self.lock.__exit__(*exc)


def run(config, plan, run_dir, storage, trainer_path=None, dashboard_url=None):
    """Train until the goal or the budget; write summary.json, the plot and the best model. Return the summary."""
    started = time.time()
    with reusing_storages(), StudyRun(config, plan, run_dir, storage, trainer_path) as session:
        check_run_dir(run_dir, config["study"])
        with open(os.path.join(run_dir, STUDY_MARK), "w", encoding="utf-8") as handle:
            handle.write(config["study"])
        progress, runner = session.progress, session.runner
        try:
            dataset = _data_with_warm_trainers(config, run_dir, session)
            watch = dashboard.prepare(config, plan, storage, runner.name, dashboard_url, progress, session.notes)
            progress(_header(config, dataset, runner, watch))
            report.import_plotting_ahead()  # while trial 0 trains: the plot at the end does not wait for imports
            # Disk full, database locked or gone: what finished is in the study; say so in one line and stop.
            study, stop_reason, new_trials = session.run(dataset, lambda detail: (
                f"run: the host stopped the study ({detail}); finished trials are kept in {masked_storage(storage)} "
                f"and {run_dir}; expected free disk space and a reachable storage: fix it and run again to resume"),
                after_trial=Recorder(config, plan, dataset, runner, run_dir))  # records/NNNN.json (reproduce)
        finally:
            session.close()
        progress(f"stopped: {stop_reason}")
        summary = summarise(config, study, stop_reason, run_dir, storage, runner, dataset, plan)
        summary.update(new_trials=new_trials, seconds=round(time.time() - started, 3), progress=progress.lines)
        summary["verdict"] = report.verdict(summary)
        summary.update(watch)
        report.write_summary(run_dir, summary)
        return summary


def _header(config, dataset, runner, watch):
    """The run's first progress line: the goal (its comparison in target.direction), strategy, runner and data."""
    target = config["target"]
    return (f"study {config['study']}: goal {target['metric']} {relation(target['direction'])} {target['goal']:g}, "
            f"strategy {config['search']['strategy']}, runner {runner.name}, "
            f"data {dataset['n_train']} train / {dataset['n_val']} val / {dataset['n_test']} test (held out) "
            f"{dataset['classes']}" + (f", dashboard {watch['dashboard_url']}" if watch["dashboard_url"] else ""))


def _data_with_warm_trainers(config, run_dir, session):
    """Pack the data set while each slot's first trainer starts (imports Keras) beside it: trial 0 starts warm."""
    cache_dir = os.path.join(run_dir, "data")
    classes = tune_dataset.scan(config["dataset"]["path"])
    pack, _ = tune_dataset.packed_path(config["dataset"], cache_dir, classes)
    session.warm_up(pack)
    return tune_dataset.prepare(config["dataset"], cache_dir, session.progress, classes)  # lines for large sets


def _copy_regular(source, target):
    """Copy a file the trial wrote, refusing links: the trial folder is writable by the code under test."""
    with trialdir.open_regular(source, "rb") as src, open(target + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(target + ".tmp", target)


def held_out_note(config, plan):
    """How far the test score can be trusted: None when no trial could read the test images, else why not."""
    return kind_of(plan).held_out_note(config, plan)


def summarise(config, study, stop_reason, run_dir, storage, runner, dataset, plan, scorer=None):
    """summary.json's content. The best is a trial scored apart; ``scorer(record)`` (a fleet's controller) scores
    it on the held-out split when the loop that ran it could not."""
    records = report.trial_records(study)
    for record in records:
        for key in ("code", "trial_dir"):
            record[key] = os.path.join(run_dir, record[key]) if record[key] else None
    goal, metric, direction = (config["target"][k] for k in ("goal", "metric", "direction"))
    chosen = study_budget.best_trial(study.get_trials(deepcopy=False), goal, direction)
    best = next(r for r in records if r["number"] == chosen.number) if chosen else None
    if best and best["test_value"] is None and scorer:
        best.update(scorer(best))
    best_model = _copy_best(best, run_dir)
    completed = [r for r in records if r["state"] == "COMPLETE" and r["value"] is not None]
    plot_path = report.plot(study, goal, metric, os.path.join(run_dir, report.PLOT_NAME)) if completed else None
    trained = [r for r in records if r["outcome"] not in ("duplicate",)]
    test_value = best["test_value"] if best else None
    tested = metric[len("val_"):]  # val_auc is auc on the held-out split
    return {
        "study": config["study"],
        "metric": metric,
        "direction": direction,
        "goal": goal,
        "reached": bool(best and reaches(best["goal_value"], goal, direction)),
        "best_value": best["value"] if best else None,
        "best_test_value": test_value,
        # The binomial standard error is an accuracy's (a share of images right); other metrics get none.
        "test": {"metric": tested, "n": dataset.get("n_test"), "source": dataset.get("test_source"),
                 "standard_error": tune_dataset.standard_error(test_value, dataset.get("n_test"))
                 if tested == "accuracy" else None,
                 "caveat": held_out_note(config, plan)},
        "best_params": best["params"] if best else None,
        "best_trial": best["number"] if best else None,
        "best_model": best_model,
        "best_code": best["code"] if best else None,
        "baseline_code": records[0]["code"] if records else None,
        "n_trials": len(records),
        "n_completed": len(completed),
        "n_failed": sum(r["state"] == "FAIL" for r in records),
        "n_pruned": sum(r["state"] == "PRUNED" for r in records),
        "stop_reason": stop_reason,
        "strategy": config["search"]["strategy"],
        "pruner": strategies.pruner_name(config, plan),
        # The epochs hyperparameter the pruner schedules (drawn trials may train its most), or None: sampled.
        "scheduled_epochs": strategies.scheduled_epochs(config, plan),
        "searched": sorted(plan["space"]),
        "runner": runner.name,
        "runner_details": runner.describe(),
        "storage": masked_storage(storage),
        "run_dir": run_dir,
        "notify": config["notify"],
        "plot": plot_path,
        "dataset": {k: dataset.get(k) for k in ("source", "classes", "counts", "n_train", "n_val", "n_test",
                                                 "test_source", "input_shape", "fingerprint")},
        "mean_startup_seconds": _mean(r["startup_seconds"] for r in trained),
        "mean_fit_seconds": _mean(r["fit_seconds"] for r in trained),
        "learned": study.user_attrs.get(LEARNED),  # the earlier studies this one started from (learn.py)
        "trials": records,
    }


def _copy_best(best, run_dir):
    """best_model.keras and best_model.py from the best trial (a regular file only), or None."""
    if not best or not best["trial_dir"] or not os.path.isfile(os.path.join(best["trial_dir"], trialdir.SAVED_MODEL)):
        return None
    best_model = os.path.join(run_dir, "best_model.keras")
    _copy_regular(os.path.join(best["trial_dir"], trialdir.SAVED_MODEL), best_model)
    _copy_regular(best["code"], os.path.join(run_dir, "best_model.py"))
    return best_model
