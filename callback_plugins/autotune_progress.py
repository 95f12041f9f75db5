# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Show tune_model's per-trial progress lines live, while the (long) task is still running.

A module cannot print while it runs. This callback creates a file, exports its
path as AUTOTUNE_PROGRESS_FILE before the workers fork (the local connection
passes the environment on to modules), and echoes each line tune_model appends
to it.
"""

DOCUMENTATION = r"""
name: autotune_progress
type: notification
short_description: Echo tune_model's per-trial progress lines as they happen
description:
  - Exports AUTOTUNE_PROGRESS_FILE to modules run through the local connection and prints every line
    tune_model writes there, one per finished trial, while the task runs.
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
"""

import os
import re
import tempfile
import threading

from ansible.plugins.callback import CallbackBase

# The same characters as module_utils/autotune/printable.py's CONTROL (a plugin may not import module_utils; a
# unit test pins the two): tune_model writes its lines escaped, and a line arriving here raw is escaped again.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape(line):
    """The line as printable text: each control character as a Python-style escape (ESC -> \\x1b)."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1] if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                       line)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "autotune_progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        handle, self._path = tempfile.mkstemp(prefix="autotune-progress-", suffix=".log")
        os.close(handle)
        os.environ["AUTOTUNE_PROGRESS_FILE"] = self._path
        self._offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _drain(self):
        try:
            with open(self._path, encoding="utf-8", errors="replace", newline="") as handle:  # a CR is no line end
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind("\n") + 1]
        self._offset += len(complete.encode("utf-8"))
        for line in complete.split("\n")[:-1]:  # only LF ends a line: a CR or a form feed is escaped, not obeyed
            self._display.display(f"autotune | {escape(line)}")

    def _follow(self):
        while not self._stop.wait(0.5):
            self._drain()

    def v2_playbook_on_stats(self, stats):
        self._stop.set()
        self._thread.join(timeout=2)
        self._drain()
        try:
            os.unlink(self._path)
        except OSError:
            pass
