"""The in-process half of autotune: trains one trial and writes what it saw.

The controller (the Ansible tuning module) prepares a trial directory and
starts ``python -m autotune_trainer TRIAL_DIR --data PACKED_DATASET_FOLDER`` in a fresh
process or container. The contract between the two is files only; it lives in
``trialdir.py``, an exact copy of module_utils/autotune/trialdir.py.
"""
from autotune_trainer.trialdir import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_NAN, EXIT_OK  # noqa: F401 - re-exported
