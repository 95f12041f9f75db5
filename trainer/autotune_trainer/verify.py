"""``python -m autotune_trainer.verify TRIAL_DIR --data PACKED_DATASET_FOLDER --out OUT_DIR``: score a trained model.

The trial's own code wrote its metrics and its model; it could claim any score.
This runs in a fresh process or container of its own, never imports the trial's
code, loads the saved model in Keras' safe mode (no Lambda layers, no unknown
classes: nothing in the file can run), predicts the validation split of the packed
data set (or, for a script's model, the controller's list of validation images,
OUT_DIR/split.json), and writes the accuracy it measured to OUT_DIR/verified.json.
The controller decides "goal reached" on that number.
"""
import argparse
import os
import sys
from pathlib import Path

from autotune_trainer import trialdir
from autotune_trainer.trialdir import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_OK

VERIFIED = "verified.json"
SPLIT = "split.json"  # written by the controller for a model that reads images itself (a script)


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


def packed_split(data_path):
    """The packed validation split, pixels 0..255 as the trainer feeds template and build_model(hp) models
    (each scales its own input): (batches of 256, streamed, in the split's order; the labels)."""
    from autotune_trainer.data import load_dataset  # pylint: disable=import-outside-toplevel

    data = load_dataset(data_path)
    return data.batches("val", 256), data.labels["val"]


def images_as_read(model, split):
    """The validation images themselves, at the model's input size and channels, pixels 0..255 decoded and resized
    as ``keras.utils.image_dataset_from_directory`` does (tf.io.decode_image, bilinear tf.image.resize): a script's
    model carries its own scaling (docs/scripts.md). TensorFlow's own decoders: the trainer image has no Pillow."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    height, width, channels = model.input_shape[1:4]

    def read(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        return tf.image.resize(image, (height, width), method="bilinear").numpy()

    return np.stack([read(path) for path in split["files"]]), np.asarray(split["labels"])


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

    model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    split = trialdir.read_json(str(args.out / SPLIT))
    x_val, y_val = images_as_read(model, split) if split else packed_split(args.data)
    measured = accuracy(model.predict(x_val, verbose=0, **({"batch_size": 256} if split else {})), y_val)
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
    from autotune_trainer.ending import leave

    leave(run())
