"""Model code: template rendering and facts read from the syntax tree."""
import pytest

from ansible.module_utils.autotune import modelcode
from ansible.module_utils.autotune.kinds import source as model_source
from ansible.module_utils.autotune.kinds import template as template_kind
from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune.errors import AutotuneError
from conftest import TEMPLATES

CNN = str(TEMPLATES / "cnn.py.j2")
KERAS_TUNER_MODEL = '''
import keras
from keras import layers

def build_model(hp):
    model = keras.Sequential()
    model.add(layers.Flatten())
    model.add(layers.Dense(units=hp.Int("units", min_value=32, max_value=512, step=32), activation="relu"))
    if hp.Boolean("dropout"):
        model.add(layers.Dropout(rate=0.25))
    model.add(layers.Dense(2, activation="softmax"))
    lr = hp.Float("lr", min_value=1e-4, max_value=1e-2, sampling="log")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model
'''


def _baseline(**changes):
    meta = template_kind.template_meta(CNN)
    return dict({n: s["default"] for n, s in meta["hyperparameters"].items()}, **changes)


def test_template_renders_blocks_filters_and_kernel():
    source = template_kind.render(CNN, _baseline(blocks=3, filters=8, kernel_size=5, pooling="avg"), trial_number=7)
    facts = model_source.facts(source, "cnn")
    assert facts["kind"] == "cnn" and facts["framework"] == "keras"
    convs = [layer for layer in facts["layers"] if layer.startswith("Conv2D")]
    assert convs == ["Conv2D(8, kernel_size=5, padding='same')", "Conv2D(16, kernel_size=5, padding='same')",
                     "Conv2D(32, kernel_size=5, padding='same')"]
    assert sum(layer.startswith("AveragePooling2D") for layer in facts["layers"]) == 3
    assert "Trial 7." in source and "'blocks': 3" in source


def test_rendered_model_builds_and_compiles():
    namespace = {}
    exec(compile(template_kind.render(CNN, _baseline(blocks=2, augment=True, dropout=0.2)), "model.py", "exec"), namespace)  # noqa: S102
    model = namespace["build_model"]((28, 28, 1), 2)
    assert model.output_shape == (None, 2)
    assert [l.__class__.__name__ for l in model.layers].count("Conv2D") == 2
    assert namespace["TRAINING"] == {"epochs": 1, "batch_size": 64}


def test_the_template_is_unchanged_for_accuracy_and_a_loss():
    plain = template_kind.render(CNN, _baseline())
    assert template_kind.render(CNN, _baseline(), metric="val_accuracy") == plain
    assert template_kind.render(CNN, _baseline(), metric="val_loss") == plain, "every model logs its loss"
    assert 'loss="sparse_categorical_crossentropy",\n        metrics=["accuracy"],' in plain


@pytest.mark.parametrize("metric, name", [("val_auc", "auc"), ("val_precision", "precision"), ("val_recall", "recall")])
def test_target_metric_adds_a_known_keras_metric_to_the_templates_compile(metric, name):
    namespace = {}
    exec(compile(template_kind.render(CNN, _baseline(), metric=metric), "model.py", "exec"), namespace)  # noqa: S102
    model = namespace["build_model"]((28, 28, 1), 2)
    assert model.loss == "categorical_crossentropy", "AUC, precision and recall read one-hot labels"
    added = model._compile_config.config["metrics"][1]  # pylint: disable=protected-access
    assert added.name == name, "logged as val_" + name


def test_a_metric_the_template_does_not_log_is_one_line_before_any_trial(tmp_path, sample_data):
    from conftest import write_config  # pylint: disable=import-outside-toplevel
    from ansible.module_utils.autotune.tune import prepare  # pylint: disable=import-outside-toplevel

    path = write_config(tmp_path, target={"metric": "val_f1", "goal": 0.8})
    with pytest.raises(AutotuneError) as caught:
        prepare(str(path), str(TEMPLATES))
    assert str(caught.value) == ("target.metric: 'val_f1' is not a metric the template cnn.py.j2 logs; expected one "
                                 "of val_accuracy, val_loss, val_auc, val_precision, val_recall, or model.file with "
                                 "your own compile()")


def test_a_planned_template_renders_every_trial_with_target_metric(tmp_path, sample_data):
    from conftest import write_config  # pylint: disable=import-outside-toplevel
    from ansible.module_utils.autotune.tune import prepare  # pylint: disable=import-outside-toplevel

    _, plan, _, _ = prepare(str(write_config(tmp_path, target={"metric": "val_auc", "goal": 0.9})), str(TEMPLATES),
                            runs_root=str(tmp_path))
    assert plan["metric"] == "val_auc" and 'keras.metrics.AUC(name="auc"' in modelcode.code_for(plan, plan["baseline"], 1)


def test_keras_tuner_file_facts_give_space_and_defaults():
    facts = model_source.facts(KERAS_TUNER_MODEL, "model.py")
    assert facts["kind"] == "mlp" and facts["build_model_args"] == ["hp"]
    assert facts["space"] == {"units": {"type": "int", "low": 32, "high": 512, "step": 32},
                              "dropout": {"type": "bool"},
                              "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    assert facts["hyperparameters"] == {"units": 32, "dropout": False, "lr": 1e-4}


def test_pytorch_is_refused_with_what_is_supported():
    with pytest.raises(AutotuneError, match=r"uses pytorch; supported: keras"):
        model_source.facts("import torch\n\ndef build_model(hp):\n    return torch.nn.Linear(2, 2)\n", "net.py")


def test_file_without_build_model_is_refused():
    with pytest.raises(AutotuneError, match=r"defines no build_model\(\)"):
        model_source.facts("import keras\nmodel = keras.Sequential()\n", "m.py")


def test_facts_never_execute_the_code(tmp_path):
    marker = tmp_path / "ran"
    source = f"import keras\nopen({str(marker)!r}, 'w').write('x')\n\ndef build_model(hp):\n    pass\n"
    model_source.facts(source, "m.py")
    assert not marker.exists()


def test_escalate_ladder_walks_filters_kernel_blocks_epochs():
    space = {"filters": {"type": "int", "low": 4, "high": 16, "log": True},
             "kernel_size": {"type": "categorical", "choices": [3, 5]},
             "blocks": {"type": "int", "low": 1, "high": 2},
             "epochs": {"type": "int", "low": 1, "high": 3}}
    ladder = ["filters", "kernel_size", "blocks", "epochs"]
    best = {"filters": 4, "kernel_size": 3, "blocks": 1, "epochs": 1}
    tried = {search_space.frozen(best)}
    steps = []
    for rung in range(4):
        params, _, name = search_space.escalate(best, space, ladder, rung, tried)
        tried.add(search_space.frozen(params))
        steps.append((name, params[name]))
    assert steps == [("filters", 8), ("kernel_size", 5), ("blocks", 2), ("epochs", 2)]
    # Tried values are skipped along the rung; a rung at its limit hands over to the next.
    assert search_space.escalate(best, space, ladder, 0, tried)[0]["filters"] == 16
    top = {"filters": 16, "kernel_size": 5, "blocks": 2, "epochs": 3}
    assert search_space.escalate(top, space, ladder, 0, {search_space.frozen(top)}) is None


def _template(folder, meta, body="import keras\n\ndef build_model(input_shape, num_classes):\n    return {{ hp.units | py }}\n"):
    (folder / "net.py.j2").write_text(body)
    (folder / "net.yml").write_text(meta)
    return str(folder / "net.py.j2")


def test_template_metadata_is_validated_one_line_per_problem(tmp_path):
    path = _template(tmp_path, "framework: keras\nhyperparameters:\n  units: {type: int, low: 8, high: 4}\n")
    with pytest.raises(AutotuneError) as error:
        template_kind.template_meta(path)
    assert error.value.details == ["hyperparameters.units.default: missing; expected the baseline value"]
    path = _template(tmp_path, "framework: pytorch\nhyperparameters:\n  units: {default: 8, type: int, low: 16, high: 4}\n")
    with pytest.raises(AutotuneError) as error:
        template_kind.template_meta(path)
    assert error.value.details == ["framework: 'pytorch' is invalid; expected one of keras"]


def test_template_framework_is_the_metadata_one(tmp_path):
    config = {"model": {"template": str(TEMPLATES / "cnn.py.j2")}, "search": {"strategy": "tpe"}, "base_dir": str(tmp_path)}
    assert modelcode.plan(config, str(TEMPLATES))["facts"]["framework"] == "keras"


def test_a_template_outside_the_allowed_folders_is_refused(tmp_path):
    with pytest.raises(AutotuneError, match="outside the templates folder and the model's folder"):
        template_kind.template_path(str(TEMPLATES), "../../etc/evil.py.j2", str(tmp_path))
    inside = tmp_path / "mine.py.j2"
    assert template_kind.template_path(str(TEMPLATES), "mine.py.j2", str(tmp_path)) == str(inside)


def test_a_template_cannot_reach_the_controllers_python(tmp_path):
    marker = tmp_path / "pwned"
    body = "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}\n"
    path = _template(tmp_path, "framework: keras\nhyperparameters:\n  units: {default: 8, type: int}\n", body)
    with pytest.raises(AutotuneError, match="tried an unsafe operation|does not render"):
        template_kind.render(path, {"units": 8})
    assert not marker.exists()


def test_a_configuration_value_never_becomes_code():
    injected = "0.001) or __import__('os').system('id') or (1"
    with pytest.raises(AutotuneError, match="model.baseline.learning_rate: .* expected a number, true/false or a plain word"):
        template_kind.render(CNN, _baseline(learning_rate=injected))
