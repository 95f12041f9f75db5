"""The local runner: ``python -m autotune_trainer`` as a fresh child process per trial.

No memory is carried from one trial to the next. The child gets an allow-listed
environment, never the controller's own: the controller may hold SMTP or database
secrets, and the model code it runs is pushed code.

A controller running as root (a fleet worker connected to as root, a root cron or
Jenkins agent) runs every trainer and warm spare as ``runner.local.user`` (an unprivileged
account, ``nobody`` by default; verifiers, which run no trial code, stay the controller's) with
a private HOME: the module's arguments (in ~/.ansible/tmp, 0700), the storage URL and the study database stay the
controller's. The child is started in its folder before it drops to that account and
is given paths relative to it, so the run folder's parents need not be open to the
account. Where that is impossible (the controller is not root, or the account cannot start
the interpreter: a pyenv under /root), trainers share the controller's user, model_facts
says why, and a pushed configuration is refused the local runner (``pushed_lines``).
"""
import ctypes
import functools
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.runners.base import Runner, SparePool, TrialProcess, hand_over, parse_lock

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


def _before_exec(cpus, idle=False):
    """What a trainer child does before exec: die with the controller, and keep to its slot's CPUs; an ``idle`` one
    (a verifier started ahead) takes only CPU time no other process wants until it is handed work (_wake)."""

    def prepare():
        _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)
        if idle and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    return prepare


def _wake(pid):
    """Every thread of an idle child back to the normal policy (allowed to its own user at nice 0: Linux treats
    SCHED_IDLE as nice 20 and RLIMIT_NICE permits going back to 0). Twice: a thread started during the first pass
    by a thread still idle then inherited the idle policy. False when the child cannot be woken (it would then
    score only on CPU time no trial wants): a cold verifier is started instead."""
    if not hasattr(os, "SCHED_IDLE"):
        return True
    try:
        for _ in range(2):
            for thread in os.listdir(f"/proc/{pid}/task"):
                try:
                    os.sched_setscheduler(int(thread), os.SCHED_OTHER, os.sched_param(0))
                except ProcessLookupError:  # that thread ended meanwhile
                    pass
        return os.sched_getscheduler(pid) == os.SCHED_OTHER
    except OSError:
        return False


def _die_with_parent():
    """Runs in the child before exec: SIGTERM it when the controller dies (Linux prctl PR_SET_PDEATHSIG),
    so a killed controller leaves no trainer running on; the resumed study continues from the checkpoint."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


TRIAL_UMASK = 0o077  # what a trial writes is its own (and the root controller's)
# The run folder's files the trial account must not read: the study (every trial's parameters and values).
CONTROLLER_ONLY = ("study.db", "study.db-journal", "study.db-wal", "study.db-shm")


def account(name):
    """(uid, gid) of ``runner.local.user``: an account name or a numeric uid; never root."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not name.isdigit():
            raise AutotuneError(f"runner.local.user: {name!r} is not an account on this host; expected an "
                                "unprivileged account trials run as when the controller is root (nobody, or one "
                                "created for trials)") from None
        uid = gid = int(name)  # a bare uid without a passwd entry, as a container's user may be
    if uid == 0:
        raise AutotuneError(f"runner.local.user: {name!r} is root; expected an unprivileged account (trials must not "
                            "share a user with the controller's secrets)")
    return uid, gid


_RUNNABLE = {}  # (uid, python) -> None, or why that account cannot start that interpreter


class TrialAccount:
    """The unprivileged account a root controller's trainers, spares and verifiers run as."""

    def __init__(self, name):
        self.name = name
        self.uid, self.gid = account(name)
        self.homes = []

    def cannot_run(self, python):
        """None when the account can start ``python``, else why not: an interpreter under a folder closed to others
        (a pyenv in /root) runs as nobody else. The same check decides at model_facts, for a pushed configuration
        and when the runner starts, so a pushed configuration never meets a runner that kept trials as root."""
        key = (self.uid, python)
        if key not in _RUNNABLE:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/"}
            try:
                done = subprocess.run([python, "-c", "pass"], cwd="/", env=env, capture_output=True, text=True,  # noqa: S603
                                      timeout=60, check=False, **self.popen_options())
                why = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            except (OSError, subprocess.SubprocessError) as exc:
                why = f"{type(exc).__name__}: {exc}"[:200]
            _RUNNABLE[key] = why
        return _RUNNABLE[key]

    def popen_options(self):
        """subprocess.Popen options: the account, none of root's supplementary groups, a private umask."""
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": TRIAL_UMASK}

    def home(self):
        """A fresh HOME (and TMPDIR) for one process, 0700 and the account's: nothing a trial leaves there reaches
        another process; removed when that process is cleaned up or the runner closes."""
        path = tempfile.mkdtemp(prefix="autotune-trial-", dir="/tmp")
        os.chown(path, self.uid, self.gid)  # new, made by us in sticky /tmp: nothing to race
        self.homes.append(path)
        return path

    def forget(self, home):
        if home in self.homes:
            self.homes.remove(home)
        shutil.rmtree(home, ignore_errors=True)  # fd-based on Linux: a link planted there is not followed

    def give(self, folder):
        """A folder the controller made in a folder of its own (a trial's, a verification's) becomes writable by
        the account; ``lchown``: a link is never followed. A fresh one (still the controller's: no trial could
        change it) is given with what the controller laid in it, a checkpoint carried on or restored; one the
        account has already is not walked again."""
        if os.lstat(folder).st_uid == os.geteuid():
            hand_over(folder, self.uid, self.gid)
        else:
            os.lchown(folder, self.uid, self.gid)

    def give_log(self, folder):
        """A warm spare appends to its trial's log itself: the log (made by the controller, or left by an earlier
        attempt) is handed over through its descriptor, only when it is a regular file with a single link."""
        with trialdir.open_regular(os.path.join(folder, trialdir.LOG), "ab") as log:
            info = os.fstat(log.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                os.fchown(log.fileno(), self.uid, self.gid)

    def confine(self, run_dir):
        """The account may pass through the run folder (to its trial folder and the pack) but not list it, and
        never read the study database."""
        if os.stat(run_dir).st_uid == os.geteuid():
            os.chmod(run_dir, 0o711)
        for name in CONTROLLER_ONLY:
            path = os.path.join(run_dir, name)
            if os.path.isfile(path) and not os.path.islink(path):
                os.chmod(path, 0o600)

    def close(self):
        for home in list(self.homes):
            self.forget(home)


def _trial_account(user, python):
    """(TrialAccount, None) when trials can run as ``user``; else (None, why they share the controller's user)."""
    if os.geteuid() != 0:
        return None, "the controller is not root, so it cannot start trials as another user"
    trial_account = TrialAccount(user)
    why = trial_account.cannot_run(python)
    if why:
        return None, f"{user} cannot run {python} ({why})"
    return trial_account, None


def relative(target, folder):
    """``target`` as the child started in ``folder`` reaches it: it never walks the parents above both."""
    return os.path.relpath(os.path.realpath(target), os.path.realpath(folder))


class LocalProcess(TrialProcess):
    """A trainer child process in its own session, so a stop reaches every thread and child of it."""

    def __init__(self, popen, trial_dir, account=None, home=None):  # pylint: disable=redefined-outer-name
        super().__init__(trial_dir)
        self.popen = popen
        self.account, self.home = account, home

    def cleanup(self):
        """What the trainer left running in its process group ends (it shares the trial account with later trials
        and verifiers); its private HOME goes; the trial folder stays."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.account and self.home:
            self.account.forget(self.home)
            self.home = None

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

    def __init__(self, popen, data_path, folder, account=None, home=None):  # pylint: disable=redefined-outer-name
        self.popen, self.data_path, self.folder = popen, data_path, folder
        self.account, self.home = account, home

    def ready_for(self, data_path):
        return self.popen.poll() is None and self.data_path == data_path

    def hand(self, trial_dir):
        """Give it the trial; it trains that one and exits. None when it died meanwhile (start a cold one)."""
        told = trial_dir
        if self.account:
            self.account.give_log(trial_dir)
            told = relative(trial_dir, self.folder)  # it waits in the spares folder
        try:
            self.popen.stdin.write(f"{told}\t{time.time()!r}\n".encode())
            self.popen.stdin.close()
        except OSError:  # it died meanwhile (BrokenPipeError)
            return None
        return LocalProcess(self.popen, trial_dir, self.account, self.home)

    def close(self):
        """Not needed after all: it has trained nothing, so it is ended at once."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        if self.popen.stdin:
            self.popen.stdin.close()
        if self.account and self.home:
            self.account.forget(self.home)


class WarmVerifier(Spare):
    """A verifier started ahead (``autotune_trainer.verify --warm``, TensorFlow imported): handed the arguments of
    one verification, it scores that model and exits, without the seconds of TensorFlow's import on the path to
    the result. It runs as the controller, as a cold verifier does."""

    def hand(self, argv, out_dir):  # pylint: disable=arguments-renamed
        """None when it died meanwhile (a cold verifier is started instead)."""
        if self.popen.poll() is not None or not _wake(self.popen.pid):
            return None
        try:
            self.popen.stdin.write((json.dumps({"argv": argv, "out": out_dir}) + "\n").encode())
            self.popen.stdin.close()
        except OSError:  # it died meanwhile (BrokenPipeError)
            return None
        return LocalProcess(self.popen, out_dir)


class LocalRunner(Runner):
    name = "local"
    CONFIG_SCHEMA = {
        "python": {"type": "string", "minLength": 1,
                   "description": "the Python interpreter that runs the trainer (default: the controller's)"},
        "warm": {"type": "boolean", "description": "true or false: keep trainers started ahead per slot"},
        "spares": {"type": "integer", "minimum": 1, "maximum": 4,
                   "description": "an integer 1-4: trainers kept started ahead per slot when warm"},
        "user": {"type": "string", "pattern": r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\Z",
                 "description": "an unprivileged account name or uid that trials run as when the controller is root"},
    }
    CONFIG_DEFAULTS = {"warm": True, "spares": 1, "user": "nobody"}

    def __init__(self, trainer_path=None, python=None, slots=1, warm=True, spares=1, user="nobody"):
        self.trainer_path = trainer_path
        self.python = python or sys.executable
        self.slots, self.warm = slots, warm
        self.spares = SparePool(spares, warm)
        self.verifier = None  # the next verification's warm verifier (WarmVerifier), when warm
        self.account, self.shared = _trial_account(user, self.python)

    @classmethod
    def from_config(cls, block, framework, trainer_path=None, slots=1):
        return cls(trainer_path=trainer_path, python=block.get("python"), slots=slots, warm=block.get("warm", True),
                   spares=block.get("spares", 1), user=block.get("user", "nobody"))

    @classmethod
    def facts(cls, block, framework):
        """Who trials run as: runner.local.user when the controller is root and that account can run the trainer's
        Python; otherwise the controller's own user, and why (pushed configurations are then refused)."""
        trial_account, shared = _trial_account(block.get("user", "nobody"), block.get("python") or sys.executable)
        if trial_account:
            return {"user": trial_account.name, "uid": trial_account.uid}
        return {"user": str(os.geteuid()), "uid": os.geteuid(), "shares_controller_user": shared}

    @classmethod
    def pushed_lines(cls, block):
        """Trials that would share the controller's user (the holder of the module's arguments, the storage URL,
        the study database) must not run pushed code."""
        trial_account, shared = _trial_account(block.get("user", "nobody"), block.get("python") or sys.executable)
        if trial_account:
            return []
        return [f"runner.kind: 'local' would run pushed code as this controller's own user (uid {os.geteuid()}: "
                f"{shared}), which can read the module's arguments and the storage URL; expected runner.kind: docker "
                "(autotune_pipeline_runner), or a root controller whose runner.local.user can run runner.local.python"]

    def describe(self):
        described = {"runner": self.name, "python": self.python, "warm": self.warm, "spares": self.spares.per_slot}
        if self.account:
            described["user"] = self.account.name
        elif os.geteuid() == 0:
            described["shares_controller_user"] = self.shared
        return described

    def start(self, trial_dir, data_path, labels):
        """The slot's readiest spare takes the trial; the slot is topped up with fresh spares for the next ones."""
        slot = int(labels.get("slot", 0))
        cpus = cpu_share(slot, self.slots)
        if self.account:
            self.account.confine(labels["run_dir"])
            self.account.give(trial_dir)

        def hand(spare):
            process = spare.hand(trial_dir) if spare.ready_for(data_path) else None
            if process is None:
                spare.close()
            return process

        process = self.spares.take(slot, hand)
        if process is None:
            process = self._spawn("autotune_trainer", [trial_dir], {"--data": data_path}, trial_dir, cpus)
        self.spares.top_up(slot, lambda: self._spare(data_path, labels, cpus))
        self._warm_verifier(labels["run_dir"])  # a trial runs now: the next verification may follow it
        return process

    def warm_up(self, data_path, labels):
        if self.account:
            self.account.confine(labels["run_dir"])
        for slot in range(self.slots):
            self.spares.first(slot, functools.partial(self._spare, data_path, dict(labels, slot=str(slot)),
                                                      cpu_share(slot, self.slots)))
        self._warm_verifier(labels["run_dir"])

    def close(self):
        for spare in self.spares.drain():
            spare.close()
        if self.verifier is not None:
            self.verifier.close()
            self.verifier = None
        if self.account:
            self.account.close()

    def _child(self, folder, cpus, account=()):
        """What every child shares: its folder, environment, session, CPUs and, as root, the trial account."""
        account = self.account if account == () else account
        env = trainer_environment(self.trainer_path)
        options = {"cwd": folder, "start_new_session": True, "preexec_fn": _before_exec(cpus)}
        home = None
        if account:
            home = account.home()
            env.update(HOME=home, TMPDIR=home, PYTHONNOUSERSITE="1")
            options.update(account.popen_options())
        return dict(options, env=env), home

    def _argv(self, module, paths, options, folder, account=()):
        """``python -m MODULE PATHS --OPTION PATH``; as the trial account every path is relative to its folder."""
        account = self.account if account == () else account
        where = (lambda path: relative(path, folder)) if account else (lambda path: path)
        argv = [self.python, "-m", module, *map(where, paths)]
        for flag, path in options.items():
            argv += [flag, where(path)]
        return argv

    def _spare(self, data_path, labels, cpus):
        """Start the slot's next trainer now; its output goes to a log of its own until it is handed a trial."""
        folder = os.path.join(labels["run_dir"], "spares")
        os.makedirs(folder, exist_ok=True)
        options, home = self._child(folder, cpus)
        with trialdir.open_regular(os.path.join(folder, f"slot-{labels.get('slot', 0)}.log"), "ab") as log:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self._argv("autotune_trainer.warm", [], {"--data": data_path}, folder),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, **options,
            )
        return Spare(popen, data_path, folder, self.account, home)

    def environment(self):
        """The trainer interpreter's packages (autotune_trainer.lock, as the controller: it runs no trial code)."""
        try:
            done = subprocess.run(self._argv("autotune_trainer.lock", [], {}, "/", account=None),  # noqa: S603
                                  env=trainer_environment(self.trainer_path), capture_output=True, timeout=120,
                                  check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise AutotuneError(f"runner.local.python: {self.python} cannot run autotune_trainer.lock ({exc}); "
                                "expected the trainer's interpreter") from None
        return dict(parse_lock(done.stdout), interpreter=self.python)

    def verify(self, trial_dir, data_path, out_dir, labels, test_path=None, read_only=()):
        os.makedirs(out_dir, exist_ok=True)
        # The verifier runs as the controller's user: it alone may enter the held-out folder (0700), and a trial
        # running as the trial account can neither read the test split nor reach the verifier's process or output.
        # It runs no trial code: it loads the saved model in Keras' safe mode (docs/security.md, limits).
        options = {"--data": data_path, **({"--test": test_path} if test_path else {}), "--out": out_dir}
        verifier, self.verifier = self.verifier, None
        if verifier is not None:
            argv = self._argv("autotune_trainer.verify", [trial_dir], options, out_dir, account=None)[3:]
            process = verifier.hand(argv, out_dir)
            if process is not None:
                return process
            verifier.close()
        return self._spawn("autotune_trainer.verify", [trial_dir], options, out_dir, as_controller=True)

    def _warm_verifier(self, run_dir):
        """Keep one verifier started ahead when warm (none is started while one waits)."""
        if not self.warm or (self.verifier is not None and self.verifier.popen.poll() is None):
            return
        if self.verifier is not None:  # it died waiting: reaped, its pipe closed, before the next one starts
            self.verifier.close()
        # Until it is handed a model it says nothing worth keeping: a verifier that died meanwhile is replaced by a
        # cold one, whose log says why. It writes only into the output folder it is handed (as the controller).
        # Its TensorFlow import runs on CPU time the trials and the controller leave (measured: started at the
        # normal policy beside trial 0's spare, it delayed trial 0 by 1.6 s on 2 cores).
        options, _ = self._child(run_dir, None, account=None)
        options["preexec_fn"] = _before_exec(None, idle=True)
        popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [self.python, "-m", "autotune_trainer.verify", "--warm"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.PIPE, **options,
        )
        self.verifier = WarmVerifier(popen, None, run_dir)

    def _spawn(self, module, paths, options, folder, cpus=None, as_controller=False):
        """``python -m MODULE ...`` in ``folder`` (pinned to ``cpus`` when given), its output in folder/trainer.log;
        as the trial account unless ``as_controller``."""
        account = None if as_controller else self.account
        child, home = self._child(folder, cpus, account)
        with trialdir.open_regular(os.path.join(folder, trialdir.LOG), "ab") as log:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self._argv(module, paths, options, folder, account),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **child,
            )
        return LocalProcess(popen, folder, account, home)
