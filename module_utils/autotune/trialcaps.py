"""The trial folder's size and the run folder's free space, watched from the controller (issue 20 rows 5).

A trial's folder is writable by the code under test: without a cap a trial wrote 3 GB into it, kept on the host after
the run. ``FolderWatch`` measures the folder every ``INTERVAL`` seconds or so (a walk that follows no link and counts each
file's blocks once, as ``du`` does) and tells the study loop when the folder passed ``runner.max_trial_bytes`` or the
run folder's disk fell under ``runner.min_free_bytes``; the loop then stops the trial (outcome ``too_big``) or the
study. It works the same for every runner: the trial folder is on the controller's host.

Docker's ``--storage-opt size=`` cannot do this: it bounds a container's writable layer (read-only here), needs
overlay2 on XFS with project quotas, and does not reach a bind-mounted folder.
"""
import os
import shutil
import stat
import time

MIB, GIB = 1024 ** 2, 1024 ** 3
INTERVAL = 0.2            # seconds at least between two measurements of one trial's folder (the loop's poll)
SHARE = 0.05              # ... and at most this share of the controller's time: a slow walk waits 20 times as long
MAX_ENTRIES = 100000      # files and folders a trial folder may hold (the walk stops counting there)


def _clamp(value, low, high):
    return max(low, min(high, value))


def default_max_trial_bytes(run_dir):
    """A trial folder's cap when runner.max_trial_bytes is unset: 2 % of the run folder's disk, within 1 GiB..20 GiB
    (a Keras CNN's folder holds a few MB: its model, checkpoint and logs)."""
    return _clamp(shutil.disk_usage(_existing(run_dir)).total // 50, GIB, 20 * GIB)


def default_min_free_bytes(run_dir):
    """The free space under which the study stops when runner.min_free_bytes is unset: 1 % of the run folder's disk,
    within 256 MiB..5 GiB (room for the summary, the best model and the study's database to be written)."""
    return _clamp(shutil.disk_usage(_existing(run_dir)).total // 100, 256 * MIB, 5 * GIB)


def _existing(path):
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def folder_usage(folder, stop_above=None):
    """(bytes on disk, entries) of ``folder``, links never followed, hard links counted once; the walk stops early
    once ``stop_above`` bytes or MAX_ENTRIES entries are passed. Entries that vanish or cannot be read are skipped."""
    seen, used, entries, pending = set(), 0, 0, [folder]
    while pending:
        try:
            with os.scandir(pending.pop()) as listing:
                for entry in listing:
                    entries += 1
                    info = entry.stat(follow_symlinks=False)
                    if (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        used += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
                    if entries > MAX_ENTRIES or (stop_above is not None and used > stop_above):
                        return used, entries
        except OSError:
            continue
    return used, entries


class FolderWatch:
    """One trial's folder against its cap, and its run folder's disk against the floor: every INTERVAL s, less often
    when walking the folder takes longer (at most SHARE of the time). A trial can pass its cap by what it writes
    between two measurements (a fraction of a second of writing) before it is stopped."""

    def __init__(self, trial_dir, run_dir, max_bytes, min_free):
        self.trial_dir, self.run_dir = trial_dir, run_dir
        self.max_bytes, self.min_free = max_bytes, min_free
        self.last, self.wait = 0.0, INTERVAL

    @classmethod
    def for_config(cls, trial_dir, run_dir, runner_config):
        return cls(trial_dir, run_dir, runner_config.get("max_trial_bytes") or default_max_trial_bytes(run_dir),
                   runner_config.get("min_free_bytes") or default_min_free_bytes(run_dir))

    def check(self):
        """None while within the caps, else (outcome, one line): ('too_big', ...) or ('disk_low', ...)."""
        if time.monotonic() - self.last < self.wait:
            return None
        started = time.monotonic()
        used, entries = folder_usage(self.trial_dir, stop_above=self.max_bytes)
        self.last = time.monotonic()
        self.wait = max(INTERVAL, (self.last - started) / SHARE)
        if used > self.max_bytes:
            return "too_big", (f"its folder passed {_size(self.max_bytes)} (runner.max_trial_bytes): stopped with "
                               f"more than {_size(used)} written")
        if entries > MAX_ENTRIES:
            return "too_big", f"its folder holds more than {MAX_ENTRIES} files and folders: stopped"
        low = low_space_line(self.run_dir, self.min_free)
        return ("disk_low", low) if low else None


def low_space_line(run_dir, min_free):
    """One line when the run folder's disk has less than ``min_free`` bytes free, else None."""
    free = shutil.disk_usage(_existing(run_dir)).free
    if free >= min_free:
        return None
    return (f"the run folder's disk has {_size(free)} free, under runner.min_free_bytes ({_size(min_free)}): "
            f"stopped; the finished trials, their folders and the study are kept in {run_dir}")


class SpaceWatch:
    """The study's view of the run folder's disk: checked at most every INTERVAL s (study loop's stop reasons)."""

    def __init__(self, run_dir, runner_config):
        self.run_dir = run_dir
        self.min_free = runner_config.get("min_free_bytes") or default_min_free_bytes(run_dir)
        self.last, self.line = 0.0, None

    def low(self):
        if self.line is None and time.monotonic() - self.last >= INTERVAL:
            self.last = time.monotonic()
            self.line = low_space_line(self.run_dir, self.min_free)
        return self.line


def _size(count):
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.1f} MiB"
