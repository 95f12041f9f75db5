"""``python -m autotune_trainer.verify TRIAL_DIR --data DATASET.npz --out OUT_DIR``: score a trained model.

The trial's own code wrote its metrics and its model; it could claim any score.
This runs in a fresh process or container of its own, never imports the trial's
code, loads the saved model in Keras' safe mode (no Lambda layers, no unknown
classes: nothing in the file can run), predicts the validation split of the packed
data set, and writes the accuracy it measured to OUT_DIR/verified.json. The
controller decides "goal reached" on that number.
"""
import argparse
import os
import sys
from pathlib import Path

from autotune_trainer import trialdir
from autotune_trainer.trialdir import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_OK

VERIFIED = "verified.json"


def accuracy(predictions, labels):
    """Share of validation images whose predicted class is the true one (softmax, or one sigmoid unit)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    predictions = np.asarray(predictions)
    if predictions.ndim == 2 and predictions.shape[1] > 1:
        predicted = predictions.argmax(axis=1)
    else:
        predicted = (predictions.reshape(-1) > 0.5).astype("int64")
    truth = np.asarray(labels)
    if truth.ndim == 2:
        truth = truth.argmax(axis=1)
    return float((predicted == truth.reshape(-1)).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="autotune_trainer.verify", description=__doc__.splitlines()[0])
    parser.add_argument("trial_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model_path = args.trial_dir / trialdir.SAVED_MODEL
    if not model_path.is_file() or model_path.is_symlink():
        print(f"autotune_trainer.verify: {model_path} is not a regular file; expected the trained model", file=sys.stderr)
        return EXIT_BAD_INPUT

    import keras  # pylint: disable=import-outside-toplevel

    from autotune_trainer.data import load_dataset  # pylint: disable=import-outside-toplevel

    _, _, x_val, y_val, _ = load_dataset(args.data)
    model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    measured = accuracy(model.predict(x_val, batch_size=256, verbose=0), y_val)
    os.makedirs(args.out, exist_ok=True)
    trialdir.write_json(str(args.out / VERIFIED), {"val_accuracy": measured, "n_val": int(len(y_val))})
    return EXIT_OK


def run():
    try:
        return main()
    except Exception as exc:  # pylint: disable=broad-except
        print(f"autotune_trainer.verify: cannot score the model: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(run())
