"""The in-process half of autotune: trains one trial and writes what it saw.

The controller (the Ansible tuning module) prepares a trial directory and
starts ``python -m autotune_trainer TRIAL_DIR --data DATASET.npz`` in a fresh
process or container.  The contract between the two is files only:

  in   trial.json     number, params, model file and API, metric, goal, seed
       model.py       the rendered (or user-supplied) Keras model code
  out  metrics.jsonl  one JSON line per finished epoch (read live for pruning)
       result.json    final status and value
       model.keras    the trained model
       checkpoint/    Keras BackupAndRestore state, so a relaunch resumes
"""

# Exit codes the controller classifies (module_utils/autotune/runner.py).
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BAD_INPUT = 2
EXIT_NAN = 3
