"""A trial's record and its re-run's checks (record.py, reproduce.py, runners' parse_lock), without training.

The re-run itself, with real training, is tests/integration/test_reproduce.py; here the refusals and the comparison,
each one line, on records written by hand and a runner whose environment is a given dictionary.
"""
import json
import subprocess
import sys

import pytest

import reproduce_trial
from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune import record as trial_record
from ansible.module_utils.autotune import reproduce
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.runners.base import parse_lock
from conftest import EXAMPLE_CONFIG, REPO
from modules_support import raise_on_exit, run_module

LOCK = {"python": "3.11.7", "machine": "x86_64", "trainer": "ab" * 32,
        "packages": {"keras": "3.15.1", "numpy": "2.4.6", "tensorflow-cpu": "2.21.0"}}
EPOCHS = [{"epoch": 0, "val_accuracy": 0.8075000047683716, "val_loss": 0.46, "seconds": 1.2, "time": 1.0},
          {"epoch": 1, "val_accuracy": 0.84, "val_loss": 0.37, "seconds": 0.4, "time": 2.0}]


def one_line(caught):
    text = str(caught.value)
    assert "\n" not in text and "expected" in text, text
    return text


def write_record(run_dir, number=0, **fields):
    code = run_dir / "code" / f"{number:04d}.py"
    code.parent.mkdir(parents=True, exist_ok=True)
    code.write_text("print('model')\n")
    record = {"format": trial_record.FORMAT, "number": number, "study": "s",
              "spec": {"seed": 1, "metric": "val_accuracy"},
              "epochs": EPOCHS, "dataset": {"path": str(run_dir / "images")}, "data": {"fingerprint": "f", "pack": "p"},
              "runner": {"kind": "local"}, "code": f"code/{number:04d}.py",
              "code_sha256": trial_record.file_sha256(str(code)), "environment": LOCK, "outcome": "finished"}
    record.update(fields)
    (run_dir / "records").mkdir(exist_ok=True)
    (run_dir / "records" / f"{number:04d}.json").write_text(json.dumps(record))
    return record


class Runner:
    """A runner whose trainer environment is the one given."""

    def __init__(self, environment):
        self.found = environment

    def environment(self):
        return self.found


def test_a_trial_folder_is_located_and_anything_else_refused(tmp_path):
    assert reproduce.locate(tmp_path / "runs" / "s" / "trials" / "0003") == (str(tmp_path / "runs" / "s"), 3)
    for wrong in (tmp_path / "runs" / "s", tmp_path / "runs" / "s" / "code" / "0003", "trials/x"):
        with pytest.raises(AutotuneError) as caught:
            reproduce.locate(wrong)
        assert "is not a trial folder" in one_line(caught)


def test_a_trial_without_a_record_and_a_malformed_record_are_refused(tmp_path):
    with pytest.raises(AutotuneError) as caught:
        reproduce.load(str(tmp_path), 4)
    assert "trial 4" in one_line(caught) and "has no record" in str(caught.value)
    write_record(tmp_path, epochs=[{"epoch": 0, "val_accuracy": "0.9"}])
    with pytest.raises(AutotuneError) as caught:
        reproduce.load(str(tmp_path), 0)
    assert "val_accuracy" in one_line(caught)
    write_record(tmp_path, runner="local")
    with pytest.raises(AutotuneError) as caught:
        reproduce.load(str(tmp_path), 0)
    assert "runner is missing or malformed" in one_line(caught)


def test_code_changed_since_the_record_is_refused(tmp_path):
    record = write_record(tmp_path)
    assert reproduce.check_code(record, str(tmp_path)) == "print('model')\n"
    (tmp_path / "code" / "0000.py").write_text("print('other model')\n")
    with pytest.raises(AutotuneError) as caught:
        reproduce.check_code(record, str(tmp_path))
    assert "code/0000.py changed since trial 0 was recorded" in one_line(caught)


def test_a_changed_package_is_named_in_one_line():
    record = {"number": 2, "environment": LOCK}
    reproduce.check_environment(record, Runner(dict(LOCK, interpreter="/usr/bin/python3")))
    changed = dict(LOCK, packages=dict(LOCK["packages"], **{"tensorflow-cpu": "2.22.0", "scipy": "1.16.0"}))
    with pytest.raises(AutotuneError) as caught:
        reproduce.check_environment(record, Runner(changed))
    line = one_line(caught)
    assert "trial 2" in line and "tensorflow-cpu 2.21.0 -> 2.22.0" in line and "scipy (none) -> 1.16.0" in line
    with pytest.raises(AutotuneError) as caught:
        reproduce.check_environment({"number": 2, "environment": {"error": "no lock module"}}, Runner(LOCK))
    assert "holds no trainer environment (no lock module)" in one_line(caught)


def test_a_docker_record_without_an_image_id_is_refused():
    with pytest.raises(AutotuneError) as caught:
        reproduce.runner_for({"number": 1, "runner": {"kind": "docker"}, "environment": {"error": "old image"}})
    assert "names no trainer image ID (old image)" in one_line(caught)


def test_equal_values_reproduce_and_one_float_apart_does_not():
    record = {"number": 0, "epochs": EPOCHS, "outcome": "finished"}
    rerun = [dict(epoch, seconds=9.9, time=99.0) for epoch in EPOCHS]  # timing never counts
    assert reproduce.compare(record, rerun)[0] is True
    off = [EPOCHS[0], dict(EPOCHS[1], val_accuracy=0.8400000000000001)]
    equal, rows = reproduce.compare(record, off)
    assert equal is False and [row["recorded"] == row["rerun"] for row in rows] == [True, False]
    assert reproduce.compare(record, rerun[:1])[0] is False, "an epoch missing is not reproduced"
    assert reproduce.compare(record, rerun + [dict(EPOCHS[1], epoch=2)])[0] is False, "nor one more"


def test_a_pruned_trial_is_compared_over_the_epochs_it_recorded():
    record = {"number": 0, "epochs": EPOCHS[:1], "outcome": "pruned"}
    equal, rows = reproduce.compare(record, EPOCHS)
    assert equal is True and len(rows) == 1


def test_the_printed_lines_show_both_values_per_epoch():
    record = {"number": 0, "epochs": EPOCHS, "outcome": "finished", "spec": {"seed": 1, "deterministic": True},
              "environment": LOCK, "runner": {"kind": "local"}, "data": {"fingerprint": "f", "pack": "p"},
              "code_sha256": "c" * 64, "commit": None}
    equal, rows = reproduce.compare(record, [EPOCHS[0], dict(EPOCHS[1], val_loss=0.5)])
    lines = reproduce.lines(record, equal, rows, "val_accuracy")
    assert lines[0].startswith("trial 0 (finished): seed 1, op determinism on")
    assert lines[1] == ("epoch 1: recorded / re-run: val_accuracy 0.8075000047683716 / 0.8075000047683716, "
                        "val_loss 0.46 / 0.46: same")
    assert lines[2].endswith("val_loss 0.37 / 0.5: DIFFERENT") and lines[-1].startswith("not reproduced: epoch(s) 2")


def test_the_trainer_lock_is_read_and_checked():
    done = subprocess.run([sys.executable, "-m", "autotune_trainer.lock"], capture_output=True, check=True,
                          cwd=REPO / "trainer", timeout=60)
    found = parse_lock(done.stdout)
    assert found["packages"]["numpy"] and found["python"] == ".".join(map(str, sys.version_info[:3]))
    assert len(found["trainer"]) == 64
    for wrong in (b"", b"Traceback ...\nModuleNotFoundError: No module named 'autotune_trainer.lock'\n",
                  json.dumps(dict(LOCK, packages={"numpy": 2})).encode()):
        with pytest.raises(AutotuneError) as caught:
            parse_lock(wrong)
        assert "autotune_trainer.lock" in one_line(caught)


def test_determinism_is_on_by_default_and_a_boolean():
    config = tune_config.load(str(EXAMPLE_CONFIG))
    assert config["search"]["deterministic"] is True
    with pytest.raises(AutotuneError) as caught:
        tune_config.load(str(EXAMPLE_CONFIG), overrides={"search": {"deterministic": "yes"}})
    assert "search.deterministic" in str(caught.value)


def test_the_module_fails_in_one_line_and_check_mode_refuses_alike(tmp_path, monkeypatch):
    raise_on_exit(monkeypatch)
    outcome = run_module(reproduce_trial, {"trial": str(tmp_path / "runs" / "s")})
    assert outcome.failed and "is not a trial folder" in outcome.result["msg"] and "\n" not in outcome.result["msg"]
    run_dir = tmp_path / "runs" / "s"
    (run_dir / "trials" / "0000").mkdir(parents=True)
    write_record(run_dir)
    (run_dir / "code" / "0000.py").write_text("print('changed')\n")
    outcome = run_module(reproduce_trial, {"trial": str(run_dir / "trials" / "0000")}, check_mode=True)
    assert outcome.failed and "changed since trial 0 was recorded" in outcome.result["msg"]
    assert not (run_dir / "reproduced").exists()
