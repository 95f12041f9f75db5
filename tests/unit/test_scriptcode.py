"""A user's own Keras script: detected by parsing, its values found, rewritten with libcst (never run here)."""
import difflib
import os

import pytest
import yaml

from ansible.module_utils.autotune import scriptcode
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.modelcode import code_for
from ansible.module_utils.autotune.tune import prepare
from conftest import REPO, SAMPLE_DATA, TEMPLATES

EXAMPLE = REPO / "examples" / "catsdogs_script" / "train.py"

LIST_SEQUENTIAL = '''\
import tensorflow as tf
from tensorflow.keras import layers

train = tf.keras.utils.image_dataset_from_directory("cnn_dataset/training_set", image_size=(64, 64), batch_size=32)
test = tf.keras.utils.image_dataset_from_directory("cnn_dataset/test_set", image_size=(64, 64), batch_size=32)

model = tf.keras.Sequential([
    layers.Rescaling(1./255),
    layers.Conv2D(filters=32, kernel_size=3, activation="relu"),   # first block
    layers.MaxPooling2D(),
    layers.Conv2D(filters=32, kernel_size=3, activation="relu"),
    layers.MaxPooling2D(),
    layers.Flatten(),
    layers.Dense(128, activation="relu"),
    layers.Dropout(0.25),
    layers.Dense(2, activation="softmax"),
])
model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=1e-3),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train, validation_data=test, epochs=5)
'''

FUNCTIONAL_IN_FUNCTION = '''\
import keras
from keras import layers
import numpy as np


def make_model(shape):
    inputs = keras.Input(shape=shape)
    x = layers.Convolution2D(16, (5, 5), padding="same")(inputs)
    x = layers.ReLU()(x)
    x = layers.MaxPool2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def main():
    x, y = np.load("x.npy"), np.load("y.npy")
    model = make_model(x.shape[1:])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=3, validation_split=0.2)


if __name__ == "__main__":
    main()
'''


def _diff(before, after):
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_module_level_sequential_with_add_is_detected():
    source = EXAMPLE.read_text()
    found = scriptcode.read(source, "train.py")
    assert found["baseline"] == {"data.batch_size": 64, "conv1.filters": 8, "conv1.kernel_size": 3, "conv2.filters": 8,
                                 "conv2.kernel_size": 3, "dense1.units": 16, "optimizer.learning_rate": 0.001,
                                 "fit.epochs": 1, "crp_blocks": 2}
    assert "dense2.units" not in found["baseline"], "the output layer is never tuned"
    assert [layer.split("(")[0] for layer in found["layers"]].count("layers.Conv2D") == 2


def test_list_sequential_keywords_dropout_and_optimizer_class():
    found = scriptcode.read(LIST_SEQUENTIAL, "cnn.py")
    assert found["baseline"] == {"data.batch_size": 32, "conv1.filters": 32, "conv1.kernel_size": 3,
                                 "conv2.filters": 32, "conv2.kernel_size": 3, "dense1.units": 128,
                                 "dropout1.rate": 0.25, "optimizer.learning_rate": 1e-3, "fit.epochs": 5,
                                 "crp_blocks": 2}


def test_functional_model_inside_functions_with_numpy_arrays():
    found = scriptcode.read(FUNCTIONAL_IN_FUNCTION, "net.py")
    assert found["baseline"] == {"conv1.filters": 16, "conv1.kernel_size": 5, "dense1.units": 32,
                                 "optimizer.learning_rate": 0.001, "fit.epochs": 3, "fit.batch_size": 128,
                                 "crp_blocks": 1}


def test_rewrite_changes_only_the_tuned_values_and_keeps_comments():
    source = EXAMPLE.read_text()
    found = scriptcode.read(source, "train.py")
    params = dict(found["baseline"], **{"conv1.filters": 16, "conv2.kernel_size": 5, "fit.epochs": 3})
    changed = _diff(source, scriptcode.rewrite(source, params, found["baseline"], found["block_sequence"]))
    assert changed == ["-model.add(layers.Conv2D(8, (3, 3)))", "+model.add(layers.Conv2D(16, (3, 3)))",
                       "-model.add(layers.Conv2D(8, (3, 3)))", "+model.add(layers.Conv2D(8, (5, 5)))",
                       "-history = model.fit(train_ds, validation_data=val_ds, epochs=1)",
                       "+history = model.fit(train_ds, validation_data=val_ds, epochs=3)"]


def test_trial_zero_is_the_file_as_committed():
    source = EXAMPLE.read_text()
    found = scriptcode.read(source, "train.py")
    assert scriptcode.rewrite(source, dict(found["baseline"]), found["baseline"], found["block_sequence"]) == source


def test_one_more_block_repeats_the_last_conv_activation_pool_group():
    source = EXAMPLE.read_text()
    found = scriptcode.read(source, "train.py")
    params = dict(found["baseline"], crp_blocks=3, **{"conv2.filters": 16})
    changed = _diff(source, scriptcode.rewrite(source, params, found["baseline"], found["block_sequence"]))
    assert sorted(changed) == sorted([
        "-model.add(layers.Conv2D(8, (3, 3)))", "+model.add(layers.Conv2D(16, (3, 3)))",
        f"+{scriptcode.ADDED_BLOCK_COMMENT}", "+model.add(layers.Conv2D(16, (3, 3)))",
        '+model.add(layers.Activation("relu"))', "+model.add(layers.MaxPooling2D(pool_size=(2, 2)))"])


def test_blocks_are_added_in_a_list_and_in_a_functional_chain_and_removed():
    found = scriptcode.read(LIST_SEQUENTIAL, "cnn.py")
    grown = scriptcode.rewrite(LIST_SEQUENTIAL, dict(found["baseline"], crp_blocks=3), found["baseline"],
                               found["block_sequence"])
    assert grown.count("layers.Conv2D(") == 3 and grown.count("layers.MaxPooling2D()") == 3
    assert scriptcode.read(grown, "cnn.py")["baseline"]["crp_blocks"] == 3
    shrunk = scriptcode.rewrite(LIST_SEQUENTIAL, dict(found["baseline"], crp_blocks=1), found["baseline"],
                                found["block_sequence"])
    assert shrunk.count("layers.Conv2D(") == 1 and "# first block" in shrunk
    found = scriptcode.read(FUNCTIONAL_IN_FUNCTION, "net.py")
    grown = scriptcode.rewrite(FUNCTIONAL_IN_FUNCTION, dict(found["baseline"], crp_blocks=2), found["baseline"],
                               found["block_sequence"])
    assert grown.count("x = layers.Convolution2D(16, (5, 5), padding=\"same\")(x)") == 1
    assert grown.count("x = layers.MaxPool2D()(x)") == 2


def test_optimizer_given_as_a_string_becomes_its_class_with_the_learning_rate():
    found = scriptcode.read(FUNCTIONAL_IN_FUNCTION, "net.py")
    code = scriptcode.rewrite(FUNCTIONAL_IN_FUNCTION, dict(found["baseline"], **{"optimizer.learning_rate": 0.003}),
                              found["baseline"], found["block_sequence"])
    assert 'model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.003), loss=' in code
    found = scriptcode.read(LIST_SEQUENTIAL, "cnn.py")
    code = scriptcode.rewrite(LIST_SEQUENTIAL, dict(found["baseline"], **{"optimizer.learning_rate": 0.01}),
                              found["baseline"], found["block_sequence"])
    assert "tf.keras.optimizers.Adam(learning_rate=0.01)" in code


@pytest.mark.parametrize("source, expected", [
    ("import keras\nfrom keras import layers\nmodel = keras.Sequential([layers.Dense(2)])\n"
     "model.compile(loss='mse')\nmodel.fit(x, y, validation_split=0.2)\n",
     r"builds a Keras model with Dense but no convolution layer; expected Conv2D"),
    ("import keras\nfrom keras import layers\nmodel = keras.Sequential([layers.Conv2D(4, 3), layers.Flatten()])\n",
     r"builds a Keras CNN but never calls fit\(\); expected model.fit"),
    ("import keras\nfrom keras import layers\nmodel = keras.Sequential([layers.Conv2D(4, 3), layers.Flatten()])\n"
     "model.fit(x, y, epochs=2)\n", r"calls fit\(\) without validation data; expected validation_data= or validation_split="),
    ("import keras\nprint(keras.__version__)\n", r"builds no model .* defines no build_model\(hp\)"),
])
def test_what_is_not_a_tunable_script_gets_one_line(source, expected):
    with pytest.raises(AutotuneError, match=expected) as caught:
        scriptcode.read(source, "train.py")
    assert "\n" not in str(caught.value)


def _config(folder, model=None, **extra):
    document = dict({"dataset": {"path": str(SAMPLE_DATA)}}, **extra)
    if model is not None:
        document["model"] = model
    path = folder / "autotune.yml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_no_model_in_the_configuration_finds_the_script_beside_it(tmp_path, sample_data):
    (tmp_path / "train.py").write_text(EXAMPLE.read_text())
    (tmp_path / "helpers.py").write_text("import os\n")
    _config_, plan, _run_dir, _storage = prepare(_config(tmp_path), str(TEMPLATES), runs_root=str(tmp_path))
    assert plan["api"] == "script" and plan["file"] == str(tmp_path / "train.py")
    assert plan["facts"]["kind"] == "cnn" and plan["facts"]["framework"] == "keras"
    assert plan["ladder"] == ["conv1.filters", "conv2.filters", "conv1.kernel_size", "conv2.kernel_size",
                              "crp_blocks", "fit.epochs"]
    assert plan["training_defaults"] == {"data_root": str(tmp_path)}
    assert code_for(plan, plan["baseline"], 0) == EXAMPLE.read_text()


def test_several_scripts_with_fit_are_named(tmp_path, sample_data):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(EXAMPLE.read_text())
    with pytest.raises(AutotuneError, match=r"several Keras scripts that call fit\(\): a.py, b.py; expected one"):
        prepare(_config(tmp_path), str(TEMPLATES))


def test_pytorch_script_and_syntax_error_get_one_line(tmp_path, sample_data):
    (tmp_path / "torch_train.py").write_text("import torch\nmodel = torch.nn.Conv2d(1, 4, 3)\n")
    with pytest.raises(AutotuneError, match=r"uses pytorch; supported: keras .* or a Keras script"):
        prepare(_config(tmp_path, model={"file": "torch_train.py"}), str(TEMPLATES))
    (tmp_path / "broken.py").write_text("import keras\nmodel = keras.Sequential(\n")
    with pytest.raises(AutotuneError, match=r"is not valid Python \(line"):
        prepare(_config(tmp_path, model={"file": "broken.py"}), str(TEMPLATES))


def test_baseline_override_names_are_checked_and_the_space_narrowed(tmp_path, sample_data):
    (tmp_path / "train.py").write_text(EXAMPLE.read_text())
    with pytest.raises(AutotuneError, match=r"model.baseline: \['conv9.filters'\] are not tunable values"):
        prepare(_config(tmp_path, model={"file": "train.py", "baseline": {"conv9.filters": 4}}), str(TEMPLATES))
    narrowed = {"fit.epochs": {"type": "int", "low": 1, "high": 3}, "crp_blocks": {"type": "int", "low": 2, "high": 3}}
    _c, plan, _r, _s = prepare(_config(tmp_path, model={"file": "train.py"}, search={"space": narrowed}), str(TEMPLATES))
    assert plan["space"] == narrowed and plan["ladder"] == ["crp_blocks", "fit.epochs"]


def test_detection_never_runs_the_script(tmp_path):
    marker = tmp_path / "ran"
    source = EXAMPLE.read_text() + f"\nopen({str(marker)!r}, 'w').write('x')\n"
    scriptcode.read(source, "train.py")
    assert not marker.exists()


def test_the_trainer_reads_relative_data_paths_from_the_scripts_folder(tmp_path, monkeypatch):
    from autotune_trainer.kinds import script  # the trainer package (tests/conftest.py puts trainer/ on the path)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "written_here.png").write_bytes(b"")
    assert script._resolve("cnn_dataset/training_set", "/checkout") == os.path.join("/checkout", "cnn_dataset/training_set")
    assert script._resolve("written_here.png", "/checkout") == "written_here.png"
    assert script._resolve("/data/abs", "/checkout") == "/data/abs"


def test_a_script_on_the_docker_runner_reads_its_folder_and_data_read_only(tmp_path, sample_data):
    (tmp_path / "train.py").write_text(EXAMPLE.read_text())
    _, plan, _, _ = prepare(_config(tmp_path, runner={"kind": "docker"}), str(TEMPLATES))
    assert plan["read_only_paths"] == [str(tmp_path), str(sample_data)]


def test_the_output_layer_is_read_and_checked_against_the_classes():
    script = scriptcode.read(LIST_SEQUENTIAL, "train.py")
    assert script["output"] == {"layer": 'layers.Dense(2, activation="softmax")', "units": 2}
    assert scriptcode.output_lines(script, ["cat", "dog"], "train.py") == ([], [])
    assert scriptcode.output_lines(scriptcode.read(EXAMPLE.read_text(), "train.py"), ["cat", "dog"], "train.py") == \
        ([], []), "one sigmoid unit is the binary form of two classes"
    errors, warnings = scriptcode.output_lines(script, ["a", "b", "c"], "train.py")
    assert warnings == [] and errors == [
        "model.file: 'train.py' ends in layers.Dense(2, activation=\"softmax\"): 2 output(s) for 3 classes in "
        "dataset.path ('a', 'b', 'c'); expected Dense(3, activation='softmax')"]


def test_a_ten_class_output_on_two_classes_is_one_line_at_the_facts_step(tmp_path, sample_data):
    """Issue 20: Dense(10, softmax) on cats and dogs trained without a warning."""
    (tmp_path / "train.py").write_text(EXAMPLE.read_text().replace('layers.Dense(1, activation="sigmoid")',
                                                                   'layers.Dense(10, activation="softmax")'))
    config, _plan, _run_dir, _storage = prepare(_config(tmp_path), str(TEMPLATES), runs_root=str(tmp_path))
    assert config["warnings"] == [
        "model.file: 'train.py' ends in layers.Dense(10, activation=\"softmax\"): 10 output(s) for 2 classes in "
        "dataset.path ('cat', 'dog'); expected Dense(2, activation='softmax') or Dense(1, activation='sigmoid')"]


def test_a_script_that_calls_fit_twice_is_warned_at_the_facts_step(tmp_path, sample_data):
    """Issue 20: the second fit was warned only in trainer.log, while the trial ran."""
    source = EXAMPLE.read_text()
    (tmp_path / "train.py").write_text(source + "\nmodel.fit(train_ds, validation_data=val_ds, epochs=3)\n")
    config, _plan, _run_dir, _storage = prepare(_config(tmp_path), str(TEMPLATES), runs_root=str(tmp_path))
    assert config["warnings"] == ["model.file: 'train.py' calls fit() 2 times; only the first fit is tuned and "
                                  "scored (later ones train on, unwatched); expected one fit() call"]
    (tmp_path / "train.py").write_text(source)
    assert prepare(_config(tmp_path), str(TEMPLATES), runs_root=str(tmp_path))[0]["warnings"] == []
