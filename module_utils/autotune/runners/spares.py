"""Warm trainer containers of the docker runner: started ahead in a spare folder, handed the next trial.

A spare container mounts ``trials/.spare-SLOT-ID`` as /trial and waits (autotune_trainer.warm
--folder). To hand it a trial the controller moves the prepared files (trial.json, model.py) into
that folder, renames the folder to the trial's own (``trials/0003``; the mount follows the folder),
records the renaming in ``run_dir/spares.json`` (the health check and a resuming controller find
the container's trial through it: a label cannot change) and writes ``handed.json`` last.
"""
import os
import re
import time
import uuid

from ansible.module_utils.autotune import trialdir

SPARE_NAME = re.compile(r"^\.spare-[0-9]{1,4}-[0-9a-f]{6}$")


def new_folder(run_dir, slot):
    name = f".spare-{int(slot)}-{uuid.uuid4().hex[:6]}"
    folder = os.path.join(run_dir, trialdir.TRIALS, name)
    os.makedirs(folder)
    return folder


def folder_of(run_dir, label):
    """The trial folder name a container's trial label stands for: itself, or what its spare folder became."""
    if not SPARE_NAME.match(label or ""):
        return label
    return (trialdir.read_json(os.path.join(run_dir, trialdir.SPARES), {}) or {}).get(label)


def hand(spare_folder, trial_dir, run_dir):
    """Move the prepared trial into the spare's folder, give that folder the trial's name, then say go."""
    for name in os.listdir(trial_dir):
        os.rename(os.path.join(trial_dir, name), os.path.join(spare_folder, name))
    os.rmdir(trial_dir)
    record = os.path.join(run_dir, trialdir.SPARES)
    renamed = trialdir.read_json(record, {}) or {}
    renamed[os.path.basename(spare_folder)] = os.path.basename(trial_dir)
    trialdir.write_json(record, renamed)  # before the rename: a health check in between still finds the trial
    os.rename(spare_folder, trial_dir)


def go(trial_dir):
    trialdir.write_json(os.path.join(trial_dir, trialdir.HANDED), {"launched": time.time()})
