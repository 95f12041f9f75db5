"""A trial's checkpoint off its host while it trains, so a retry on another host resumes from it (docs/fleet.md).

The trainer keeps its Keras ``BackupAndRestore`` state in the trial folder (``checkpoint/``: the weights and the
number of epochs done, saved before each epoch's metrics line). The study loop of a fleet worker watches it: once a
new epoch is read, ``Shipper.watch`` copies a consistent snapshot (the weights, the epoch count, and as many
metrics records, re-written from the ones the loop checked) into one tar file beside the run folder, and a thread
uploads it to the artifact store, then points the trial's user attribute ``checkpoint`` at it (its id, epoch, size
and SHA-256) and removes the one before. A snapshot is taken only when the trial's last upload is done, so a slow
store ships every second or third epoch instead of falling behind. Optuna's RetryHeartbeatStaleTrialCallback copies
the attribute to the retry; ``Shipper.restore`` checks the object against it (size, digest, members, records) and
lays it into the retry's fresh folder, where the trainer's own resume path takes it up.

Everything in a checkpoint was written by the trial: it is bounded (the trial folder's cap, trialcaps.py), checked
member by member, and never trusted beyond steering the resumed fit: the verifier scores the saved model apart.
"""
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import uuid

import optuna
from sqlalchemy.exc import SQLAlchemyError

from ansible.module_utils.autotune import trialcaps, trialdir
from ansible.module_utils.autotune.artifacts import STORE_ERRORS

POINTER = "checkpoint"  # trial user attribute: {"id", "epoch", "bytes", "sha256"} of its newest shipped checkpoint
# Trial user attribute, set before each upload: the ids of the objects of this trial that may be in the store beside
# the one its pointer will name (the previous pointer's and the new one's), so a retry can remove what a dead host
# left half-done: an upload cut short, or a previous object it had no time to remove.
UPLOADING = "checkpoint_uploading"
WEIGHTS, STATE = "latest.weights.h5", "training_metadata.json"  # Keras BackupAndRestore's files (trainer checkpoint.py)
MEMBERS = (WEIGHTS, STATE, trialdir.METRICS)
STAGING = ".checkpoints"  # run_dir: snapshots waiting for their upload
_ID = re.compile(r"checkpoint-[0-9a-f]{32}")


class CheckpointError(ValueError):
    """A shipped checkpoint is not one this module wrote: the retry then trains from epoch 0."""


def _stamp(path):
    """(inode, size, mtime) of a regular file, links not followed; OSError for anything else."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{os.path.basename(path)} is not a regular file")
    return info.st_ino, info.st_size, info.st_mtime_ns


def _add(archive, name, handle, size):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    archive.addfile(info, handle)


def _records_bytes(records):
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def snapshot(trial_dir, records, target, max_bytes):
    """Write a consistent checkpoint of ``trial_dir`` to the tar file ``target``; returns the epochs it holds, or
    None when there is none yet or Keras is writing the next one (the caller tries again at its next poll).
    ``records`` are the metrics records the loop read and checked: the first ``epochs`` of them are kept."""
    folder = os.path.join(trial_dir, trialdir.CHECKPOINT)
    weights, state = os.path.join(folder, WEIGHTS), os.path.join(folder, STATE)
    try:
        before = _stamp(weights), _stamp(state)
        if before[0][2] > before[1][2] or before[0][1] > max_bytes:
            return None  # weights newer than the epoch count: Keras is saving the next epoch; or too big to ship
        with trialdir.open_regular(state, "rb") as handle:
            raw_state = handle.read(4097)
        epochs = json.loads(raw_state.decode()).get("epoch") if len(raw_state) <= 4096 else None
        if not isinstance(epochs, int) or isinstance(epochs, bool) or not 0 < epochs <= len(records):
            return None
        with tarfile.open(target, "w") as archive, trialdir.open_regular(weights, "rb") as handle:
            _add(archive, WEIGHTS, handle, before[0][1])
            _add(archive, STATE, io.BytesIO(raw_state), len(raw_state))
            kept = _records_bytes(records[:epochs])
            _add(archive, trialdir.METRICS, io.BytesIO(kept), len(kept))
        if (_stamp(weights), _stamp(state)) != before:
            return None  # changed while it was copied: not one epoch's state
        return epochs
    except (OSError, ValueError, AttributeError, tarfile.TarError):
        return None


def _digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_pointer(pointer, max_bytes):
    """The checkpoint attribute a retry inherited, checked: (id, epoch, bytes, sha256)."""
    if not isinstance(pointer, dict):
        raise CheckpointError("its checkpoint attribute is not an object")
    ident, epoch, size, digest = (pointer.get(k) for k in ("id", "epoch", "bytes", "sha256"))
    if not isinstance(ident, str) or not _ID.fullmatch(ident):
        raise CheckpointError("its checkpoint id is not one this module names")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 < epoch <= trialdir.MAX_EPOCHS:
        raise CheckpointError(f"its checkpoint epoch is not an integer 1..{trialdir.MAX_EPOCHS}")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= max_bytes:
        raise CheckpointError(f"its checkpoint size is not 1..{max_bytes} bytes (the trial folder's cap)")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise CheckpointError("its checkpoint digest is not a SHA-256")
    return ident, epoch, size, digest


def _download(store, ident, size, digest, target):
    """The object into ``target``, read no further than its recorded size, checked against its digest."""
    reader = store.open_reader(ident)
    hashed = hashlib.sha256()
    try:
        with open(target, "wb") as out:
            left = size + 1
            for block in iter(lambda: reader.read(min(1 << 20, left)), b""):
                left -= len(block)
                if left <= 0:
                    raise CheckpointError(f"its checkpoint object is larger than the {size} bytes recorded")
                hashed.update(block)
                out.write(block)
    finally:
        reader.close()
    if left != 1 or hashed.hexdigest() != digest:
        raise CheckpointError("its checkpoint object does not match the size and SHA-256 recorded")


def _unpack(archive_path, trial_dir, epoch):
    """Lay the checked members into the trial folder: checkpoint/ and metrics.jsonl (``epoch`` records)."""
    folder = os.path.join(trial_dir, trialdir.CHECKPOINT)
    os.makedirs(folder, exist_ok=True)
    with tarfile.open(archive_path, "r:") as archive:
        members = archive.getmembers()
        if sorted(m.name for m in members) != sorted(MEMBERS) or not all(m.isreg() for m in members):
            raise CheckpointError(f"its checkpoint holds other files than {', '.join(MEMBERS)}")
        data = {m.name: archive.extractfile(m) for m in members}
        state = json.loads(data[STATE].read(4097).decode())
        if not isinstance(state, dict) or state.get("epoch") != epoch:
            raise CheckpointError(f"its checkpoint's {STATE} does not say epoch {epoch}")
        lines = data[trialdir.METRICS].read(trialdir.MAX_METRICS_BYTES + 1).splitlines()
        records = [trialdir.check_epoch(json.loads(line), f"line {n + 1}") for n, line in enumerate(lines)]
        if [r["epoch"] for r in records] != list(range(epoch)):
            raise CheckpointError(f"its checkpoint's metrics are not epochs 0..{epoch - 1}, once each")
        with trialdir.open_regular(os.path.join(folder, WEIGHTS), "xb") as out:
            shutil.copyfileobj(data[WEIGHTS], out)
        trialdir.write_json(os.path.join(folder, STATE), state)
        trialdir.write_text(os.path.join(trial_dir, trialdir.METRICS), _records_bytes(records).decode())


def restore(store, pointer, trial_dir, staging, max_bytes):
    """Lay the checkpoint ``pointer`` names into the fresh ``trial_dir``; returns its epochs. CheckpointError (one
    line) or a store error when it cannot be used: nothing of it is then left in the folder."""
    ident, epoch, size, digest = check_pointer(pointer, max_bytes)
    os.makedirs(staging, exist_ok=True)
    handle, archive = tempfile.mkstemp(prefix="restore-", suffix=".tar", dir=staging)
    os.close(handle)
    try:
        _download(store, ident, size, digest, archive)
        _unpack(archive, trial_dir, epoch)
        return epoch
    except (tarfile.TarError, ValueError, KeyError, RecursionError) as exc:  # TrialFileError, UnicodeError are ValueErrors
        _forget(trial_dir)
        if isinstance(exc, (CheckpointError, trialdir.TrialFileError)):  # one line, the trial's bytes escaped
            raise CheckpointError(str(exc) if isinstance(exc, CheckpointError) else f"its checkpoint's {exc}") from None
        raise CheckpointError(f"its checkpoint is malformed ({type(exc).__name__})") from None
    except BaseException:
        _forget(trial_dir)
        raise
    finally:
        os.unlink(archive)


def carry_over(source_dir, records, trial_dir, staging, max_bytes):
    """Lay the checkpoint a finished trial kept (its trainer keeps it when its goal stop ended it with epochs left)
    into the fresh ``trial_dir`` of the trial that trains on from it, with the same checks as a shipped one; returns
    its epochs, or None when there is none to use (the trial then trains from epoch 0). ``records`` are the metrics
    records the loop read and checked of the source trial. The source's checkpoint is removed: it is carried once."""
    try:
        if not stat.S_ISDIR(os.lstat(os.path.join(source_dir, trialdir.CHECKPOINT)).st_mode):
            return None  # a link the trial made: its checkpoint is a folder of its own or nothing
    except OSError:
        return None
    os.makedirs(staging, exist_ok=True)
    handle, archive = tempfile.mkstemp(prefix="carry-", suffix=".tar", dir=staging)
    os.close(handle)
    try:
        epochs = snapshot(source_dir, records, archive, max_bytes)
        if epochs:
            _unpack(archive, trial_dir, epochs)
        return epochs
    except (tarfile.TarError, ValueError, KeyError, RecursionError, OSError):
        _forget(trial_dir)
        return None
    finally:
        os.unlink(archive)
        drop(source_dir)


def drop(trial_dir):
    """Remove the checkpoint a finished trial kept, once carried or when it is not continued (a link is not
    followed)."""
    shutil.rmtree(os.path.join(trial_dir, trialdir.CHECKPOINT), ignore_errors=True)


def _forget(trial_dir):
    shutil.rmtree(os.path.join(trial_dir, trialdir.CHECKPOINT), ignore_errors=True)
    if os.path.lexists(os.path.join(trial_dir, trialdir.METRICS)):
        os.unlink(os.path.join(trial_dir, trialdir.METRICS))


class Shipper:
    """The study loop's checkpoint hook on a fleet worker (StudyLoop.checkpoints): ``watch`` each running slot per
    poll, ``restore`` into a retry's fresh folder, ``ended`` when a trial is told, ``close`` at the end. Uploads
    run on one thread, so a slow store never holds the loop's polls (the goal, the pruner, the other slots)."""

    def __init__(self, store, run_dir, runner_config, progress):
        self.store, self.progress = store, progress
        self.staging = os.path.join(run_dir, STAGING)
        self.max_bytes = runner_config.get("max_trial_bytes") or trialcaps.default_max_trial_bytes(run_dir)
        self.cond = threading.Condition()
        self.jobs, self.busy, self.closing, self.thread = [], set(), False, None
        self.shipped, self.current, self.stats, self.failed = {}, {}, {}, set()

    def watch(self, slot):
        """A new epoch of a running trial whose last upload is done: snapshot it for the thread to upload."""
        number = slot.number
        with self.cond:
            if slot.code is not None or len(slot.epochs) <= self.shipped.get(number, 0) or number in self.busy:
                return
        path = os.path.join(self.staging, f"{number:06d}-{len(slot.epochs)}.tar")
        started = time.time()
        try:  # a full disk skips this epoch's snapshot; the loop goes on (trialcaps stops the study when it is low)
            os.makedirs(self.staging, mode=0o700, exist_ok=True)
            epochs = snapshot(slot.trial_dir, slot.epochs, path, self.max_bytes)
            if epochs is None or epochs <= self.shipped.get(number, 0):
                if os.path.lexists(path):
                    os.unlink(path)
                return
        except OSError:
            return
        with self.cond:
            self.shipped[number] = epochs
            self.busy.add(number)
            self.jobs.append(("ship", number, slot.trial, path, epochs, time.time() - started))
            self.cond.notify()
        self._start()

    def restore(self, frozen, trial_dir):
        """(epochs, None) once the checkpoint the retry ``frozen`` inherited is in ``trial_dir``, else (None, why)."""
        self.forget_unfinished_upload(frozen)
        pointer = frozen.user_attrs.get(POINTER)
        if pointer is None:
            return None, "no checkpoint of it reached the artifact store"
        try:
            epochs = restore(self.store, pointer, trial_dir, self.staging, self.max_bytes)
        except CheckpointError as exc:
            return None, str(exc)
        except STORE_ERRORS + (optuna.exceptions.OptunaError,) as exc:  # ArtifactNotFound is an OptunaError
            return None, f"its checkpoint could not be read ({type(exc).__name__})"
        with self.cond:  # the inherited object is removed once the retry shipped its own
            self.shipped[frozen.number], self.current[frozen.number] = epochs, pointer["id"]
        return epochs, None

    def forget_unfinished_upload(self, frozen):
        """The objects a dead host left that no pointer names (it died while writing one, or before removing the
        previous one) are removed once its retry starts: the retry inherits the trial's attributes, UPLOADING too."""
        uploading, pointer = frozen.user_attrs.get(UPLOADING), frozen.user_attrs.get(POINTER)
        named = (pointer or {}).get("id") if isinstance(pointer, dict) else None
        left = [i for i in (uploading if isinstance(uploading, list) else [])[:2]
                if isinstance(i, str) and _ID.fullmatch(i) and i != named]
        if left:
            with self.cond:
                self.jobs.extend(("remove", ident) for ident in left)
                self.cond.notify()
            self._start()

    def ended(self, trial, attrs):
        """The trial is told: its checkpoint is not needed any more (a retry only follows a trial failed as stale)."""
        with self.cond:
            for job in [j for j in self.jobs if j[0] == "ship" and j[1] == trial.number]:
                self.jobs.remove(job)
                os.unlink(job[3])
            self.jobs.append(("forget", trial.number))
            self.cond.notify()
            uploads, seconds, copied, size = self.stats.get(trial.number, (0, 0.0, 0.0, 0))
        if uploads:  # what shipping cost this trial: the loop's copies, the thread's uploads (docs/measurements.md)
            attrs["checkpoint_uploads"] = {"count": uploads, "seconds": round(seconds, 3),
                                           "snapshot_seconds": round(copied, 3), "last_bytes": size}
        self._start()

    def _start(self):
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="autotune-checkpoints", daemon=True)
            self.thread.start()

    def close(self, wait=60.0):
        """Upload what is queued (at most ``wait`` seconds more), then stop the thread."""
        with self.cond:
            self.closing = True
            self.cond.notify()
        if self.thread is not None:
            self.thread.join(wait)
        shutil.rmtree(self.staging, ignore_errors=True)

    def _work(self):
        while True:
            with self.cond:
                while not self.jobs and not self.closing:
                    self.cond.wait()
                if not self.jobs:
                    return
                job = self.jobs.pop(0)
                forgotten = self.current.pop(job[1], None) if job[0] == "forget" else job[1]
            if job[0] == "ship":
                self._ship(*job[1:])
            else:
                self._remove(forgotten)

    def _ship(self, number, trial, path, epochs, copied):
        started, ident = time.time(), f"checkpoint-{uuid.uuid4().hex}"
        try:
            size, digest = os.path.getsize(path), _digest(path)
            with self.cond:
                previous = self.current.get(number)
            try:  # named first: a host that dies before the previous object is gone leaves its retry the ids
                trial.set_user_attr(UPLOADING, [i for i in (previous, ident) if i])
            except (optuna.exceptions.OptunaError, SQLAlchemyError):
                return  # told meanwhile, or failed by another worker: nothing to ship any more
            with open(path, "rb") as handle:
                self.store.write(ident, handle)
            try:
                trial.set_user_attr(POINTER, {"id": ident, "epoch": epochs, "bytes": size, "sha256": digest})
            except (optuna.exceptions.OptunaError, SQLAlchemyError):
                self._remove(ident)  # told meanwhile, or failed by another worker: its retry keeps the earlier one
                return
            with self.cond:
                previous, self.current[number] = self.current.get(number), ident
            self._remove(previous)
            count, seconds, copies, _ = self.stats.get(number, (0, 0.0, 0.0, 0))
            self.stats[number] = (count + 1, seconds + time.time() - started, copies + copied, size)
        except STORE_ERRORS as exc:
            if number not in self.failed:  # said once per trial; the next epoch tries again
                self.failed.add(number)
                self.progress(f"trial {number:3d}  checkpoint not stored ({type(exc).__name__}); "
                              "a retry elsewhere would start from an earlier epoch")
        finally:
            if os.path.lexists(path):  # close() may have cleared the staging folder after its wait
                os.unlink(path)
            with self.cond:
                self.busy.discard(number)

    def _remove(self, ident):
        if ident:
            try:
                self.store.remove(ident)
            except STORE_ERRORS + (optuna.exceptions.OptunaError,):
                pass  # already gone (a store without it); a leftover object is only space
