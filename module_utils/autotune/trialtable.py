"""trials.csv: every trial of a study as one row, for a spreadsheet or ``pandas.read_csv``.

Built from the trial records summary.json holds (report.trial_records, read from the study storage), so the table
and the summary never disagree. Optuna's ``trials_dataframe`` would need pandas on the controller (about half a
second of import in every run, and a dependency the study does not need); the csv module writes the same table.

Names and values a trial chose (hyperparameter names registered at run time, failure reasons) are written
printable (printable.escape) and never as a formula: a text cell a spreadsheet would evaluate (it starts with
``=``, ``+``, ``-``, ``@``) is prefixed with an apostrophe, as OWASP's CSV-injection advice says.
"""
import csv
import io
import os

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.printable import escape

TABLE_NAME = "trials.csv"
COLUMNS = ("number", "state", "outcome", "value", "verified_value", "test_value", "epochs", "last_epoch_value",
           "seconds", "fit_seconds", "reason", "duplicate_of", "resumed", "relaunches", "continues",
           "resumed_from_epoch")
_FORMULA_START = ("=", "+", "-", "@")


def rows(records, metric):
    """The header, then one row per trial; a hyperparameter column (``params_<name>``) per name any trial used."""
    names = sorted({name for record in records for name in (record.get("params") or {})})
    yield list(COLUMNS) + [f"params_{_text(name)}" for name in names]
    for record in records:
        epochs = record.get("epochs") or []
        last = epochs[-1].get(metric) if epochs and isinstance(epochs[-1], dict) else None
        values = {key: record.get(key) for key in COLUMNS}
        values.update(epochs=len(epochs), last_epoch_value=last)
        params = record.get("params") or {}
        yield [_cell(values[key]) for key in COLUMNS] + [_cell(params.get(name)) for name in names]


def write(run_dir, records, metric):
    """Write ``run_dir``/trials.csv (atomically) and return its path."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows(records, metric))
    path = os.path.join(run_dir, TABLE_NAME)
    trialdir.write_text(path, buffer.getvalue())
    return path


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return _text(value)


def _text(value):
    text = escape(value)
    return "'" + text if text.startswith(_FORMULA_START) else text
