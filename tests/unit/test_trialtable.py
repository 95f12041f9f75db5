"""trials.csv (trialtable.py): one row a trial, every hyperparameter a column, nothing a spreadsheet would run."""
import csv
import io

from ansible.module_utils.autotune import trialtable


def _records():
    return [
        {"number": 0, "state": "COMPLETE", "outcome": "finished", "value": 0.75, "verified_value": 0.75,
         "test_value": 0.74, "epochs": [{"val_accuracy": 0.7}, {"val_accuracy": 0.75}], "seconds": 3.5,
         "fit_seconds": 2.0, "reason": None, "duplicate_of": None, "resumed": False, "relaunches": 0,
         "params": {"filters": 8, "learning_rate": 0.001}},
        {"number": 1, "state": "FAIL", "outcome": "failed", "value": None, "epochs": [], "seconds": 1.0,
         "reason": "=HYPERLINK(\"http://evil\")\x1b[2J\nBcc: x", "resumed": True, "relaunches": 2,
         "params": {"filters": 16, "-units\r": "@SUM(A1)"}},
    ]


def test_each_trial_is_a_row_and_each_hyperparameter_a_column(tmp_path):
    path = trialtable.write(str(tmp_path), _records(), "val_accuracy")
    table = list(csv.DictReader(io.StringIO(open(path, encoding="utf-8").read())))
    assert [row["number"] for row in table] == ["0", "1"]
    first, second = table
    assert (first["value"], first["test_value"], first["epochs"], first["last_epoch_value"]) == ("0.75", "0.74", "2", "0.75")
    assert first["params_filters"] == "8" and first["params_learning_rate"] == "0.001"
    assert first["params_'-units\\r"] == "" and second["params_filters"] == "16"
    assert second["value"] == "" and second["resumed"] == "true" and second["relaunches"] == "2"


def test_a_trials_text_is_printable_and_never_a_formula(tmp_path):
    text = open(trialtable.write(str(tmp_path), _records(), "val_accuracy"), encoding="utf-8").read()
    assert "\x1b" not in text and "\r" not in text and len(text.splitlines()) == 3, "a trial's text stays in its cell"
    header, _, second = list(csv.reader(io.StringIO(text)))
    assert second[header.index("reason")] == "'=HYPERLINK(\"http://evil\")\\x1b[2J\\nBcc: x"
    assert second[header.index("params_'-units\\r")] == "'@SUM(A1)"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in csv.reader(io.StringIO(text)) for cell in row
                   if not _number(cell))


def _number(cell):
    try:
        float(cell)
        return True
    except ValueError:
        return False
