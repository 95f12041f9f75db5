"""The local runner: ``python -m autotune_trainer`` as a fresh child process per trial.

No memory is carried from one trial to the next. The child gets an allow-listed
environment, never the controller's own: the controller may hold SMTP or database
secrets, and the model code it runs is pushed code.
"""
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.runners.base import Runner, SparePool, TrialProcess

# What a trainer needs from the controller's environment; everything else (secrets included) stays out.
ENVIRONMENT_ALLOWED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                       "CUDA_VISIBLE_DEVICES", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")


# TensorFlow takes GPU memory as a trial needs it, not all of it at its first operation: a slot's warm spare
# (Keras imported, waiting) and a verification beside a trial hold none of the GPU they do not use yet.
GPU_ALLOW_GROWTH = "true"


def trainer_environment(extra_path=None):
    env = {name: os.environ[name] for name in ENVIRONMENT_ALLOWED if name in os.environ}
    env.update(AUTOTUNE_LAUNCH_TIME=repr(time.time()), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2",
               TF_FORCE_GPU_ALLOW_GROWTH=GPU_ALLOW_GROWTH)
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


def _before_exec(cpus):
    """What a trainer child does before exec: die with the controller, and keep to its slot's CPUs."""

    def prepare():
        _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)
    return prepare


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


class Spare:
    """A trainer process started ahead for a slot (autotune_trainer.warm): Keras imported, data loaded, waiting."""

    def __init__(self, popen, data_path):
        self.popen, self.data_path = popen, data_path

    def ready_for(self, data_path):
        return self.popen.poll() is None and self.data_path == data_path

    def hand(self, trial_dir):
        """Give it the trial; it trains that one and exits. None when it died meanwhile (start a cold one)."""
        try:
            self.popen.stdin.write(f"{trial_dir}\t{time.time()!r}\n".encode())
            self.popen.stdin.close()
        except OSError:  # it died meanwhile (BrokenPipeError)
            return None
        return LocalProcess(self.popen, trial_dir)

    def close(self):
        """Not needed after all: it has trained nothing, so it is ended at once."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        if self.popen.stdin:
            self.popen.stdin.close()


class LocalRunner(Runner):
    name = "local"
    CONFIG_SCHEMA = {
        "python": {"type": "string", "minLength": 1,
                   "description": "the Python interpreter that runs the trainer (default: the controller's)"},
        "warm": {"type": "boolean", "description": "true or false: keep trainers started ahead per slot"},
        "spares": {"type": "integer", "minimum": 1, "maximum": 4,
                   "description": "an integer 1-4: trainers kept started ahead per slot when warm"},
    }
    CONFIG_DEFAULTS = {"warm": True, "spares": 1}

    def __init__(self, trainer_path=None, python=None, slots=1, warm=True, spares=1):
        self.trainer_path = trainer_path
        self.python = python or sys.executable
        self.slots, self.warm = slots, warm
        self.spares = SparePool(spares, warm)

    @classmethod
    def from_config(cls, block, framework, trainer_path=None, slots=1):
        return cls(trainer_path=trainer_path, python=block.get("python"), slots=slots, warm=block.get("warm", True),
                   spares=block.get("spares", 1))

    def describe(self):
        return {"runner": self.name, "python": self.python, "warm": self.warm, "spares": self.spares.per_slot}

    def start(self, trial_dir, data_path, labels):
        """The slot's readiest spare takes the trial; the slot is topped up with fresh spares for the next ones."""
        slot = int(labels.get("slot", 0))
        cpus = cpu_share(slot, self.slots)

        def hand(spare):
            process = spare.hand(trial_dir) if spare.ready_for(data_path) else None
            if process is None:
                spare.close()
            return process

        process = self.spares.take(slot, hand)
        if process is None:
            process = self._spawn(["autotune_trainer", trial_dir, "--data", data_path], trial_dir, cpus)
        self.spares.top_up(slot, lambda: self._spare(data_path, labels, cpus))
        return process

    def warm_up(self, data_path, labels):
        for slot in range(self.slots):
            self.spares.first(slot, functools.partial(self._spare, data_path, dict(labels, slot=str(slot)),
                                                      cpu_share(slot, self.slots)))

    def close(self):
        for spare in self.spares.drain():
            spare.close()

    def _spare(self, data_path, labels, cpus):
        """Start the slot's next trainer now; its output goes to a log of its own until it is handed a trial."""
        folder = os.path.join(labels["run_dir"], "spares")
        os.makedirs(folder, exist_ok=True)
        with trialdir.open_regular(os.path.join(folder, f"slot-{labels.get('slot', 0)}.log"), "ab") as log:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [self.python, "-m", "autotune_trainer.warm", "--data", data_path],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, cwd=folder,
                env=trainer_environment(self.trainer_path), start_new_session=True,
                preexec_fn=_before_exec(cpus),
            )
        return Spare(popen, data_path)

    def verify(self, trial_dir, data_path, out_dir, labels, test_path=None, read_only=()):
        os.makedirs(out_dir, exist_ok=True)
        test = ["--test", test_path] if test_path else []
        return self._spawn(["autotune_trainer.verify", trial_dir, "--data", data_path, *test, "--out", out_dir], out_dir)

    def _spawn(self, module_and_args, folder, cpus=None):
        """``python -m MODULE ARGS`` in ``folder`` (pinned to ``cpus`` when given), its output in folder/trainer.log."""
        with trialdir.open_regular(os.path.join(folder, trialdir.LOG), "ab") as log:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [self.python, "-m", *module_and_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder,
                env=trainer_environment(self.trainer_path), start_new_session=True, preexec_fn=_before_exec(cpus),
            )
        return LocalProcess(popen, folder)
