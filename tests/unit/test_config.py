"""Validation of the tune configuration, the model and the data set: one line per wrong field."""
import os
import shutil

import pytest
from PIL import Image

from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune.errors import AutotuneError, ConfigError
from ansible.module_utils.autotune.tune import prepare
from conftest import TEMPLATES, write_config


def _error(tmp_path, **sections):
    path = write_config(tmp_path, **sections)
    with pytest.raises(AutotuneError) as caught:
        prepare(str(path), str(TEMPLATES))
    return caught.value


def test_valid_sample_config_loads(tmp_path, sample_data):
    config, plan, run_dir, storage = prepare(str(write_config(tmp_path)), str(TEMPLATES), runs_root=str(tmp_path))
    assert config["target"]["goal"] == 0.8
    assert plan["baseline"]["filters"] == 4 and plan["api"] == "template"
    assert set(plan["space"]) == {"blocks", "filters", "kernel_size", "dense_units", "learning_rate", "epochs"}
    assert run_dir == str(tmp_path / "catsdogs")
    assert storage == f"sqlite:///{tmp_path / 'catsdogs' / 'study.db'}"


def test_wrong_types_name_field_value_and_expectation(tmp_path, sample_data):
    error = _error(tmp_path, budget={"max_trials": "ten"}, dataset={"image_size": "28x28"})
    assert isinstance(error, ConfigError)
    assert "budget.max_trials: 'ten' is invalid; expected an integer >= 1" in error.details
    assert any(line.startswith("dataset.image_size: '28x28' is invalid; expected [height, width]") for line in error.details)
    assert len(error.details) == 2


@pytest.mark.parametrize("goal", [1.5, -0.1])
def test_goal_outside_zero_one(tmp_path, sample_data, goal):
    error = _error(tmp_path, target={"goal": goal})
    assert error.details == [f"target.goal: {goal!r} is invalid; expected a number between 0 and 1"]


@pytest.mark.parametrize("target, direction", [
    ({}, "maximize"),
    ({"metric": "val_loss", "goal": 0.4}, "minimize"),
    ({"metric": "val_sparse_categorical_crossentropy_loss", "goal": 0.4}, "minimize"),
    ({"metric": "val_auc", "goal": 0.9}, "maximize"),
    ({"metric": "val_mean_absolute_error", "goal": 3}, "maximize"),  # not a loss by name: say so with direction
    ({"metric": "val_mean_absolute_error", "goal": 3, "direction": "minimize"}, "minimize"),
])
def test_direction_is_inferred_from_the_metric_unless_given(tmp_path, sample_data, target, direction):
    config = tune_config.load(str(write_config(tmp_path, target=target)))
    assert config["target"]["direction"] == direction


@pytest.mark.parametrize("target, line", [
    ({"metric": "accuracy"}, "target.metric: 'accuracy' is invalid; expected a metric the model logs on validation "
                             "data: val_ and a name, e.g. val_accuracy, val_loss, val_auc"),
    ({"metric": "val_auc\n", "goal": 0.9}, "target.metric: 'val_auc\\n' is invalid; expected a metric the model logs "
                                            "on validation data: val_ and a name, e.g. val_accuracy, val_loss, val_auc"),
    ({"metric": "val_loss", "direction": "down", "goal": 0.3},
     "target.direction: 'down' is invalid; expected one of maximize, minimize"),
    ({"metric": "val_auc", "goal": 1.2}, "target.goal: 1.2 is invalid; expected a number between 0 and 1"),
])
def test_a_wrong_metric_direction_or_goal_is_one_line(tmp_path, sample_data, target, line):
    path = write_config(tmp_path, target=target)
    with pytest.raises(ConfigError) as caught:
        tune_config.load(str(path))
    assert caught.value.details == [line]


def test_a_metric_other_than_the_default_needs_its_own_goal(tmp_path, sample_data):
    with pytest.raises(ConfigError) as caught:
        tune_config.validate({"dataset": {"path": str(sample_data)}, "target": {"metric": "val_loss"}}, str(tmp_path))
    assert caught.value.details == ["target.goal: missing; expected the value of val_loss to reach (the default 0.8 "
                                    "is val_accuracy's)"]


def test_a_loss_goal_may_be_above_one(tmp_path, sample_data):
    config = tune_config.load(str(write_config(tmp_path, target={"metric": "val_loss", "goal": 1.5})))
    assert (config["target"]["goal"], config["target"]["direction"]) == (1.5, "minimize")


def test_unknown_strategy_and_unknown_field(tmp_path, sample_data):
    error = _error(tmp_path, search={"strategy": "genetic", "stratgy": "tpe"})
    assert "search.strategy: 'genetic' is invalid; expected one of tpe, random, escalate" in error.details
    assert any(line.startswith("search.stratgy: unknown field; expected one of strategy,") for line in error.details)


def test_empty_search_space(tmp_path, sample_data):
    error = _error(tmp_path, search={"space": {}})
    assert any(line.startswith("search.space: {} is invalid; expected at least one hyperparameter") for line in error.details)


def test_search_space_name_not_in_model_and_inverted_range(tmp_path, sample_data):
    error = _error(tmp_path, search={"space": {"wings": {"type": "int", "low": 1, "high": 2},
                                               "blocks": {"type": "int", "low": 3, "high": 1}}})
    assert "search.space.blocks: low 3 > high 1; expected low <= high" in error.details


def test_space_name_the_model_lacks(tmp_path, sample_data):
    error = _error(tmp_path, search={"space": {"wings": {"type": "int", "low": 1, "high": 2}}})
    assert str(error).startswith("search.space.wings: not a hyperparameter of the model; expected one of [")


def test_missing_dataset(tmp_path, sample_data):
    error = _error(tmp_path, dataset={"path": str(tmp_path / "nowhere")})
    assert error.details == [f"dataset.path: '{tmp_path / 'nowhere'}' does not exist; expected a folder of class sub-folders of images"]


def _image_folder(root, classes):
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (10, 12), color=i * 20).save(root / name / f"{i}.png")
    return root


def test_dataset_with_one_class(tmp_path, sample_data):
    data = _image_folder(tmp_path / "data", {"cat": 3})
    error = _error(tmp_path, dataset={"path": str(data)})
    assert "has 1 class folder(s); expected at least 2 sub-folders, one per class" in str(error)


def test_empty_class_folder(tmp_path, sample_data):
    data = _image_folder(tmp_path / "data", {"cat": 3, "dog": 0})
    error = _error(tmp_path, dataset={"path": str(data)})
    assert "1 of 2 class folders in" in str(error) and "hold no PNG/JPEG images" in str(error)


def test_a_system_folder_is_refused_without_listing_what_it_holds(tmp_path):
    with pytest.raises(AutotuneError) as error:
        tune_dataset.scan("/etc")
    assert "class folders in '/etc' hold no PNG/JPEG images" in str(error.value)
    assert "ssl" not in str(error.value) and "apt" not in str(error.value)


def test_links_out_of_the_data_set_are_refused(tmp_path):
    outside = _image_folder(tmp_path / "elsewhere", {"private": 2})
    data = _image_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    os.symlink(outside / "private", data / "private")
    with pytest.raises(AutotuneError, match="class folder 'private' is a link out of"):
        tune_dataset.scan(str(data))
    os.unlink(data / "private")
    os.symlink(next((outside / "private").iterdir()), data / "cat" / "stolen.png")
    with pytest.raises(AutotuneError, match=r"1 image\(s\) of class 'cat' link out of"):
        tune_dataset.scan(str(data))


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    # Pillow's guard, scaled down so the test need not write a 200-megapixel file: over twice the limit is an error.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = _image_folder(tmp_path / "data", {"cat": 3, "dog": 3})
    Image.new("L", (100, 100)).save(data / "cat" / "bomb.png")
    with pytest.raises(AutotuneError, match="decodes to more than .* pixels .*expected an ordinary photo"):
        tune_dataset.prepare({"path": str(data), "image_size": [28, 28], "color": "grayscale",
                              "validation_split": 0.2, "test_split": 0.15, "seed": 1}, str(tmp_path / "cache"))


def test_corrupt_image_is_named(tmp_path):
    data = _image_folder(tmp_path / "data", {"cat": 3, "dog": 3})
    (data / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(AutotuneError) as caught:
        tune_dataset.prepare({"path": str(data), "image_size": [8, 8], "color": "grayscale",
                              "validation_split": 0.3, "test_split": 0.15, "seed": 1}, str(tmp_path / "cache"))
    assert "broken.png" in str(caught.value) and "expected a valid PNG or JPEG" in str(caught.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_template_that_does_not_render(tmp_path, sample_data):
    broken = tmp_path / "broken.py.j2"
    broken.write_text("x = {{ hp.no_such_hyperparameter }}\n")
    shutil.copy(TEMPLATES / "cnn.yml", tmp_path / "broken.yml")
    error = _error(tmp_path, model={"template": str(broken), "baseline": {}})
    assert "does not render" in str(error) and "no_such_hyperparameter" in str(error)


def test_template_that_renders_invalid_python(tmp_path, sample_data):
    broken = tmp_path / "bad.py.j2"
    broken.write_text("def build_model(:\n    {{ hp.blocks }}\n")
    shutil.copy(TEMPLATES / "cnn.yml", tmp_path / "bad.yml")
    error = _error(tmp_path, model={"template": str(broken), "baseline": {}})
    assert "renders invalid Python at line 1" in str(error)


def test_baseline_outside_its_range(tmp_path, sample_data):
    error = _error(tmp_path, model={"template": "cnn", "baseline": {"filters": 512}})
    assert "search.space.filters: baseline value 512 is outside" in str(error)


def test_template_and_file_are_exclusive(tmp_path, sample_data):
    error = _error(tmp_path, model={"template": "cnn", "file": "model.py"})
    assert "expected exactly one of 'template' or 'file'" in str(error)


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        tune_config.load(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="holds list; expected a YAML mapping"):
        tune_config.load(str(bad))


def test_a_pushed_configuration_cannot_choose_operator_settings(tmp_path, sample_data):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "model.py").write_text("import keras\n\ndef build_model(hp):\n    return hp.Int('units', 8, 32)\n")
    document = {"dataset": {"path": str(sample_data)}, "model": {"file": "model.py"}, "run_dir": "/etc",
                "storage": "postgresql://attacker@evil/db", "runner": {"kind": "local"}}
    config = tune_config.validate(document, base_dir=str(checkout), pushed=True, data_roots=[str(sample_data.parent)],
                                  overrides={"runner": {"kind": "docker"}})
    assert config["ignored_fields"] == ["run_dir", "runner", "storage"]
    assert "run_dir" not in config and "storage" not in config and config["runner"]["kind"] == "docker"


def test_a_pushed_configuration_keeps_its_files_in_the_checkout_and_data_roots(tmp_path, sample_data):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    document = {"dataset": {"path": str(sample_data)}, "model": {"file": "/etc/passwd"}}
    with pytest.raises(ConfigError) as error:  # the pipeline's runner (autotune_pipeline_runner)
        tune_config.validate(document, base_dir=str(checkout), pushed=True, overrides={"runner": {"kind": "docker"}})
    assert error.value.details == [
        "model.file: '/etc/passwd' is outside the pushed repository; expected a file of the checkout",
        f"dataset.path: '{sample_data}' is outside the checkout and the operator's data roots (none set); "
        "expected a data set the operator allows",
    ]


def test_a_run_folder_belongs_to_one_study(tmp_path, sample_data):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / ".study").write_text("other-study")
    config_path = write_config(tmp_path, run_dir=str(shared))
    with pytest.raises(AutotuneError, match="run_dir: .* holds study 'other-study', not 'catsdogs'; expected one run folder"):
        prepare(str(config_path), str(TEMPLATES))


def test_a_binary_model_file_is_one_line(tmp_path, sample_data):
    (tmp_path / "model.py").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    config_path = write_config(tmp_path, model={"file": str(tmp_path / "model.py")})
    with pytest.raises(AutotuneError, match="model.file: .* is not UTF-8 text; expected a Python file"):
        prepare(str(config_path), str(TEMPLATES))


def _patterns(schema):
    if isinstance(schema, dict):
        yield from ([schema["pattern"]] if isinstance(schema.get("pattern"), str) else [])
        for value in schema.values():
            yield from _patterns(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _patterns(value)


def test_every_schema_pattern_matches_the_whole_string():
    """jsonschema searches with Python's re: '$' also matches before a trailing newline, '\\Z' does not."""
    patterns = list(_patterns(tune_config.SCHEMA))
    assert len(patterns) >= 4  # study, notify.to, notify.sender, runner.docker.memory
    assert all(p.startswith("\\A") and p.endswith("\\Z") for p in patterns), patterns


@pytest.mark.parametrize("document, field", [
    ({"study": "evil\n"}, "study"),
    ({"notify": {"sender": "a@b\n"}}, "notify.sender"),
    ({"notify": {"sender": "a@b\r\nBcc: c@d"}}, "notify.sender"),
    ({"notify": {"to": ["a@b\n"]}}, "notify.to.0"),
    ({"notify": {"to": ["a\x1b[2J@b"]}}, "notify.to.0"),
    ({"notify": {"sender": "<a@b>"}}, "notify.sender"),  # the pattern lets it through; a mail header cannot hold it
    ({"runner": {"kind": "docker", "docker": {"memory": "2g\n"}}}, "runner.docker.memory"),
])
def test_a_trailing_newline_or_a_control_character_fails_the_schema(tmp_path, sample_data, document, field):
    """Row 9: `study: "evil\\n"` and `"a@b\\n"` passed the schema and ended the .eml header block."""
    with pytest.raises(ConfigError) as caught:
        tune_config.validate(dict(document, dataset={"path": str(sample_data)}), base_dir=str(tmp_path))
    assert [line.split(":")[0] for line in caught.value.details] == [field]
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_a_key_given_twice_is_an_error_naming_it(tmp_path, sample_data):
    path = tmp_path / "autotune.yml"
    path.write_text(f"dataset: {{path: {sample_data}}}\ntarget:\n  goal: 0.95\n  metric: val_accuracy\n  goal: 0.5\n")
    with pytest.raises(ConfigError) as caught:
        tune_config.load(str(path))
    assert str(caught.value) == (f"tune configuration {path}: key 'goal' is given twice (lines 3 and 5); "
                                 "expected each key once per mapping")


def test_a_merge_key_may_be_overridden(tmp_path, sample_data):
    path = tmp_path / "autotune.yml"
    path.write_text(f"dataset: {{path: {sample_data}}}\nbudget: &b {{max_trials: 3}}\n"
                    "notify: {to: [a@b.c]}\ntarget:\n  <<: {goal: 0.5}\n  goal: 0.9\n")
    assert tune_config.load(str(path))["target"]["goal"] == 0.9


@pytest.mark.parametrize("size", [[1, 1], [0, 5000], [28.5, 28], [28, 28, 3], [28]])
def test_an_image_size_error_is_one_line_in_our_words(tmp_path, sample_data, size):
    error = _error(tmp_path, dataset={"image_size": size})
    assert error.details == [f"dataset.image_size: {size!r} is invalid; expected [height, width]: two whole numbers "
                             "of pixels, each from 4 to 4096"]


def test_a_dataset_path_that_is_a_file_says_so(tmp_path):
    image = tmp_path / "cat.png"
    Image.new("L", (8, 8)).save(image)
    error = _error(tmp_path, dataset={"path": str(image)})
    assert error.details == [f"dataset.path: '{image}' is a file; expected a folder of class sub-folders of images"]
