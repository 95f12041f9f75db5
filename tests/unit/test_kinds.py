"""The model-kind registries (module_utils/autotune/kinds/ and trainer/autotune_trainer/kinds/): each kind is
detected from its example and plans its trial code, an unknown kind is one line naming the known ones, and the
two sides name the same kinds. No training: the trainer side is checked up to its refusal."""
import json
import subprocess
import sys

import pytest

from ansible.module_utils.autotune import kinds, modelcode
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.kinds.base import ModelKind
from ansible.module_utils.autotune.tune import prepare
from autotune_trainer import kinds as trainer_kinds
from autotune_trainer.kinds.base import ModelTrial
from conftest import REPO, TEMPLATES, write_config

EXAMPLES = {  # the configuration's model section -> the kind it is
    "template": {"template": "cnn"},
    "keras_tuner": {"file": str(REPO / "tests" / "fixtures" / "keras_tuner" / "categorical.py")},
    "script": {"file": str(REPO / "examples" / "catsdogs_script")},  # a folder: its one Keras script
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_kind_is_detected_from_its_example(name):
    kind, model_file = kinds.detect(EXAMPLES[name])
    assert kind.name == name and kinds.KINDS[name] is kind
    assert (model_file is None) == (name == "template"), "a user's file is read once, a template not at all"


def test_a_script_is_found_in_its_folder_and_read_once():
    _, model_file = kinds.detect(EXAMPLES["script"])
    assert model_file.path == str(REPO / "examples" / "catsdogs_script" / "train.py")
    assert model_file.source == (REPO / "examples" / "catsdogs_script" / "train.py").read_text()
    assert model_file.facts["build_model_args"] is None


def _config(tmp_path, name):
    if name == "script":
        return str(REPO / "examples" / "catsdogs_script" / "autotune.yml")
    if name == "template":
        return str(write_config(tmp_path))
    path = write_config(tmp_path, model=EXAMPLES[name], search={"space": None, "ladder": None})
    path.write_text(path.read_text().replace("  space: null\n", "").replace("  ladder: null\n", ""))  # the file's own
    return str(path)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_kind_plans_its_example_and_writes_trial_code(tmp_path, sample_data, name):
    _, plan, _, _ = prepare(_config(tmp_path, name), str(TEMPLATES), runs_root=str(tmp_path / "runs"),
                            connect_storage=False)
    assert plan["api"] == name and kinds.kind_of(plan) is kinds.KINDS[name]
    assert plan["space"] and set(plan["space"]) <= set(plan["baseline"]) and plan["facts"]["framework"] == "keras"
    code = modelcode.code_for(plan, plan["baseline"], 0)
    compile(code, "model.py", "exec")
    if name == "keras_tuner":
        assert code == plan["source"], "a build_model(hp) file trains as it is"


@pytest.mark.parametrize("name", ["sklearn", "", None, "Template"])
def test_an_unknown_kind_is_one_line_naming_the_known_ones(name):
    with pytest.raises(AutotuneError) as caught:
        kinds.kind_of({"api": name})
    assert str(caught.value) == f"model kind: {name!r} is unknown; expected one of template, keras_tuner, script"
    with pytest.raises(AutotuneError, match=r"^model kind: 'sklearn' is unknown; expected one of template, "):
        modelcode.code_for({"api": "sklearn", "source": "import keras\n"}, {}, 1)


def test_the_trainer_knows_the_same_kinds_as_the_controller():
    assert list(trainer_kinds.KINDS) == list(kinds.KINDS)
    for name, kind in kinds.KINDS.items():
        assert isinstance(kind, ModelKind) and type(kind).detects is not ModelKind.detects
        assert type(kind).plan is not ModelKind.plan and type(kind).code is not ModelKind.code
        trial = trainer_kinds.KINDS[name]
        assert issubclass(trial, ModelTrial) and (trial.build is not ModelTrial.build or trial.fit is not ModelTrial.fit)


def test_the_trainer_refuses_an_unknown_kind_in_one_line_before_importing_keras(tmp_path):
    (tmp_path / "trial.json").write_text(json.dumps({"number": 0, "params": {}, "model_api": "sklearn", "seed": 1}))
    data = tmp_path / "pack"
    data.mkdir()
    code = ("import sys\nfrom autotune_trainer.__main__ import main\nrc = main(sys.argv[1:])\n"
            "assert 'keras' not in sys.modules, 'refused before the heavy imports'\nsys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), "--data", str(data)], capture_output=True,
                          text=True, cwd=REPO / "trainer", timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("autotune_trainer: trial.json: model_api 'sklearn' is unknown; expected one of template, "
                           "keras_tuner, script\n")
    assert not (tmp_path / "result.json").exists()
