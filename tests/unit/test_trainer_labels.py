"""The trainer feeds labels in the form a compiled model's loss wants, and names a model-code failure in one line."""
import keras
import pytest
from keras import layers

from autotune_trainer.diagnose import model_error
from autotune_trainer.labels import label_form


def _model(units, activation, loss):
    model = keras.Sequential([keras.Input((4,)), layers.Dense(units, activation=activation)])
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return model


@pytest.mark.parametrize("units, activation, loss, form", [
    (2, "softmax", "sparse_categorical_crossentropy", "int"),
    (2, "softmax", keras.losses.SparseCategoricalCrossentropy(), "int"),
    (2, "softmax", "categorical_crossentropy", "one_hot"),
    (3, "softmax", keras.losses.CategoricalCrossentropy(), "one_hot"),
    (2, "softmax", keras.losses.categorical_crossentropy, "one_hot"),
    (1, "sigmoid", "binary_crossentropy", "binary"),
    (1, "sigmoid", keras.losses.BinaryCrossentropy(), "binary"),
    (2, "softmax", "binary_crossentropy", "one_hot"),
])
def test_label_form_follows_the_compiled_loss(units, activation, loss, form):
    assert label_form(_model(units, activation, loss), classes=max(units, 2)) == form


def test_a_shape_mismatch_names_the_cause_and_the_fix_in_one_line():
    line = model_error(ValueError("Arguments `target` and `output` must have the same shape.\nReceived: (None, 2)"),
                       "build_model(hp) or its fit", classes=2)
    assert line.startswith("build_model(hp) or its fit failed before training: ValueError: Arguments `target`")
    assert "(2 classes) do not fit" in line and "binary_crossentropy" in line and "\n" not in line


def test_any_other_exception_in_the_model_code_is_named_with_its_type():
    line = model_error(NameError("name 'layer' is not defined"), "the script")
    assert line == ("the script failed before training: NameError: name 'layer' is not defined; "
                    "fix the model code (trainer.log has the traceback) and push again")


def test_running_out_of_memory_is_not_called_a_model_code_error(tmp_path):
    import json  # pylint: disable=import-outside-toplevel

    from autotune_trainer import __main__ as trainer  # pylint: disable=import-outside-toplevel

    (tmp_path / "trial.json").write_text(json.dumps({"number": 0, "params": {}, "model_api": "keras_tuner",
                                                     "seed": 1}))
    (tmp_path / "model.py").write_text("def build_model(hp):\n    raise MemoryError('no room')\n")

    class Data:
        class_names = ["cat", "dog"]

    with pytest.raises(MemoryError):
        trainer.run_trial(tmp_path, lambda: Data(), launched=0.0)
    assert not (tmp_path / "result.json").exists()
    (tmp_path / "model.py").write_text("def build_model(hp):\n    raise KeyError('units')\n")
    assert trainer.run_trial(tmp_path, lambda: Data(), launched=0.0) == trainer.EXIT_CRASH
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "model_error" and "KeyError: 'units'" in result["reason"]


@pytest.mark.parametrize("body, said", [("    return None\n", "None"), ("    pass\n", "None"),
                                        ("    return 'model'\n", "a str")])
def test_a_build_model_that_returns_no_model_says_so_in_our_words(tmp_path, body, said):
    """Issue 20: build_model returning None said "'NoneType' object has no attribute 'outputs'"."""
    import json  # pylint: disable=import-outside-toplevel

    from autotune_trainer import __main__ as trainer  # pylint: disable=import-outside-toplevel

    (tmp_path / "trial.json").write_text(json.dumps({"number": 0, "params": {}, "model_api": "keras_tuner",
                                                     "seed": 1}))
    (tmp_path / "model.py").write_text("def build_model(hp):\n" + body)

    class Data:
        class_names = ["cat", "dog"]

    assert trainer.run_trial(tmp_path, lambda: Data(), launched=0.0) == trainer.EXIT_CRASH
    assert json.loads((tmp_path / "result.json").read_text())["reason"] == (
        f"build_model(hp) returned {said}; expected a keras Model (compiled), e.g. 'return model' at its end")
