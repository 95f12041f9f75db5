"""``python -m autotune_trainer.verify TRIAL_DIR --data PACK [--test TEST_PACK] --out OUT_DIR``: score a trained model.

The trial's own code wrote its metrics and its model; it could claim any score.
This runs in a fresh process or container of its own, never imports the trial's
code, loads the saved model in Keras' safe mode (no Lambda layers, no unknown
classes: nothing in the file can run), and predicts two splits: the validation
split of the trials' pack (to check the trial's claim) and the held-out test pack,
which no trial ever held (or, for a script's model, the controller's lists of
images, OUT_DIR/split.json). It writes both accuracies to OUT_DIR/verified.json;
the controller decides "goal reached" on the test accuracy.
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


def packed_split(data_path, part):
    """A packed split, pixels 0..255 as the trainer feeds template and build_model(hp) models
    (each scales its own input): (batches of 256, streamed, in the split's order; the labels)."""
    from autotune_trainer.data import load_dataset  # pylint: disable=import-outside-toplevel

    data = load_dataset(data_path, (part,))
    return data.batches(part, 256), data.labels[part]


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


def scores(model, args, split):
    """{val_accuracy, n_val[, test_accuracy, n_test]}: each split this verifier was given, predicted apart."""
    sources = {"val": (args.data, "val")}
    if args.test:
        sources["test"] = (args.test, "test")
    measured = {}
    for part, (pack, pack_part) in sources.items():
        if split:
            if not split.get(part):
                continue
            x, y = images_as_read(model, split[part])
            predictions = model.predict(x, verbose=0, batch_size=256)
        else:
            x, y = packed_split(pack, pack_part)
            predictions = model.predict(x, verbose=0)
        measured.update({f"{part}_accuracy": accuracy(predictions, y), f"n_{part}": int(len(y))})
    return measured


def main(argv=None):
    parser = argparse.ArgumentParser(prog="autotune_trainer.verify", description=__doc__.splitlines()[0])
    parser.add_argument("trial_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test", type=Path, help="the held-out test pack (absent on a fleet worker)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model_path = args.trial_dir / trialdir.SAVED_MODEL
    if not model_path.is_file() or model_path.is_symlink():
        print(f"autotune_trainer.verify: {model_path} is not a regular file; expected the trained model", file=sys.stderr)
        return EXIT_BAD_INPUT

    import keras  # pylint: disable=import-outside-toplevel

    model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    split = trialdir.read_json(str(args.out / SPLIT))
    measured = scores(model, args, split)
    os.makedirs(args.out, exist_ok=True)
    trialdir.write_json(str(args.out / VERIFIED), measured)
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
