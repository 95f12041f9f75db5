"""search.continue_refused (issue 21 item 4): a candidate the held-out split refused trains on from its checkpoint.

The checkpoint handed from the refused trial's folder to its continuation's, with real files; the whole path with
real training (the trainer keeps the checkpoint, the loop queues the continuation, the trainer resumes) is
tests/integration/test_tune_e2e.py.
"""
import json
import os
from types import SimpleNamespace

import pytest

from ansible.module_utils.autotune import checkpoints, continuation, trialdir
from test_checkpoints import CAP, _trial_folder


def _carry(tmp_path, source_records=None, epochs=3):
    source, target = tmp_path / "run" / "trials" / "0000", tmp_path / "run" / "trials" / "0001"
    written = _trial_folder(source, epochs, weights=b"w" * 4000)
    target.mkdir(parents=True)
    carried = checkpoints.carry_over(str(source), written if source_records is None else source_records,
                                     str(target), str(tmp_path / "run" / ".checkpoints"), CAP)
    return carried, source, target, written


def test_the_refused_trials_checkpoint_and_epochs_go_into_the_fresh_folder_once(tmp_path):
    carried, source, target, written = _carry(tmp_path)
    assert carried == 3
    assert (target / "checkpoint" / checkpoints.WEIGHTS).read_bytes() == b"w" * 4000
    assert json.loads((target / "checkpoint" / checkpoints.STATE).read_text())["epoch"] == 3
    assert trialdir.read_metrics(str(target / trialdir.METRICS)) == written, "the records the loop checked"
    assert not (source / "checkpoint").exists(), "carried once: the source keeps none"
    assert os.listdir(tmp_path / "run" / ".checkpoints") == [], "no staging file left"


def test_a_checkpoint_ahead_of_the_checked_records_or_a_linked_one_is_not_carried(tmp_path):
    carried, _, target, _ = _carry(tmp_path / "ahead", source_records=[{"epoch": 0, "val_accuracy": 0.5}])
    assert carried is None and not (target / "checkpoint").exists() and not (target / trialdir.METRICS).exists()
    elsewhere = tmp_path / "elsewhere"
    _trial_folder(elsewhere, 2)
    source, target = tmp_path / "link" / "0000", tmp_path / "link" / "0001"
    source.mkdir(parents=True)
    target.mkdir(parents=True)
    os.symlink(elsewhere / "checkpoint", source / "checkpoint")
    records = [{"epoch": n, "val_accuracy": 0.5} for n in range(2)]
    assert checkpoints.carry_over(str(source), records, str(target), str(tmp_path / "staging"), CAP) is None
    assert not (target / "checkpoint").exists() and (elsewhere / "checkpoint" / checkpoints.WEIGHTS).exists()
    assert checkpoints.carry_over(str(tmp_path / "none"), records, str(target), str(tmp_path / "staging"), CAP) is None


CONFIG = {"search": {"continue_refused": True}}
REFUSED = {"verified_value": 0.86, "test_value": 0.84}


@pytest.mark.parametrize("config, user_attrs, attrs, kept, wanted", [
    (CONFIG, {}, REFUSED, True, True),
    ({"search": {"continue_refused": False}}, {}, REFUSED, True, False),     # turned off
    (CONFIG, {continuation.CONTINUES: 3}, REFUSED, True, False),              # a continuation is carried once
    (CONFIG, {}, {"verified_value": 0.86, "test_value": 0.87}, True, False),  # confirmed: the goal is reached
    (CONFIG, {}, {"verified_value": 0.84, "test_value": 0.83}, True, False),  # its claim did not hold up
    (CONFIG, {}, {"verified_value": 0.86}, True, False),                      # no held-out split here
    (CONFIG, {}, REFUSED, False, False),                                      # it ran all its epochs: none kept
])
def test_only_a_refused_claim_with_a_kept_checkpoint_is_continued(tmp_path, config, user_attrs, attrs, kept, wanted):
    if kept:
        (tmp_path / trialdir.CHECKPOINT).mkdir()
    trial = SimpleNamespace(user_attrs=user_attrs)
    assert continuation.wanted(config, trial, attrs, str(tmp_path), 0.85, "maximize") is wanted


@pytest.mark.parametrize("learned, direction, expected", [
    ({"stop_goal": 0.8383}, "maximize", 0.8383),   # the earlier best stopped past the goal: so does its retraining
    ({"stop_goal": 0.81}, "maximize", 0.82),       # this study's own stop goal is further already
    ({"stop_goal": 0.95}, "maximize", 0.82),       # further than MAX_STOP_MARGIN past the goal: not taken
    ({"stop_goal": 0.79}, "maximize", 0.82),       # short of the goal: not taken
    ({"stop_goal": "0.9"}, "maximize", 0.82), ({}, "maximize", 0.82), (None, "maximize", 0.82),
    ({"stop_goal": 0.77}, "minimize", 0.77),       # a loss: further past is lower
])
def test_a_learned_best_is_retrained_to_where_it_stopped_in_its_earlier_study(learned, direction, expected):
    from ansible.module_utils.autotune.budget import learned_stop_goal  # pylint: disable=import-outside-toplevel
    stop_at = 0.82 if direction == "maximize" else 0.8
    assert learned_stop_goal(stop_at, learned, 0.8, direction) == pytest.approx(expected)
