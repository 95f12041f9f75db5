"""``python -m autotune_trainer.warm --data PACKED_FOLDER [--folder DIR]``: a trainer started before its trial is known.

It imports Keras and loads the packed data set, then waits for its trial: on standard input, one
line ``TRIAL_DIR<TAB>LAUNCH_TIME`` from the local runner; or, in a container (``--folder``), the
file ``handed.json`` the docker runner writes into the mounted folder once the trial is there. It then
trains exactly that trial, as ``python -m autotune_trainer TRIAL_DIR`` would, and exits: one
fresh process per trial still (no memory carried over, a crash ends one trial), without the
seconds of start-up in the trial's time. An empty line or end of input (the study ended) makes
it exit without training.
"""
import argparse
import os
import sys
import time
from pathlib import Path

from autotune_trainer import trialdir
from autotune_trainer.trialdir import EXIT_BAD_INPUT, EXIT_OK


def _into_trial(trial_dir):
    """From here on the process writes where a cold trainer would: the trial's own log, in its folder."""
    with trialdir.open_regular(str(trial_dir / trialdir.LOG), "ab") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    os.chdir(trial_dir)


def _wait_in(folder, poll=0.05):
    """The launch time the docker runner writes into the folder when it hands over the trial."""
    handed = folder / trialdir.HANDED
    while True:
        record = trialdir.read_json(str(handed))
        if record and "launched" in record:
            return record["launched"]
        time.sleep(poll)


def _wait_for(path, poll=0.05):
    """A spare may start while the controller still packs the data set: the pack appears, complete, by a rename."""
    while not path.is_dir():
        time.sleep(poll)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="autotune_trainer.warm", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--folder", type=Path, help="wait for the trial in this folder (a container's /trial)")
    args = parser.parse_args(argv)

    import keras  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  # the seconds a spare saves

    from autotune_trainer import __main__ as trainer  # pylint: disable=import-outside-toplevel
    from autotune_trainer import callbacks  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from autotune_trainer.data import load_dataset  # pylint: disable=import-outside-toplevel

    _wait_for(args.data)
    data = load_dataset(args.data)
    print("autotune_trainer.warm: ready", flush=True)
    if args.folder:
        trial_dir, launched = args.folder, _wait_in(args.folder)
    else:
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            return EXIT_OK
        folder, _, launched = line.partition("\t")
        trial_dir = Path(folder)
    if not (trial_dir / trialdir.SPEC).is_file():
        print(f"autotune_trainer.warm: {trial_dir} holds no {trialdir.SPEC}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.folder:
        os.chdir(trial_dir)  # a container's output is its log already; the runner keeps it in the trial folder
    else:
        _into_trial(trial_dir)
        trial_dir = Path(".")  # a root controller's runner names it relative to the spares folder, left just now
    print(f"autotune_trainer.warm: trial handed to warm trainer pid {os.getpid()} (Keras and data already loaded)",
          flush=True)
    return trainer.run_trial(trial_dir, lambda: data, float(launched))


if __name__ == "__main__":
    from autotune_trainer.__main__ import run
    from autotune_trainer.ending import leave

    leave(run(main))
