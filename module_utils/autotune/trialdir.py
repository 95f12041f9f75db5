"""The trial folder: the one contract between the controller, the health check and the trainer.

A trial runs in ``RUN_DIR/trials/NNNN``. The controller writes the spec and the
model code, the trainer (in a process or a container) writes what it saw, the
health check writes its relaunch record; nothing else crosses the boundary.

  controller  trial.json     number, params, model file and API, metric, direction, goal, seed
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
following links and without blocking, and must be a regular file before a byte is
read, so a planted symlink never leads the controller (or the root health check) to
another file of the host and a planted FIFO never hangs it. What the controller reads
back is capped in size and checked field by field (``read_result``, ``read_health``,
``read_hp_seen``, ``MetricsReader``): a malformed file raises ``TrialFileError``, one
line naming the file and the field, and fails that trial alone.

This file has no dependency beyond the standard library: the trainer package
vendors an identical copy (trainer/autotune_trainer/trialdir.py; a test pins them).
"""
import json
import os
import re
import stat

TRIALS = "trials"
SPEC = "trial.json"
MODEL = "model.py"
METRICS = "metrics.jsonl"
RESULT = "result.json"
SAVED_MODEL = "model.keras"
CHECKPOINT = "checkpoint"
TENSORBOARD = "tensorboard"  # event files: per-epoch scalars and the trial's hyperparameters (HParams)
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
MAXIMIZE, MINIMIZE = "maximize", "minimize"


def default_direction(metric):
    """target.direction when none is given: a loss is minimised, any other metric (accuracy, AUC) maximised."""
    return MINIMIZE if metric.endswith("loss") else MAXIMIZE


def reaches(value, goal, direction=MAXIMIZE):
    """Whether ``value`` reaches ``goal``: at least the goal when maximising, at most it when minimising."""
    if value is None:
        return False
    return value <= goal + GOAL_TOLERANCE if direction == MINIMIZE else value >= goal - GOAL_TOLERANCE


def trial_path(run_dir, number):
    return os.path.join(run_dir, TRIALS, f"{int(number):04d}")


def open_regular(path, mode="r"):
    """Open a file that must be a regular file, never through a link (mode r, w, x or a, with b for bytes).

    Opened non-blocking and checked before anything is read: a FIFO or device planted in a trial folder
    is refused at once instead of blocking the reader until a writer appears."""
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
             "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}[mode[0]]
    descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(descriptor, True)
        if "b" in mode:
            return os.fdopen(descriptor, mode.replace("x", "w"))
        return os.fdopen(descriptor, mode.replace("x", "w"), encoding="utf-8", errors="replace")
    except BaseException:
        os.close(descriptor)
        raise


def write_json(path, payload, **dump_options):
    """Write atomically and durably: a reader (or a crash) never sees half a file."""
    write_text(path, json.dumps(payload, **dict({"indent": 2, "sort_keys": True}, **dump_options)))


def write_text(path, text):
    """Write ``text`` atomically and durably, never through a link planted at the path or its .tmp."""
    tmp = f"{path}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)  # a leftover, or a link planted in its place: never written through
    try:
        with open_regular(tmp, "x") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)  # a full disk leaves the earlier file as it was, and no half-written one beside it
        raise


# What the controller and the health check read back from a trial folder is capped: a trial cannot make them
# hold more than this in memory, however large the file it leaves.
MAX_JSON_BYTES = 1 << 20       # result.json, health.json, hyperparameters_seen.json
MAX_LINE_BYTES = 4096          # one metrics.jsonl record (the trainer's are about 250 bytes)
MAX_RECORD_FIELDS = 64         # metrics per epoch record
MAX_EPOCHS = 10000             # records in one metrics.jsonl
MAX_METRICS_BYTES = 16 << 20   # metrics.jsonl as a whole
READ_CHUNK = 1 << 20           # metrics.jsonl bytes read per poll, at most
TAIL_BYTES = 64 << 10          # the end of trainer.log read for a failure's reason
MAX_RELAUNCHES = 100           # a health.json relaunch count above this is not one the health check wrote


class TrialFileError(ValueError):
    """A file of the trial folder is not what the trainer or the health check writes: one line naming it."""

    def __init__(self, name, field, got, expected):
        self.file, self.field, self.expected = name, field, expected
        super().__init__(f"{name}: {field} {got}; expected {expected}")


def _shown(value):
    """A value as it may appear in one line: printable ASCII, short (the file is the trial's, not ours)."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(path, error):
    """What stands at path instead of a regular file, in a few words."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return f"unreadable ({error.strerror or 'gone'})"
    for test, kind in ((stat.S_ISLNK, "a link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return f"unreadable ({error.strerror or 'not a regular file'})"


def _open_capped(path, limit):
    """(handle, size) of a regular file at most ``limit`` bytes, or (None, 0) when there is none."""
    name = os.path.basename(path)
    try:
        handle = open_regular(path, "rb")
    except FileNotFoundError:
        return None, 0
    except OSError as exc:
        raise TrialFileError(name, "the file", f"is {_kind(path, exc)}", "a regular file") from None
    size = os.fstat(handle.fileno()).st_size
    if size > limit:
        handle.close()
        raise TrialFileError(name, "the file", f"is {size} bytes", f"at most {limit}")
    return handle, size


def load_json(path, limit=MAX_JSON_BYTES):
    """A trial file's JSON, or None when it does not exist; TrialFileError when it is not a small JSON file."""
    handle, _ = _open_capped(path, limit)
    if handle is None:
        return None
    with handle:
        raw = handle.read(limit + 1)
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested past the parser's depth
        raise TrialFileError(os.path.basename(path), "the file", f"is not JSON ({_shown(str(exc))})",
                             "the JSON the trainer writes") from None


def read_json(path, default=None):
    """A JSON file's content, or ``default`` when it is missing, unreadable, too large or not a regular file."""
    try:
        found = load_json(path)
    except TrialFileError:
        return default
    return default if found is None else found


def is_number(value):
    """A JSON number float() takes (an integer of 400 digits overflows it): never a bool or a string."""
    if isinstance(value, bool):
        return False
    return isinstance(value, float) or (isinstance(value, int) and -2 ** 63 <= value < 2 ** 63)


def _check(name, field, value, ok, expected):
    if not ok(value):
        raise TrialFileError(name, field, f"is {_shown(value)}", expected)
    return value


def _optional(test):
    return lambda value: value is None or test(value)


def _int_in(low, high):
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _text(most):
    return lambda value: isinstance(value, str) and len(value) <= most


# result.json: the fields the controller reads, and what each must be (the trainer writes them so).
RESULT_TYPES = {
    "status": (_text(64), "a string"),
    "metric": (_text(200), "a string"),
    "value": (_optional(is_number), "a number or null"),
    "reason": (_optional(_text(10000)), "a string or null"),
    "fit_seconds": (_optional(is_number), "a number or null"),
    "startup_seconds": (_optional(is_number), "a number or null"),
    "resumed_from_epoch": (_optional(_int_in(0, 10 ** 6)), "an integer >= 0 or null"),
    "checkpoint_discarded": (_optional(_text(10000)), "a string or null"),
    "epochs_planned": (_optional(_int_in(0, 10 ** 6)), "an integer >= 0 or null"),
    "epochs_run": (_optional(_int_in(0, 10 ** 6)), "an integer >= 0 or null"),
    "batch_size": (_optional(_int_in(0, 10 ** 9)), "an integer >= 0 or null"),
}


def read_result(path):
    """result.json checked field by field, or None when the trainer wrote none."""
    found = load_json(path)
    if found is None:
        return None
    _check(RESULT, "the content", found, lambda v: isinstance(v, dict), "a JSON object")
    for field, (ok, expected) in RESULT_TYPES.items():
        if field in found:
            _check(RESULT, field, found[field], ok, expected)
    return found


def read_health(path):
    """health.json checked field by field (relaunches bounded), or None when the health check wrote none."""
    found = load_json(path)
    if found is None:
        return None
    _check(HEALTH, "the content", found, lambda v: isinstance(v, dict), "a JSON object")
    _check(HEALTH, "relaunches", found.get("relaunches", 0), _int_in(0, MAX_RELAUNCHES),
           f"an integer 0..{MAX_RELAUNCHES}")
    history = _check(HEALTH, "history", found.get("history", []), lambda v: isinstance(v, list) and
                     len(v) <= MAX_RELAUNCHES + 1, f"a list of at most {MAX_RELAUNCHES + 1} entries")
    for entry in history:
        _check(HEALTH, "history[]", entry, lambda v: isinstance(v, dict) and is_number(v.get("at"))
               and isinstance(v.get("why"), str), "an object {at: number, why: string}")
    _check(HEALTH, "gave_up", found.get("gave_up"), _optional(_text(1000)), "a string or null")
    return found


def read_hp_seen(path):
    """hyperparameters_seen.json: name -> {spec: object or null, default: value}; {} when there is none."""
    found = load_json(path)
    if found is None:
        return {}
    _check(HP_SEEN, "the content", found, lambda v: isinstance(v, dict), "a JSON object")
    for name, entry in found.items():
        _check(HP_SEEN, _shown(name), entry, lambda v: isinstance(v, dict) and
               isinstance(v.get("spec"), (dict, type(None))), "an object {spec: object or null, default: value}")
    return found


def check_epoch(record, where):
    """One metrics.jsonl record: an object of at most MAX_RECORD_FIELDS numbers, epoch an integer >= 0.
    NaN and infinities are numbers here: Keras reports a diverged loss so, and the trainer calls that 'nan'."""
    _check(METRICS, where, record, lambda v: isinstance(v, dict) and 0 < len(v) <= MAX_RECORD_FIELDS,
           f"an object of 1..{MAX_RECORD_FIELDS} metrics")
    _check(METRICS, f"{where} epoch", record.get("epoch"), _int_in(0, 10 ** 6), "an integer >= 0")
    for key, value in record.items():
        _check(METRICS, f"{where} {_shown(key)}", value, is_number, "a number")
    return record


_BLANK_LINES = re.compile(rb"\n*")


class MetricsReader:
    """metrics.jsonl read as it grows: each call reads only the bytes appended since the last one (at most
    READ_CHUNK), keeps a line still being written for the next call, and checks every record (check_epoch).
    A file that starts over (the trainer discarded an unreadable checkpoint) is read from its start again,
    its first records skipped as already seen, as before."""

    def __init__(self, path):
        self.path, self.offset, self.partial, self.inode = path, 0, b"", None
        self.lines = self.records = self.skip = 0

    def read(self):
        """The epoch records completed since the last call; TrialFileError when the file is malformed."""
        handle, size = _open_capped(self.path, MAX_METRICS_BYTES)
        if handle is None:
            return []
        with handle:
            inode = os.fstat(handle.fileno()).st_ino
            if inode != self.inode or size < self.offset:  # a new file, or the same one truncated
                self.inode, self.offset, self.partial = inode, 0, b""
                self.lines, self.skip = 0, self.records
            handle.seek(self.offset)
            chunk = handle.read(min(size - self.offset, READ_CHUNK))
        self.offset += len(chunk)
        data, start, records = self.partial + chunk, 0, []
        while True:
            blank = _BLANK_LINES.match(data, start).end()  # runs of empty lines skipped without a copy each
            self.lines, start = self.lines + blank - start, blank
            end = data.find(b"\n", start)
            if end < 0:
                break
            record = self._record(data[start:end])
            start = end + 1
            if record is not None:
                records.append(record)
        self.partial = data[start:]
        if len(self.partial) > MAX_LINE_BYTES:
            raise TrialFileError(METRICS, f"line {self.lines + 1}", f"runs over {MAX_LINE_BYTES} bytes without an end",
                                 f"lines of at most {MAX_LINE_BYTES} bytes")
        return records

    def _record(self, raw):
        self.lines += 1
        where = f"line {self.lines}"
        if len(raw) > MAX_LINE_BYTES:
            raise TrialFileError(METRICS, where, f"is {len(raw)} bytes", f"at most {MAX_LINE_BYTES}")
        if not raw.strip():
            return None
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            raise TrialFileError(METRICS, where, f"is {_shown(raw[:40])}", "one JSON object per line") from None
        check_epoch(record, where)
        if self.skip:
            self.skip -= 1
            return None
        self.records += 1
        if self.records > MAX_EPOCHS:
            raise TrialFileError(METRICS, where, "is one epoch too many", f"at most {MAX_EPOCHS} epochs")
        return record


def read_metrics(path, seen=0):
    """Epoch records after the first ``seen`` ones, read whole (the trainer's view of its own file; the controller
    follows it with MetricsReader); a line still being written, or one that is not a record, ends the list."""
    try:
        with open_regular(path, "rb") as handle:
            raw = handle.read(MAX_METRICS_BYTES)
    except OSError:
        return []
    fresh = []
    for line in [line for line in raw.splitlines() if line.strip()][seen:]:
        try:
            fresh.append(json.loads(line))
        except ValueError:
            break
    return fresh


def read_tail(path, lines=12):
    """The last lines of a trial's log, read from its last TAIL_BYTES only; [] when there is none, TrialFileError
    when something else than a regular file stands in its place."""
    handle, size = _open_capped(path, float("inf"))
    if handle is None:
        return []
    with handle:
        handle.seek(max(0, size - TAIL_BYTES))
        text = handle.read(TAIL_BYTES).decode("utf-8", errors="replace").splitlines()
    if size > TAIL_BYTES:
        text = text[1:]  # the first line read is cut
    return text[-lines:] if lines else []


def tail(path, lines=12):
    """read_tail, or [] when the log is not a regular file."""
    try:
        return read_tail(path, lines)
    except TrialFileError:
        return []
