"""The trial-folder contract: one copy for controller and trainer, atomic writes, links never followed."""
import os

import pytest

from ansible.module_utils.autotune import trialdir
from conftest import REPO


def test_the_trainer_vendors_the_very_same_contract():
    controller = (REPO / "module_utils" / "autotune" / "trialdir.py").read_bytes()
    trainer = (REPO / "trainer" / "autotune_trainer" / "trialdir.py").read_bytes()
    assert controller == trainer, "copy module_utils/autotune/trialdir.py to trainer/autotune_trainer/trialdir.py"


def test_write_json_is_atomic_and_replaces_a_planted_tmp_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "health.json"
    os.symlink(victim, f"{target}.tmp")  # planted by the code under test
    trialdir.write_json(str(target), {"relaunches": 1})
    assert victim.read_text() == "keep me"
    assert trialdir.read_json(str(target)) == {"relaunches": 1}
    assert not os.path.lexists(f"{target}.tmp")


def test_readers_refuse_links_out_of_the_trial_folder(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text('{"value": 0.99}\nroot:x:0:0\n')
    for name in (trialdir.RESULT, trialdir.METRICS, trialdir.LOG):
        os.symlink(secret, tmp_path / name)
    assert trialdir.read_json(str(tmp_path / trialdir.RESULT), {}) == {}
    assert trialdir.read_metrics(str(tmp_path / trialdir.METRICS)) == []
    assert trialdir.tail(str(tmp_path / trialdir.LOG)) == []
    with pytest.raises(OSError):
        trialdir.open_regular(str(tmp_path / trialdir.LOG), "ab")
    assert secret.read_text().endswith("root:x:0:0\n")


def test_metrics_reader_waits_for_a_line_still_being_written(tmp_path):
    path = tmp_path / trialdir.METRICS
    path.write_text('{"epoch": 0, "val_accuracy": 0.7}\n{"epoch": 1, "val_acc')
    assert trialdir.read_metrics(str(path)) == [{"epoch": 0, "val_accuracy": 0.7}]
    assert trialdir.read_metrics(str(path), seen=1) == []


def test_goal_tolerance_and_folder_names():
    assert trialdir.reaches(0.9499999881, 0.95) and not trialdir.reaches(0.9474999904632568, 0.95)
    assert trialdir.trial_path("/runs/x", 7) == "/runs/x/trials/0007"


def test_a_full_disk_keeps_the_earlier_file_and_leaves_no_tmp(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    trialdir.write_json(str(path), {"kept": True})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trialdir.os, "fsync", full_disk)  # the disk fills as the new file is flushed
    with pytest.raises(OSError, match="No space left"):
        trialdir.write_json(str(path), {"kept": False})
    monkeypatch.undo()
    assert trialdir.read_json(str(path)) == {"kept": True} and not os.path.lexists(f"{path}.tmp")


def test_test_files_have_unique_names_so_the_whole_suite_collects():
    """pytest imports test modules by basename (rootdir-relative, no packages): a name twice breaks `make test`."""
    names = [path.name for path in (REPO / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
