"""Runners start one trial's trainer and tell how it ended.

``local`` runs ``python -m autotune_trainer`` as a fresh child process (no
memory carried from one trial to the next); the docker runner (runner_docker.py)
runs the same command in a container. Both hand back a TrialProcess the study
loop polls, so timeouts, pruning and exit classification live in one place.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_NAN = 0, 1, 2, 3  # autotune_trainer's exit codes


def tail(path, lines=12):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in handle.readlines()[-lines:]]
    except OSError:
        return []


def _die_with_parent():
    """Runs in the child before exec: SIGTERM it when the controller dies (Linux prctl PR_SET_PDEATHSIG),
    so a killed controller leaves no trainer running on; the resumed study continues from the checkpoint."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class LocalProcess:
    """A trainer child process in its own session, so a stop reaches every thread and child of it."""

    def __init__(self, popen, log_path):
        self.popen = popen
        self.log_path = log_path

    def exit_code(self):
        """None while running, else the exit status (negative: killed by that signal)."""
        return self.popen.poll()

    def stop(self, grace=5.0):
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        except ProcessLookupError:
            pass

    def outcome(self):
        """('finished'|'failed'|'killed', detail) once the process has ended."""
        code = self.popen.returncode
        if code == EXIT_OK:
            return "finished", None
        if code in (-signal.SIGKILL, 128 + signal.SIGKILL):
            return "killed", "killed by SIGKILL (out of memory?)"
        return "failed", f"exit status {code}"

    def cleanup(self):
        """Nothing to remove for a process; the log stays in the trial directory."""


class LocalRunner:
    name = "local"

    def __init__(self, trainer_path=None, python=None):
        self.trainer_path = trainer_path
        self.python = python or sys.executable

    def describe(self):
        return {"runner": self.name, "python": self.python}

    def start(self, trial_dir, data_path, labels=None):
        env = dict(os.environ, AUTOTUNE_LAUNCH_TIME=repr(time.time()), PYTHONUNBUFFERED="1",
                   TF_CPP_MIN_LOG_LEVEL="2")
        if self.trainer_path:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.trainer_path, env.get("PYTHONPATH")]))
        log_path = os.path.join(trial_dir, "trainer.log")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [self.python, "-m", "autotune_trainer", trial_dir, "--data", data_path],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=trial_dir, env=env, start_new_session=True, preexec_fn=_die_with_parent,
            )
        return LocalProcess(popen, log_path)
