"""The local runner: ``python -m autotune_trainer`` as a fresh child process per trial.

No memory is carried from one trial to the next. The child gets an allow-listed
environment, never the controller's own: the controller may hold SMTP or database
secrets, and the model code it runs is pushed code.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.runners.base import Runner, TrialProcess

# What a trainer needs from the controller's environment; everything else (secrets included) stays out.
ENVIRONMENT_ALLOWED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                       "CUDA_VISIBLE_DEVICES", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")


def trainer_environment(extra_path=None):
    env = {name: os.environ[name] for name in ENVIRONMENT_ALLOWED if name in os.environ}
    env.update(AUTOTUNE_LAUNCH_TIME=repr(time.time()), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    return env


def cpu_share(slot, slots, available=None):
    """The CPUs slot ``slot`` of ``slots`` is pinned to: an equal, disjoint share (all of them with one slot)."""
    available = sorted(available if available is not None else os.sched_getaffinity(0))
    if slots <= 1 or len(available) < slots:
        return set(available) if slots <= 1 else {available[slot % len(available)]}
    size = len(available) // slots
    return set(available[slot * size:(slot + 1) * size])


def _die_with_parent():
    """Runs in the child before exec: SIGTERM it when the controller dies (Linux prctl PR_SET_PDEATHSIG),
    so a killed controller leaves no trainer running on; the resumed study continues from the checkpoint."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class LocalProcess(TrialProcess):
    """A trainer child process in its own session, so a stop reaches every thread and child of it."""

    def __init__(self, popen, trial_dir):
        super().__init__(trial_dir)
        self.popen = popen

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
        code = self.popen.returncode
        if code == trialdir.EXIT_OK:
            return "finished", None
        if code in (-signal.SIGKILL, 128 + signal.SIGKILL):
            return "killed", "killed by SIGKILL (out of memory?)"
        return "failed", f"exit status {code}"


class LocalRunner(Runner):
    name = "local"
    CONFIG_SCHEMA = {
        "python": {"type": "string", "minLength": 1,
                   "description": "the Python interpreter that runs the trainer (default: the controller's)"},
    }

    def __init__(self, trainer_path=None, python=None, slots=1):
        self.trainer_path = trainer_path
        self.python = python or sys.executable
        self.slots = slots

    @classmethod
    def from_config(cls, block, framework, trainer_path=None, slots=1):
        return cls(trainer_path=trainer_path, python=block.get("python"), slots=slots)

    def describe(self):
        return {"runner": self.name, "python": self.python}

    def start(self, trial_dir, data_path, labels):
        cpus = cpu_share(int(labels.get("slot", 0)), self.slots)
        return self._spawn(["autotune_trainer", trial_dir, "--data", data_path], trial_dir, cpus)

    def verify(self, trial_dir, data_path, out_dir, labels):
        os.makedirs(out_dir, exist_ok=True)
        return self._spawn(["autotune_trainer.verify", trial_dir, "--data", data_path, "--out", out_dir], out_dir)

    def _spawn(self, module_and_args, folder, cpus=None):
        """``python -m MODULE ARGS`` in ``folder`` (pinned to ``cpus`` when given), its output in folder/trainer.log."""

        def before_exec():
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        with trialdir.open_regular(os.path.join(folder, trialdir.LOG), "ab") as log:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [self.python, "-m", *module_and_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder,
                env=trainer_environment(self.trainer_path), start_new_session=True, preexec_fn=before_exec,
            )
        return LocalProcess(popen, folder)
