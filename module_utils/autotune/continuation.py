"""A candidate the held-out split refused trains on from its checkpoint (search.continue_refused).

A trial stops at the first epoch its validation score reaches the goal (the trainer's goal stop). When the held-out
split then scores its saved model below the goal, the search used to go on with other draws, though that trial was
the best one and still rising: on the second workload this ended 3 of our 5 missed runs (docs/measurements.md). Now
its parameters are queued next, as a trial whose fresh folder gets the refused trial's checkpoint (its trainer keeps
it when the goal stop ended the fit with epochs left) and trains on from there, towards the stop goal moved past the
gap just seen (budget.stop_goal). A trial is carried once; a continuation is not continued again. One host only: on
a fleet the refused trial's folder may be on another host.
"""
import os
import stat

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.trialdir import reaches

CONTINUES = "continues"  # user attribute of the trial that trains on: the number of the refused one


def wanted(config, trial, attrs, trial_dir, goal, direction):
    """Whether the trial just told (``attrs`` as told) is to be continued: its claim re-scored reaches the goal, the
    held-out split does not, and its trainer kept a checkpoint (it stopped with epochs left)."""
    if not config["search"].get("continue_refused") or trial.user_attrs.get(CONTINUES) is not None:
        return False
    claimed, tested = attrs.get("verified_value"), attrs.get("test_value")
    if claimed is None or tested is None or not reaches(claimed, goal, direction) or reaches(tested, goal, direction):
        return False
    try:  # a folder of its own, not a link the trial planted
        return stat.S_ISDIR(os.lstat(os.path.join(trial_dir, trialdir.CHECKPOINT)).st_mode)
    except OSError:
        return False

