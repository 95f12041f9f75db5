"""A trial's checkpoint (``checkpoint/``): Keras ``BackupAndRestore``'s files, written so that a kill at any moment
leaves a pair of weights and epoch count that belong together, and matched with metrics.jsonl on resume.

Keras writes the weights in place and the epoch count after them: a trainer killed between the two (what the health
check and a killed controller relaunch) left weights of one epoch beside the count of another, or an empty count
file, and the trial restarted from epoch 0 or skipped an epoch's metrics line. Here each file is written beside its
place and renamed into it, and the count file is the commit: it is removed before its weights are replaced and
written back after, so weights without a count are never used. The previous epoch's pair is kept as ``.bkp`` (the
same protocol), for the kill that lands after an epoch's checkpoint but before its metrics line.

The layout is Keras's own, which the controller ships and carries (module_utils/autotune/checkpoints.py).
"""
import json
import os
import shutil

from autotune_trainer import trialdir

WEIGHTS, STATE = "latest.weights.h5", "training_metadata.json"
BACKUP = ".bkp"
NEXT_WEIGHTS = "next.weights.h5"  # Keras wants the .weights.h5 ending


def save(folder, write_weights, state):
    """One epoch's checkpoint (callbacks.TrialCheckpoint): the pair there now becomes the .bkp pair, then
    ``write_weights(path)`` and the ``state`` text ({"epoch", "batch"}) become the newest."""
    os.makedirs(folder, exist_ok=True)
    if _epoch_of(folder) is not None:
        _promote(folder, "", BACKUP)
    _commit(folder, "", write_weights, state)


def _promote(folder, source, target):
    """The pair named by the suffix ``source`` becomes the one named by ``target`` too (its weights linked)."""
    _commit(folder, target, lambda path: _link(os.path.join(folder, WEIGHTS + source), path),
            _read(os.path.join(folder, STATE + source)))


def _commit(folder, suffix, write_weights, state):
    """Write the weights (``write_weights(path)``) and then the count of the pair named by ``suffix``."""
    weights, count = os.path.join(folder, WEIGHTS + suffix), os.path.join(folder, STATE + suffix)
    fresh = os.path.join(folder, NEXT_WEIGHTS)
    if os.path.lexists(fresh):
        os.unlink(fresh)  # a kill's leftover may be a link to live weights: never written through
    write_weights(fresh)
    if os.path.lexists(count):
        os.unlink(count)  # from here until the new count is written, this pair is not used
    os.replace(fresh, weights)
    trialdir.write_text(count, state)


def _link(source, target):
    """A hard link, not a copy: a weights file is only ever replaced by a rename, never written in place, so the
    link keeps its epoch's bytes and an epoch's checkpoint writes the weights once. A copy where links fail."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _read(path):
    with trialdir.open_regular(path, "r") as handle:
        return handle.read(4096)


def _epoch_of(folder, suffix=""):
    """The epoch count of the pair named by ``suffix`` when its weights and count are both there, else None."""
    try:
        if not os.path.isfile(os.path.join(folder, WEIGHTS + suffix)):
            return None
        epoch = json.loads(_read(os.path.join(folder, STATE + suffix))).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0 else None


def resume_point(folder, metrics_path):
    """(records, why): the metrics records a resumed fit keeps, as many as the checkpoint's epochs, the previous
    epoch's pair made the checkpoint when the newest one is ahead of metrics.jsonl; ([], why) when a checkpoint is
    there but neither pair matches (the trial restarts from epoch 0), ([], None) when there is none. metrics.jsonl
    is rewritten to the records kept, so a half-written last line is not appended to."""
    if not os.path.isdir(folder) or not os.listdir(folder):
        return [], None
    records = trialdir.read_metrics(str(metrics_path))
    epochs = [r.get("epoch") if isinstance(r, dict) else None for r in records]
    found = [(suffix, _epoch_of(folder, suffix)) for suffix in ("", BACKUP)]
    for suffix, epoch in found:
        if epoch is not None and epochs[:epoch] == list(range(epoch)):
            if suffix:
                _promote(folder, BACKUP, "")
            kept = records[:epoch]
            if len(kept) < len(records) or not _ends_whole(metrics_path):
                trialdir.write_text(str(metrics_path), "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
            return kept, None
    said = [str(epoch) for _, epoch in found if epoch is not None]
    return [], (f"its epoch counts ({', '.join(said)}) do not match the {len(records)} epochs of metrics.jsonl" if said
                else "no weights with a readable epoch count")


def _ends_whole(path):
    """Whether the file ends with a whole line (a trainer killed mid-line leaves part of one)."""
    try:
        with trialdir.open_regular(str(path), "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except OSError:
        return True
