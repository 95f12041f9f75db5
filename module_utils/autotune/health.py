"""The health check: relaunch trial containers that died from outside while their study runs.

A trial container is ours when it carries io.autotune.project=autotune. One
that stopped abnormally (killed, crashed engine, daemon restart, host reboot),
whose trial has no result, that the controller did not stop on purpose, and
whose study's controller is alive (it holds the run directory's lock), is
started again: the trainer resumes from its last epoch checkpoint. Containers
that finished, failed by themselves (crash, NaN, OOM), belong to finished
studies or are not ours are never touched. A trial relaunched too often is
given up, with the reason written where its controller reads it.
"""
import fcntl
import json
import os
import time

from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.runner_docker import (
    HEALTH_FILE, LABEL_PREFIX, PROJECT, PROJECT_LABEL, STOPPED_MARKER, abnormal_end, read_health)


class HealthLock:
    """Overlapping health runs: the first acts, the others see ``acquired`` False and leave."""

    def __init__(self, path):
        self.path = path
        self.handle = None
        self.acquired = False

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.handle = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
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
    path = os.path.join(run_dir, ".tune.lock")
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _write_health(trial_dir, health):
    path = os.path.join(trial_dir, HEALTH_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(health, handle, indent=2)
    os.replace(tmp, path)


def examine(container):
    """(decision, why) for one of our containers: 'relaunch', or 'leave' with the reason."""
    labels = container.labels
    state = container.attrs.get("State", {})
    run_dir, trial = labels.get(f"{LABEL_PREFIX}.run_dir", ""), labels.get(f"{LABEL_PREFIX}.trial", "")
    trial_dir = os.path.join(run_dir, "trials", f"{int(trial):04d}") if trial.isdigit() else ""
    if state.get("Status") not in ("exited", "dead"):
        return "leave", f"it is {state.get('Status')}"
    if not abnormal_end(state):
        return "leave", "it ended by itself (OOM)" if state.get("OOMKilled") else f"it ended by itself (exit {state.get('ExitCode')})"
    if not trial_dir or not os.path.isdir(trial_dir):
        return "leave", "its trial directory is gone"
    if os.path.exists(os.path.join(trial_dir, "result.json")):
        return "leave", "its trial has a result"
    if os.path.exists(os.path.join(trial_dir, STOPPED_MARKER)):
        return "leave", "its controller stopped it"
    if not controller_alive(run_dir):
        return "leave", "its study's controller is not running (tune.yml resumes the trial when run again)"
    return "relaunch", f"it died (exit {state.get('ExitCode')}{', ' + state.get('Error') if state.get('Error') else ''})"


def heal(client, relaunch_limit=3, check_mode=False):
    """One pass over our containers; returns a list of actions {action, container, study, trial, why}."""
    actions = []
    try:
        containers = client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={PROJECT}"})
    except Exception as exc:  # pylint: disable=broad-except
        raise AutotuneError(f"docker: cannot list containers ({exc}); expected a running engine")
    for container in containers:
        labels = container.labels
        entry = {"container": container.name, "study": labels.get(f"{LABEL_PREFIX}.study"),
                 "trial": labels.get(f"{LABEL_PREFIX}.trial")}
        decision, why = examine(container)
        if decision == "leave":
            actions.append(dict(entry, action="left", why=why))
            continue
        run_dir = labels[f"{LABEL_PREFIX}.run_dir"]
        trial_dir = os.path.join(run_dir, "trials", f"{int(entry['trial']):04d}")
        health = read_health(trial_dir)
        if health.get("gave_up"):
            actions.append(dict(entry, action="left", why="given up earlier"))
            continue
        if health["relaunches"] >= relaunch_limit:
            health["gave_up"] = f"the container died {health['relaunches'] + 1} times; relaunch limit {relaunch_limit} reached"
            if not check_mode:
                _write_health(trial_dir, health)
            actions.append(dict(entry, action="gave_up", why=health["gave_up"]))
            continue
        if not check_mode:
            container.start()
            health["relaunches"] += 1
            health["history"].append({"at": time.time(), "why": why})
            _write_health(trial_dir, health)
        actions.append(dict(entry, action="relaunched", why=why, relaunches=health["relaunches"]))
    return actions
