"""Keras scripts in the shapes seen in the wild (tests/fixtures/script_shapes/): each is detected with exactly
its tunable points, and a trial's rewrite differs from the user's file only at the tuned values (and blocks).

Parsing only: nothing here imports or runs a script.
"""
import difflib

import pytest

from ansible.module_utils.autotune import scriptcode
from conftest import REPO

SHAPES = REPO / "tests" / "fixtures" / "script_shapes"
ADDED = scriptcode.ADDED_BLOCK_COMMENT
CONV = {"conv1.filters", "conv1.kernel_size"}

# file: (tunable points with their committed values, a trial's changes, lines removed, lines added)
TABLE = {
    "original_pipeline.py": (  # module-level .add, image_dataset_from_directory on training_set/ + test_set/, sigmoid
        {"data.batch_size": 32, "conv1.filters": 8, "conv1.kernel_size": 3, "conv2.filters": 8, "conv2.kernel_size": 3,
         "dense1.units": 128, "optimizer.learning_rate": 0.001, "fit.epochs": 1, "crp_blocks": 2},
        {"conv2.filters": 16, "fit.epochs": 3},
        ['model.add(layers.Conv2D(8, (3, 3), activation="relu"))',
         "model.fit(train_ds, validation_data=test_ds, epochs=1)"],
        ['model.add(layers.Conv2D(16, (3, 3), activation="relu"))',
         "model.fit(train_ds, validation_data=test_ds, epochs=3)"]),
    "mnist_list.py": (  # list Sequential, numpy arrays, softmax over 10 classes, validation_split
        {"conv1.filters": 32, "conv1.kernel_size": 3, "conv2.filters": 64, "conv2.kernel_size": 3,
         "dropout1.rate": 0.5, "optimizer.learning_rate": 0.001, "fit.epochs": 15, "fit.batch_size": 128,
         "crp_blocks": 2},
        {"conv2.kernel_size": 5, "dropout1.rate": 0.3},
        ['    layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),', "    layers.Dropout(0.5),"],
        ['    layers.Conv2D(64, kernel_size=(5, 5), activation="relu"),', "    layers.Dropout(0.3),"]),
    "functional.py": (  # the functional API; one more block is fed from the last block's output
        {"conv1.filters": 16, "conv1.kernel_size": 3, "dense1.units": 64, "optimizer.learning_rate": 0.001,
         "fit.epochs": 4, "crp_blocks": 1},
        {"crp_blocks": 2, "dense1.units": 128},
        ['x = layers.Dense(64, activation="relu")(x)'],
        [ADDED, 'x = layers.Conv2D(16, 3, padding="same")(x)', 'x = layers.Activation("relu")(x)',
         "x = layers.MaxPooling2D()(x)", 'x = layers.Dense(128, activation="relu")(x)']),
    "in_a_function.py": (  # model built in a function, tf.keras names, optimizer="sgd"
        {"conv1.filters": 32, "conv1.kernel_size": 5, "dense1.units": 100, "optimizer.learning_rate": 0.01,
         "fit.epochs": 2, "fit.batch_size": 64, "crp_blocks": 1},
        {"optimizer.learning_rate": 0.03, "conv1.filters": 64},
        ['    model.add(tf.keras.layers.Conv2D(32, (5, 5), activation="relu", input_shape=(28, 28, 1)))',
         '    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])'],
        ['    model.add(tf.keras.layers.Conv2D(64, (5, 5), activation="relu", input_shape=(28, 28, 1)))',
         '    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.03), '
         'loss="sparse_categorical_crossentropy", metrics=["accuracy"])']),
    "predict_after_fit.py": (  # Convolution2D, keywords, a prediction after fit that fails in a trial
        {"data.batch_size": 32, "conv1.filters": 32, "conv1.kernel_size": 3, "dense1.units": 128,
         "optimizer.learning_rate": 0.001, "fit.epochs": 25, "crp_blocks": 1},
        {"conv1.filters": 64, "crp_blocks": 2},
        ['cnn.add(layers.Convolution2D(filters=32, kernel_size=3, activation="relu"))'],
        ['cnn.add(layers.Convolution2D(filters=64, kernel_size=3, activation="relu"))', ADDED,
         'cnn.add(layers.Convolution2D(filters=64, kernel_size=3, activation="relu"))',
         "cnn.add(layers.MaxPool2D(pool_size=2, strides=2))"]),
    "flowers_softmax.py": (  # loader's batch_size, three blocks (one removed), Adam's rate positional
        {"data.batch_size": 64, "conv1.filters": 16, "conv1.kernel_size": 3, "conv2.filters": 32,
         "conv2.kernel_size": 3, "conv3.filters": 64, "conv3.kernel_size": 3, "dropout1.rate": 0.2,
         "dense1.units": 128, "optimizer.learning_rate": 0.0005, "fit.epochs": 10, "crp_blocks": 3},
        {"crp_blocks": 2, "optimizer.learning_rate": 0.0015},
        ['    layers.Conv2D(64, 3, padding="same", activation="relu"),', "    layers.MaxPooling2D(),",
         'model.compile(optimizer=tf.keras.optimizers.Adam(0.0005), loss="categorical_crossentropy", '
         'metrics=["accuracy"])'],
        ['model.compile(optimizer=tf.keras.optimizers.Adam(0.0015), loss="categorical_crossentropy", '
         'metrics=["accuracy"])']),
    "constants.py": (  # values held in module-level names: the assignment is rewritten, not the call
        {"conv1.filters": 16, "conv1.kernel_size": 3, "conv2.kernel_size": 3, "optimizer.learning_rate": 0.001,
         "fit.epochs": 5, "fit.batch_size": 32, "crp_blocks": 2},
        {"fit.epochs": 10, "conv1.filters": 32, "fit.batch_size": 64, "optimizer.learning_rate": 0.003},
        ["EPOCHS = 5", "BATCH_SIZE = 32", "FILTERS = 16  # both conv layers", "LEARNING_RATE = 0.001"],
        ["EPOCHS = 10", "BATCH_SIZE = 64", "FILTERS = 32  # both conv layers", "LEARNING_RATE = 0.003"]),
    "keras2_generator.py": (  # Keras 2 course shape: from-imports, ImageDataGenerator, steps_per_epoch
        {"conv1.filters": 32, "conv1.kernel_size": 3, "dense1.units": 128, "fit.epochs": 1, "crp_blocks": 1},
        {"conv1.kernel_size": 5, "fit.epochs": 3},
        ['model.add(Convolution2D(filters=32, kernel_size=(3, 3), activation="relu", input_shape=(64, 64, 3)))',
         "model.fit(training_set, steps_per_epoch=100, epochs=1, validation_data=test_set, validation_steps=80)"],
        ['model.add(Convolution2D(filters=32, kernel_size=(5, 5), activation="relu", input_shape=(64, 64, 3)))',
         "model.fit(training_set, steps_per_epoch=100, epochs=3, validation_data=test_set, validation_steps=80)"]),
    "batchnorm_function.py": (  # Conv, BatchNorm, ReLU, Pool blocks in a function; two hidden Dense
        {"conv1.filters": 32, "conv1.kernel_size": 3, "conv2.filters": 64, "conv2.kernel_size": 3,
         "dense1.units": 256, "dropout1.rate": 0.3, "dense2.units": 64, "optimizer.learning_rate": 0.001,
         "fit.epochs": 20, "fit.batch_size": 64, "crp_blocks": 2},
        {"crp_blocks": 1, "dense2.units": 128},
        ['    x = layers.Conv2D(64, 3, padding="same")(x)', "    x = layers.BatchNormalization()(x)",
         "    x = layers.ReLU()(x)", "    x = layers.MaxPooling2D(2)(x)",
         '    x = layers.Dense(64, activation="relu")(x)'],
        ['    x = layers.Dense(128, activation="relu")(x)']),
    "rebound_name.py": (  # a name bound twice is not tuned; one bound once to a literal is
        {"conv1.filters": 8, "conv1.kernel_size": 3, "optimizer.learning_rate": 0.001, "fit.epochs": 3,
         "crp_blocks": 1},
        {"conv1.kernel_size": 5},
        ["KERNEL = 3"], ["KERNEL = 5"]),
}


def _read(name):
    return (SHAPES / name).read_text()


def _changed_lines(before, after):
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def test_the_table_holds_the_shapes_seen_in_the_wild():
    assert len(TABLE) >= 10 and sorted(TABLE) == sorted(p.name for p in SHAPES.glob("*.py"))


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_shape_is_detected_with_exactly_its_tunable_points(name):
    points = TABLE[name][0]
    found = scriptcode.read(_read(name), name)
    assert found["baseline"] == points
    assert list(found["baseline"]) == list(points), "named in source order"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_rewrite_differs_only_at_the_tuned_values(name):
    points, changes, removed, added = TABLE[name]
    source = _read(name)
    found = scriptcode.read(source, name)
    code = scriptcode.rewrite(source, dict(points, **changes), found["baseline"], found["block_sequence"])
    got_removed, got_added = _changed_lines(source, code)
    # As multisets: difflib may pair a changed line with a copy of it in either order.
    assert (sorted(got_removed), sorted(got_added)) == (sorted(removed), sorted(added))
    read_back = scriptcode.read(code, name)["baseline"]
    if "crp_blocks" in changes:  # the conv points follow the blocks the file now has
        assert read_back["crp_blocks"] == changes["crp_blocks"]
        assert {k: v for k, v in changes.items() if k != "crp_blocks"}.items() <= read_back.items()
    else:
        assert read_back == dict(points, **changes), "the rewrite reads back as the trial's values"
    assert scriptcode.rewrite(source, points, found["baseline"], found["block_sequence"]) == source, "trial 0"
