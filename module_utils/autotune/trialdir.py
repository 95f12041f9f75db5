"""The trial folder: the one contract between the controller, the health check and the trainer.

A trial runs in ``RUN_DIR/trials/NNNN``. The controller writes the spec and the
model code, the trainer (in a process or a container) writes what it saw, the
health check writes its relaunch record; nothing else crosses the boundary.

  controller  trial.json     number, params, model file and API, metric, goal, seed
              model.py       the rendered (or user-supplied) model code
  trainer     metrics.jsonl  one JSON line per finished epoch, read live for pruning
              result.json    final status and value
              model.keras    the trained model
              checkpoint/    Keras BackupAndRestore state, so a relaunch resumes
              trainer.log    the trainer's output
              hyperparameters_seen.json   hp names build_model(hp) asked for beyond the trial's params
  health      health.json    relaunch count and history (docker runner)
  controller  handed.json    written last when a waiting warm container is handed the trial (docker runner)
  controller  stopped_by_controller   the controller ended it on purpose: never relaunch

A trial folder is writable by the code under test: every file is opened without
following links and must be a regular file, so a planted symlink never leads the
controller (or the root health check) to another file of the host.

This file has no dependency beyond the standard library: the trainer package
vendors an identical copy (trainer/autotune_trainer/trialdir.py; a test pins them).
"""
import json
import os
import stat

TRIALS = "trials"
SPEC = "trial.json"
MODEL = "model.py"
METRICS = "metrics.jsonl"
RESULT = "result.json"
SAVED_MODEL = "model.keras"
CHECKPOINT = "checkpoint"
LOG = "trainer.log"
HEALTH = "health.json"
HP_SEEN = "hyperparameters_seen.json"  # names built at run time (hp.Choice(f"filters_{i}")): searched from then on
# result.json's status when the model's own code failed before it trained (a shape or loss mismatch)
MODEL_ERROR = "model_error"
STOPPED_MARKER = "stopped_by_controller"
RUN_LOCK = ".tune.lock"  # held by the run directory's controller while it runs
HANDED = "handed.json"  # a warm trainer container waits for it: the trial is now in its folder (docker runner)
SPARES = "spares.json"  # run_dir: which trial folder each warm container's spare folder became (docker runner)

# The trainer's exit codes; any other exit means it died from outside (signal, kill, engine).
EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_NAN = 0, 1, 2, 3
TRAINER_EXITS = (EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_NAN)

# Keras reports metrics as float32: 380/400 = 0.95 arrives as 0.9499999881. A goal counts as
# reached within this tolerance, in the controller and in the trainer's GoalStop alike.
GOAL_TOLERANCE = 1e-6


def reaches(value, goal):
    return value is not None and value >= goal - GOAL_TOLERANCE


def trial_path(run_dir, number):
    return os.path.join(run_dir, TRIALS, f"{int(number):04d}")


def open_regular(path, mode="r"):
    """Open a file that must be a regular file, never through a link (mode r, w, x or a, with b for bytes)."""
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
             "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}[mode[0]]
    descriptor = os.open(path, flags | os.O_NOFOLLOW, 0o644)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(f"{path} is not a regular file")
    if "b" in mode:
        return os.fdopen(descriptor, mode.replace("x", "w"))
    return os.fdopen(descriptor, mode.replace("x", "w"), encoding="utf-8", errors="replace")


def write_json(path, payload, **dump_options):
    """Write atomically and durably: a reader (or a crash) never sees half a file."""
    tmp = f"{path}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)  # a leftover, or a link planted in its place: never written through
    try:
        with open_regular(tmp, "x") as handle:
            json.dump(payload, handle, **dict({"indent": 2, "sort_keys": True}, **dump_options))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)  # a full disk leaves the earlier file as it was, and no half-written one beside it
        raise


def read_json(path, default=None):
    """A JSON file's content, or ``default`` when it is missing, unreadable or not a regular file."""
    try:
        with open_regular(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def read_metrics(path, seen=0):
    """Epoch records appended after the first ``seen`` ones; a line still being written waits for the next read."""
    try:
        with open_regular(path) as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return []
    fresh = []
    for line in lines[seen:]:
        try:
            fresh.append(json.loads(line))
        except ValueError:
            break
    return fresh


def tail(path, lines=12):
    """The last lines of a text file (a trainer log), or [] when there is none."""
    try:
        with open_regular(path) as handle:
            return [line.rstrip("\n") for line in handle.readlines()[-lines:]]
    except OSError:
        return []
