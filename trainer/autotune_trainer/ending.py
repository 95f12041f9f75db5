"""How a trainer process ends: at once, once everything it owes is on disk.

The interpreter's teardown with TensorFlow loaded takes about a second (0.9-1.2 s measured on
the CI machine, after result.json was written) that the study would wait for before its next
trial. Every file the controller reads (metrics.jsonl, model.keras, result.json, verified.json)
is written and closed before the trainer returns (the JSON files fsynced too), and leave() flushes
standard output and error, so nothing of ours is lost without the teardown. A user's script may
leave its own files open and unflushed, or count on atexit: its process ends the ordinary way.
"""
import os
import sys

_ordinary = {"needed": False}


def ordinary_exit_needed():
    """Called when code we do not own (a user's script) runs in this process."""
    _ordinary["needed"] = True


def leave(code):
    sys.stdout.flush()
    sys.stderr.flush()
    if _ordinary["needed"]:
        sys.exit(code)
    os._exit(code)  # pylint: disable=protected-access
