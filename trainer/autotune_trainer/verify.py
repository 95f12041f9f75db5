"""``python -m autotune_trainer.verify TRIAL_DIR --data PACK [--test TEST_PACK] --out OUT_DIR``: score a trained model.

The trial's own code wrote its metrics and its model; it could claim any score.
This runs in a fresh process or container of its own, never imports the trial's
code, loads the saved model in Keras' safe mode (no Lambda layers, no unknown
classes: nothing in the file can run), and scores two splits: the validation
split of the trials' pack (to check the trial's claim) and the held-out test pack,
which no trial ever held (or, for a script's model, the controller's lists of
images, OUT_DIR/split.json). What it scores is target.metric, which the controller
writes to OUT_DIR/score.json (none: val_accuracy): accuracy from the predictions,
any other metric (the loss, AUC, precision, ...) by evaluating the model with the
metrics it was compiled with, rebuilt from the file. It writes both values to
OUT_DIR/verified.json (val_<name>, test_<name>); the controller decides
"goal reached" on the worse of the two.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

from autotune_trainer import trialdir
from autotune_trainer.trialdir import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_OK

VERIFIED = "verified.json"
SPLIT = "split.json"  # written by the controller for a model that reads images itself (a script)
SCORE = "score.json"  # written by the controller: {"metric": target.metric}
METRIC = re.compile(r"\Aval_[A-Za-z_][A-Za-z0-9_]*\Z")  # config.py's target.metric pattern


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


def scores(model, args, split, metric="val_accuracy"):
    """{metric, val_<name>, n_val[, test_<name>, n_test]}: ``metric`` on each split this verifier was given, apart."""
    name = metric[len("val_"):]
    sources = {"val": (args.data, "val")}
    if args.test:
        sources["test"] = (args.test, "test")
    measured = {"metric": metric}
    for part, (pack, pack_part) in sources.items():
        if split and not split.get(part):
            continue
        files = split[part] if split else None
        value, count = (predicted_accuracy(model, (pack, pack_part), files) if name == "accuracy"
                        else evaluated(model, name, (pack, pack_part), files))
        measured.update({f"{part}_{name}": value, f"n_{part}": count})
    return measured


def predicted_accuracy(model, packed, files):
    """(accuracy, images) from the model's predictions: the saved model needs no compiled metric for it."""
    if files:
        x, y = images_as_read(model, files)
        predictions = model.predict(x, verbose=0, batch_size=256)
    else:
        x, y = packed_split(*packed)
        predictions = model.predict(x, verbose=0)
    return accuracy(predictions, y), int(len(y))


def evaluated(model, name, packed, files):
    """(value, images) of the compiled metric ``name`` (or the loss), from ``model.evaluate`` on the split with its
    labels in the form the model's loss wants (labels.py), as its fit's validation pass measured it."""
    from autotune_trainer.data import load_dataset  # pylint: disable=import-outside-toplevel
    from autotune_trainer.labels import label_form  # pylint: disable=import-outside-toplevel

    if files:
        x, y = images_as_read(model, files)
        labels = _labels_as(label_form(model, len(files["classes"])), y, len(files["classes"]))
        inputs, count = {"x": x, "y": labels, "batch_size": 256}, len(y)
    else:
        data = load_dataset(packed[0], (packed[1],))
        form = label_form(model, len(data.class_names))
        inputs, count = {"x": data.batches(packed[1], 256, labels=form)}, len(data.labels[packed[1]])
    model.reset_metrics()  # each split from a fresh state: no count of the one before is carried over
    results = model.evaluate(**inputs, verbose=0, return_dict=True)
    if name not in results:
        raise ValueError(f"the saved model's compiled metrics are {', '.join(sorted(results))}; expected {name!r} "
                         f"(target.metric val_{name})")
    return float(results[name]), int(count)


def _labels_as(form, labels, classes):
    """Class indices in the form a compiled loss wants (labels.label_form): one-hot rows, one float column, as is."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    if form == "one_hot":
        return np.eye(classes, dtype="float32")[labels]
    if form == "binary":
        return labels.astype("float32").reshape(-1, 1)
    return labels


def requested_metric(out_dir):
    """target.metric, as the controller asked in OUT_DIR/score.json (val_accuracy when it asked nothing)."""
    metric = (trialdir.read_json(str(out_dir / SCORE)) or {}).get("metric", "val_accuracy")
    if not isinstance(metric, str) or not METRIC.match(metric):
        raise ValueError(f"{SCORE}: metric {metric!r}; expected val_ and a name, as target.metric")
    return metric


def load(model_path, metric):
    """The saved model in safe mode: uncompiled for accuracy (predictions suffice), else with the loss and metrics
    it was compiled with, which Keras rebuilds from the file when they are its own (a function of the trial's code
    is never imported: it cannot be scored)."""
    import keras  # pylint: disable=import-outside-toplevel

    if metric == "val_accuracy":
        return keras.saving.load_model(model_path, compile=False, safe_mode=True)
    try:
        return keras.saving.load_model(model_path, compile=True, safe_mode=True)
    except (TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{metric} needs the model's compiled loss and metrics, and they cannot be rebuilt without "
                         f"running the trial's code ({first}); expected Keras' own metrics and losses") from None


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

    metric = requested_metric(args.out)
    model = load(model_path, metric)
    split = trialdir.read_json(str(args.out / SPLIT))
    measured = scores(model, args, split, metric)
    os.makedirs(args.out, exist_ok=True)
    trialdir.write_json(str(args.out / VERIFIED), measured)
    return EXIT_OK


def warm():
    """``python -m autotune_trainer.verify --warm``: a verifier started before any trial needs scoring (the local
    runner keeps one ready): Keras and TensorFlow imported, it waits for one line on standard input, a JSON object
    ``{"argv": [the arguments main takes], "out": OUT_DIR}``, then scores that model as a cold verifier would, its
    output in OUT_DIR/trainer.log, and exits. An empty line or end of input (the study ended) exits at once."""
    import keras  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  # the seconds it saves

    print("autotune_trainer.verify: ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return EXIT_OK
    request = json.loads(line)
    with trialdir.open_regular(os.path.join(request["out"], trialdir.LOG), "ab") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    os.chdir(request["out"])
    return main(request["argv"])


def run():
    try:
        return warm() if sys.argv[1:] == ["--warm"] else main()
    except Exception as exc:  # pylint: disable=broad-except
        print(f"autotune_trainer.verify: cannot score the model: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    from autotune_trainer.ending import leave

    leave(run())
