"""The health check: relaunch trial containers that died from outside while their study runs.

A trial container is ours when it carries io.autotune.project=autotune. One
that stopped abnormally (killed, crashed engine, daemon restart, host reboot),
whose trial has no result, that the controller did not stop on purpose, and
whose study's controller is alive (it holds the run directory's lock), is
started again, or replaced by a fresh container on its trial's folder when it
was a warm spare handed the trial (relaunch.py): the trainer resumes from its
last epoch checkpoint. Containers that finished, failed by themselves (crash,
NaN, OOM), belong to finished studies or are not ours are never touched, but for one kind: a warm spare never
handed a trial whose controller is gone (killed with it) is removed with its spare folder, since no one will hand
it one. A trial relaunched too often is given up, with the reason written where its controller reads it. The
trial folder is the trial's to write: health.json is read checked and bounded (trialdir.read_health), and one bad
folder never stops the pass.
"""
import fcntl
import os
import re
import shutil
import time

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.relaunch import relaunch
from ansible.module_utils.autotune.runners import spares
from ansible.module_utils.autotune.runners.docker import (
    LABEL_PREFIX, NAME_PREFIX, PROJECT, PROJECT_LABEL, TASK_LABEL, abnormal_end)

_TRIAL_LABEL = re.compile(r"^[0-9]{1,6}$")  # ASCII digits only: str.isdigit() admits '²', which int() refuses


class HealthLock:
    """Overlapping health runs: the first acts, the others see ``acquired`` False and leave."""

    def __init__(self, path):
        self.path = path
        self.handle = None
        self.acquired = False

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        self.handle = trialdir.open_regular(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.acquired = True
        except BlockingIOError:
            self.acquired = False
        return self

    def __exit__(self, *exc):
        if self.acquired:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def controller_alive(run_dir):
    """The study's controller holds run_dir/.tune.lock while it runs (tune.RunDirLock)."""
    try:
        handle = trialdir.open_regular(os.path.join(run_dir, trialdir.RUN_LOCK))
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def trial_folder(labels):
    """The trial folder a container's labels name (a warm container's through spares.json), or '' when none."""
    run_dir, trial = labels.get(f"{LABEL_PREFIX}.run_dir", ""), labels.get(f"{LABEL_PREFIX}.trial", "")
    if not os.path.isabs(run_dir):
        return ""
    if spares.SPARE_NAME.match(trial):
        trial = spares.folder_of(run_dir, trial) or ""  # a spare never handed a trial has nothing to resume
    if not _TRIAL_LABEL.match(trial):
        return ""
    return trialdir.trial_path(run_dir, int(trial))


def orphaned_spare(container):
    """Why the container is a warm spare that no one will hand a trial, or None: it was never handed one (spares.json
    has no entry for its folder) and its study's controller is gone. A controller that resumes the study starts spares
    of its own, so this one would wait for ever (or lie exited), holding Keras and the data set in memory."""
    labels = container.labels
    run_dir, label = labels.get(f"{LABEL_PREFIX}.run_dir", ""), labels.get(f"{LABEL_PREFIX}.trial", "")
    if not (container.name.startswith(NAME_PREFIX) and os.path.isabs(run_dir) and spares.SPARE_NAME.match(label)):
        return None
    if labels.get(TASK_LABEL, "train") != "train" or spares.folder_of(run_dir, label) or controller_alive(run_dir):
        return None
    return "a warm spare never handed a trial, and its study's controller is gone"


def remove_spare(container):
    """The container and its spare folder (the label matched SPARE_NAME: a name inside the run's trials folder)."""
    labels = container.labels
    container.remove(force=True)
    shutil.rmtree(os.path.join(labels[f"{LABEL_PREFIX}.run_dir"], trialdir.TRIALS, labels[f"{LABEL_PREFIX}.trial"]),
                  ignore_errors=True)


def read_health(trial_dir):
    """The trial's health.json, checked (relaunches an integer 0..trialdir.MAX_RELAUNCHES); TrialFileError otherwise."""
    return trialdir.read_health(os.path.join(trial_dir, trialdir.HEALTH)) or {"relaunches": 0, "history": []}


def examine(container):
    """(decision, why) for one of our containers: 'relaunch', or 'leave' with the reason."""
    labels = container.labels
    state = container.attrs.get("State", {})
    run_dir, trial_dir = labels.get(f"{LABEL_PREFIX}.run_dir", ""), trial_folder(labels)
    if not container.name.startswith(NAME_PREFIX):
        return "leave", "its name is not one the docker runner gives"
    if labels.get(TASK_LABEL, "train") != "train":
        return "leave", f"it is a {labels[TASK_LABEL]} container, not a training one"
    if state.get("Status") not in ("exited", "dead"):
        return "leave", f"it is {state.get('Status')}"
    if not abnormal_end(state):
        return "leave", "it ended by itself (OOM)" if state.get("OOMKilled") else f"it ended by itself (exit {state.get('ExitCode')})"
    if not trial_dir or os.path.islink(trial_dir) or not os.path.isdir(trial_dir):
        return "leave", "its trial directory is gone"
    if os.path.lexists(os.path.join(trial_dir, trialdir.RESULT)):
        return "leave", "its trial has a result"
    if os.path.lexists(os.path.join(trial_dir, trialdir.STOPPED_MARKER)):
        return "leave", "its controller stopped it"
    if not controller_alive(run_dir):
        return "leave", "its study's controller is not running (tune.yml resumes the trial when run again)"
    return "relaunch", f"it died (exit {state.get('ExitCode')}{', ' + state.get('Error') if state.get('Error') else ''})"


def heal(client, relaunch_limit=3, check_mode=False):
    """One pass over our containers; returns a list of actions {action, container, study, trial, why}: relaunched,
    gave_up, removed (an orphaned warm spare), left, bad_trial_file or error.

    Each container is examined on its own: a malformed trial folder (a FIFO, health.json with relaunches "0"
    or -1000000) is 'bad_trial_file' with one line and no relaunch, and anything else that goes wrong with one
    container is 'error' with its reason: neither stops the pass for the others."""
    relaunch_limit = min(relaunch_limit, trialdir.MAX_RELAUNCHES)
    try:
        containers = client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={PROJECT}"})
    except Exception as exc:  # pylint: disable=broad-except
        raise AutotuneError(f"docker: cannot list containers ({exc}); expected a running engine")
    actions = []
    for container in containers:
        entry = {"container": getattr(container, "name", "?"), "study": None, "trial": None}
        try:
            actions.append(_heal_one(client, container, entry, relaunch_limit, check_mode))
        except trialdir.TrialFileError as exc:
            actions.append(dict(entry, action="bad_trial_file", why=f"{exc}; not relaunched"))
        except Exception as exc:  # pylint: disable=broad-except  # one container's trouble is its own
            actions.append(dict(entry, action="error", why=f"{type(exc).__name__}: {exc}"[:300]))
    return actions


def _heal_one(client, container, entry, relaunch_limit, check_mode):
    """The action taken for one container (entry gets its study and trial)."""
    labels = container.labels
    folder = trial_folder(labels)  # a warm container's label names its spare folder: say which trial it is
    entry.update(study=labels.get(f"{LABEL_PREFIX}.study"),
                 trial=int(os.path.basename(folder)) if folder else labels.get(f"{LABEL_PREFIX}.trial"))
    orphan = orphaned_spare(container)
    if orphan:
        if not check_mode:
            remove_spare(container)
        return dict(entry, action="removed", why=orphan)
    decision, why = examine(container)
    if decision == "leave":
        return dict(entry, action="left", why=why)
    health = read_health(folder)
    if health.get("gave_up"):
        return dict(entry, action="left", why="given up earlier")
    health.setdefault("history", [])
    relaunches = health.setdefault("relaunches", 0)
    if relaunches >= relaunch_limit:
        health["gave_up"] = f"the container died {relaunches + 1} times; relaunch limit {relaunch_limit} reached"
        if not check_mode:
            trialdir.write_json(os.path.join(folder, trialdir.HEALTH), health)
        return dict(entry, action="gave_up", why=health["gave_up"])
    health["relaunches"] += 1
    health["history"].append({"at": time.time(), "why": why})
    if not check_mode:
        # Counted before it is tried: a folder that refuses the record (a planted health.json.tmp folder) gets
        # no relaunch, so no trial is relaunched more than relaunch_limit times, whatever its folder holds.
        trialdir.write_json(os.path.join(folder, trialdir.HEALTH), health)
        replacement = relaunch(client, container, folder)
        if replacement:
            entry["replacement"] = replacement
    return dict(entry, action="relaunched", why=why, relaunches=health["relaunches"])
