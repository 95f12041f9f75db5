"""The trial boundary: what a runner is and what the study loop may ask of a running trial.

Modelled on community.docker's EngineDriver: a small base class per side, one
subclass per engine, chosen from a registry (runners/__init__.py). The study
loop (study.py, trialrun.py) talks to nothing else.

A runner kind is one file with a ``Runner`` subclass that declares its ``name``,
the JSON Schema of its own configuration block (``runner.<name>``) with defaults,
and ``start``; and a ``TrialProcess`` subclass for the engine-side operations.
The folder-side operations (epoch records, result, health record, log tail) read
the trial folder through trialdir; a runner whose trials live on another host
overrides them.
"""
import json
import os

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.errors import AutotuneError

MAX_LOCK_BYTES = 1 << 20  # autotune_trainer.lock's line: about 3 KiB for a trainer image's few hundred packages


class TrialProcess:
    """One trial's trainer, started by a runner; polled by the study loop until it ends.

    The folder-side readers raise trialdir.TrialFileError when a file is not what the trainer or the health
    check writes (a FIFO, a 30 MB file, a string where a number belongs): the study loop fails that trial
    alone and stops it. The first such error is kept in ``bad_file``.
    """

    def __init__(self, trial_dir):
        self.trial_dir = trial_dir
        self.metrics = trialdir.MetricsReader(self._path(trialdir.METRICS))  # an offset: never re-read from 0
        self.bad_file = None

    # --- engine side: each runner implements these ------------------------------------
    def exit_code(self):
        """None while the trainer runs, else its exit status."""
        raise NotImplementedError

    def stop(self, grace=5.0):
        """End the trainer on purpose (timeout, pruning); it must not be relaunched."""
        raise NotImplementedError

    def outcome(self):
        """(status, detail) once ended: status is 'finished', 'failed' or 'killed'."""
        raise NotImplementedError

    def cleanup(self):
        """Release what the trial held (a container); the trial folder stays."""

    # --- folder side: the trial folder contract -----------------------------------------
    def _path(self, name):
        return f"{self.trial_dir}/{name}"

    def _checked(self, read, *args):
        try:
            return read(*args)
        except trialdir.TrialFileError as exc:
            self.bad_file = self.bad_file or exc
            raise

    def new_epochs(self):
        """Epoch records written since the last call (each checked: trialdir.check_epoch)."""
        return self._checked(self.metrics.read)

    def result(self):
        """The trainer's result.json, or {} when it wrote none."""
        return self._checked(trialdir.read_result, self._path(trialdir.RESULT)) or {}

    def hp_seen(self, strict=False):
        """Hyperparameters build_model(hp) asked for beyond the trial's params (name -> spec, default), or {}.
        ``strict``: a malformed file raises (conclude fails the trial); otherwise, as once that trial failed, {}."""
        if not strict and self.bad_file:
            return {}
        try:
            return self._checked(trialdir.read_hp_seen, self._path(trialdir.HP_SEEN))
        except trialdir.TrialFileError:
            if strict:
                raise
            return {}

    def health(self):
        """The health check's record for this trial, or {}."""
        return self._checked(trialdir.read_health, self._path(trialdir.HEALTH)) or {}

    def log_tail(self, lines=12):
        """The log's last lines (from its last 64 KiB only)."""
        return self._checked(trialdir.read_tail, self._path(trialdir.LOG), lines)


class FinishedTrial(TrialProcess):
    """A trial that ended with a result while no controller watched it: nothing runs, nothing to train again."""

    def exit_code(self):
        return trialdir.EXIT_OK

    def stop(self, grace=5.0):
        """Nothing runs."""

    def outcome(self):
        return "finished", None


class Runner:
    """Starts trials. Subclasses set ``name``, ``CONFIG_SCHEMA`` (properties of ``runner.<name>``) and
    ``CONFIG_DEFAULTS``, and implement ``from_config``, ``start`` and ``describe``."""

    name = None
    CONFIG_SCHEMA = {}
    CONFIG_DEFAULTS = {}
    read_only_paths = ()  # host folders a trial reads besides the packed data (a script's folder and images)

    @classmethod
    def config_lines(cls, block, field):
        """Cross-field checks of this runner's configuration block: one line per problem."""
        return []

    @classmethod
    def pushed_lines(cls, block):
        """Why this runner, so configured, must not run pushed code on this host: one line per reason, or []."""
        return []

    @classmethod
    def facts(cls, block, framework):
        """What model_facts shows about where trials will run; raises AutotuneError for what cannot work."""
        return {}

    @classmethod
    def from_config(cls, block, framework, trainer_path=None, slots=1):
        """The runner for this configuration block; ``slots`` trials will run at once, each on its share."""
        raise NotImplementedError

    def describe(self):
        return {"runner": self.name}

    def start(self, trial_dir, data_path, labels):
        """Start the trainer on a prepared trial folder; labels name study, trial folder number, run_dir and
        the slot (0 .. slots-1) it runs in: a slot's share of the host (CPUs, a GPU) is always the same."""
        raise NotImplementedError

    def warm_up(self, data_path, labels):
        """Before the first trial (while the data set is still being packed): start each slot's trainer ahead,
        so trial 0 does not pay the start-up either. ``data_path`` may not exist yet; the spare waits for it.
        ``labels`` name study and run_dir. Runners without warm trainers do nothing."""

    def close(self):
        """The study is over: end whatever the runner keeps running ahead of trials (warm spares)."""

    def environment(self):
        """The trainer's environment where this runner's trials run: ``autotune_trainer.lock``'s JSON (Python,
        packages, the trainer's digest) plus what the runner knows (its image); None when it cannot tell.
        Raises AutotuneError when the trainer cannot say (reproduce.py records why)."""
        return None

    def verify(self, trial_dir, data_path, out_dir, labels, test_path=None, read_only=()):
        """Start ``autotune_trainer.verify`` apart from the trial: it scores the saved model (read-only) on the
        validation split and on the held-out ``test_path`` pack (given to this process or container alone, never
        to a trial), and writes out_dir/verified.json, so a trial cannot claim a score it does not have.
        ``read_only``: more host folders it reads images from (a script's ``dataset.test``)."""
        raise NotImplementedError


class SparePool:
    """Trainers started ahead of their trials (warm spares), per slot, oldest (readiest) first.

    A runner says how to hand a trial to one of its spares (``hand(spare)`` -> a TrialProcess, or None when
    that spare died: it is discarded and the next one tried) and how to start one (``start()``); the pool
    keeps ``per_slot`` of them per slot when ``enabled``.
    """

    def __init__(self, per_slot=1, enabled=True):
        self.per_slot, self.enabled = per_slot, enabled
        self.queues = {}

    def __len__(self):
        return sum(len(queue) for queue in self.queues.values())

    def waiting(self, slot):
        return len(self.queues.get(slot, ()))

    def first(self, slot, start):
        """Warm-up: the slot's first spare only, started while the data set is packed (the others would compete
        with it for the CPU trial 0 waits on); the slot is topped up once that one is handed a trial."""
        if self.enabled and not self.queues.get(slot):
            self.queues[slot] = [start()]

    def take(self, slot, hand):
        queue = self.queues.get(slot, [])
        while queue:
            process = hand(queue.pop(0))
            if process is not None:
                return process
        return None

    def top_up(self, slot, start):
        queue = self.queues.setdefault(slot, [])
        while self.enabled and len(queue) < self.per_slot:
            queue.append(start())

    def drain(self):
        """Every spare not handed a trial, for the runner to end; the pool is empty after."""
        left = [spare for queue in self.queues.values() for spare in queue]
        self.queues = {}
        return left


def hand_over(folder, uid, gid):
    """A root controller gives a folder and everything in it to the trials' user; links are not followed. Only for a
    folder no trial could change while it is walked (made by the controller, or whose trial is gone): a path through
    entries a live trial can swap could lead out of the folder."""
    for root, dirs, files in os.walk(folder):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, uid, gid)


def parse_lock(raw):
    """``autotune_trainer.lock``'s output, checked: {python, machine, cpu, packages: {name: version}, trainer}."""
    try:
        found = json.loads(raw[:MAX_LOCK_BYTES].decode("utf-8", errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        found = None
    if not (isinstance(found, dict) and all(_short_text(found.get(k)) for k in ("python", "machine", "trainer"))
            and isinstance(found.get("packages"), dict)
            and all(_short_text(k) and _short_text(v) for k, v in found["packages"].items())):
        raise AutotuneError(f"runner: the trainer's environment (python -m autotune_trainer.lock) answered "
                            f"{raw[:80]!r}; expected one JSON line {{python, machine, packages, trainer}} (a trainer "
                            "older than reproduce support: rebuild its image)")
    return dict({k: found[k] for k in ("python", "machine", "packages", "trainer")},
                cpu=found["cpu"] if _short_text(found.get("cpu")) else None)


def _short_text(value):
    return isinstance(value, str) and len(value) <= 200
