"""Unit tests of the Ansible modules, run in-process: exit_json/fail_json patched to raise,
arguments fed with ansible.module_utils.testing.patch_module_args (ansible-core 2.19)."""
import json
import shutil

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

import model_facts
import tune_model
import tune_report
from conftest import TEMPLATES, write_config
from modules_support import ModuleExit, raise_on_exit, run_module as _run


@pytest.fixture(autouse=True)
def _raise_on_exit(monkeypatch):
    raise_on_exit(monkeypatch)


def test_model_facts_reports_the_sample_cnn(tmp_path, sample_data):
    outcome = _run(model_facts, {"config": str(write_config(tmp_path)), "templates_dir": str(TEMPLATES)})
    assert not outcome.failed and outcome.result["changed"] is False
    assert outcome.result["framework"] == "keras" and outcome.result["kind"] == "cnn"
    assert outcome.result["api"] == "template"
    # The template scales its own 0..255 input first, as user models do (docs/configuration.md).
    assert outcome.result["layers"][:2] == ["Rescaling(1.0 / 255)", "Conv2D(4, kernel_size=3, padding='same')"]
    assert outcome.result["hyperparameters"]["epochs"] == 1


def test_model_facts_refuses_pytorch_with_supported_list(tmp_path, sample_data):
    model = tmp_path / "net.py"
    model.write_text("import torch\n\ndef build_model(hp):\n    return torch.nn.Linear(4, 2)\n")
    config = write_config(tmp_path, model={"file": str(model)})
    outcome = _run(model_facts, {"config": str(config), "templates_dir": str(TEMPLATES)})
    assert outcome.failed
    assert "uses pytorch; supported: keras" in outcome.result["msg"]
    assert "\n" not in outcome.result["msg"]


def test_model_facts_applies_overrides(tmp_path, sample_data):
    outcome = _run(model_facts, {"config": str(write_config(tmp_path)), "templates_dir": str(TEMPLATES),
                                 "overrides": {"target": {"goal": 2}}})
    assert outcome.failed and outcome.result["errors"] == ["target.goal: 2 is invalid; expected a number between 0 and 1"]


def test_tune_model_check_mode_validates_and_writes_nothing(tmp_path, sample_data):
    outcome = _run(tune_model, {"config": str(write_config(tmp_path)), "templates_dir": str(TEMPLATES),
                                "runs_root": str(tmp_path / "runs")}, check_mode=True)
    assert not outcome.failed and outcome.result["run_dir"] == str(tmp_path / "runs" / "catsdogs")
    assert not (tmp_path / "runs").exists()


def test_tune_model_fails_on_bad_config_with_every_field(tmp_path, sample_data):
    config = write_config(tmp_path, budget={"max_trials": 0, "trial_timeout": "slow"})
    outcome = _run(tune_model, {"config": str(config), "templates_dir": str(TEMPLATES)})
    assert outcome.failed and len(outcome.result["errors"]) == 2
    assert not (tmp_path / "runs").exists()


def test_tune_report_needs_a_run_directory(tmp_path):
    outcome = _run(tune_report, {"run_dir": str(tmp_path)})
    assert outcome.failed and "expected a run directory written by tune_model" in outcome.result["msg"]


def test_documented_options_match_each_modules_argument_spec():
    """DOCUMENTATION (with its doc fragment) and argument_spec say the same, as ansible-test's validate-modules asks."""
    import subprocess  # pylint: disable=import-outside-toplevel

    from conftest import BIN, REPO  # pylint: disable=import-outside-toplevel
    names = ["model_facts", "tune_model", "tune_report", "trial_health", "fleet_study", "fleet_worker",
             "reproduce_trial"]
    shown = subprocess.run([str(BIN / "ansible-doc"), "--json", "-t", "module", *names], cwd=REPO, check=True,
                           capture_output=True, text=True, env={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                                                                "PATH": f"{BIN}:/usr/bin:/bin"})
    docs = json.loads(shown.stdout)
    captured = {}
    for name in names:
        module = __import__(name)
        original = basic.AnsibleModule.__init__

        def spy(self, argument_spec, *args, _name=name, **kwargs):
            captured[_name] = argument_spec
            raise ModuleExit({}, failed=False)

        basic.AnsibleModule.__init__ = spy
        try:
            with patch_module_args({}), pytest.raises(ModuleExit):
                module.main()
        finally:
            basic.AnsibleModule.__init__ = original
        documented = docs[name]["doc"]["options"]
        assert set(documented) == set(captured[name]), name
        for option, spec in captured[name].items():
            assert documented[option].get("type", "str") == spec.get("type", "str"), (name, option)
            assert documented[option].get("default") == spec.get("default"), (name, option)
    assert docs["model_facts"]["doc"]["options"]["config"]["required"] is True


def test_each_module_names_the_python_packages_it_needs_and_they_are_pinned():
    """requirements: items read "<package> [and <package>] (why; see <pin file>)"; each package is pinned there."""
    import re  # pylint: disable=import-outside-toplevel

    import yaml  # pylint: disable=import-outside-toplevel

    from conftest import REPO  # pylint: disable=import-outside-toplevel

    def pinned(pin_file):
        lines = (REPO / pin_file).read_text().splitlines()
        return {re.split(r"[=<>\[ ]", line, maxsplit=1)[0].lower() for line in lines if line and line[0].isalpha()}

    for name in ["model_facts", "tune_model", "tune_report", "trial_health", "fleet_study", "fleet_worker",
                 "reproduce_trial"]:
        requirements = yaml.safe_load(__import__(name).DOCUMENTATION).get("requirements")
        assert requirements, f"{name} names no requirements"
        for item in requirements:
            match = re.fullmatch(r"(.+?) \(.+; see (requirements[\w-]*\.txt)\)", item)
            assert match, (name, item)
            packages, pin_file = match.group(1).split(" and "), match.group(2)
            assert {package.lower() for package in packages} <= pinned(pin_file), (name, item)
    assert "docker (" in " ".join(yaml.safe_load(__import__("trial_health").DOCUMENTATION)["requirements"])


def test_failure_report_reads_recipients_from_an_invalid_config_and_check_mode_writes_nothing(tmp_path):
    config = tmp_path / "autotune.yml"
    config.write_text("target: {goal: 1.5}\nnotify: {to: team@example.com, sender: ci@example.com}\n")
    run_dir = tmp_path / "runs" / "model-abc1234"
    args = {"run_dir": str(run_dir), "failure": "autotune.yml is invalid: target.goal: 1.5 is invalid",
            "step": "Detect the model", "config": str(config), "write_eml": True, "context": {"commit": "abc1234"}}
    checked = _run(tune_report, args, check_mode=True)
    assert not checked.failed and not run_dir.exists()
    done = _run(tune_report, args).result
    assert done["recipients"] == ["team@example.com"] and done["sender"] == "ci@example.com"
    assert done["subject"] == ("[autotune] model-abc1234: FAILED before tuning at 'Detect the model': "
                               "autotune.yml is invalid: target.goal: 1.5 is invalid")
    assert sorted(p.name for p in run_dir.iterdir()) == ["failure.eml", "failure.txt"]
    config.write_text("notify: [unclosed\n")
    assert _run(tune_report, dict(args, write_eml=False)).result["recipients"] == []


def test_fleet_study_check_mode_validates_and_writes_nothing(tmp_path, sample_data):
    import fleet_study  # pylint: disable=import-outside-toplevel
    outcome = _run(fleet_study, {"config": str(write_config(tmp_path)), "templates_dir": str(TEMPLATES),
                                 "runs_root": str(tmp_path / "runs"), "storage": "postgresql://u:secret@127.0.0.1:1/x"},
                   check_mode=True)
    assert not outcome.failed and outcome.result["run_dir"] == str(tmp_path / "runs" / "catsdogs")
    assert not (tmp_path / "runs").exists() and "secret" not in json.dumps(outcome.result)


def test_fleet_study_refuses_a_file_storage_in_one_line(tmp_path, sample_data):
    import fleet_study  # pylint: disable=import-outside-toplevel
    outcome = _run(fleet_study, {"config": str(write_config(tmp_path)), "templates_dir": str(TEMPLATES),
                                 "runs_root": str(tmp_path / "runs"), "storage": f"sqlite:///{tmp_path}/s.db"})
    assert outcome.failed and "expected a database server URL" in outcome.result["msg"]
    assert "\n" not in outcome.result["msg"]


def test_fleet_worker_refuses_zero_slots_in_one_line(tmp_path):
    import fleet_worker  # pylint: disable=import-outside-toplevel
    outcome = _run(fleet_worker, {"config": str(tmp_path / "a.yml"), "templates_dir": str(TEMPLATES),
                                  "storage": "postgresql://u:p@h/d", "dataset": str(tmp_path), "fingerprint": "x",
                                  "worker": "h1", "slots": 0})
    assert outcome.failed and outcome.result["msg"] == "slots: 0 is invalid; expected an integer >= 1"


@pytest.mark.parametrize("storage, named", [("mongodb://u:secret@db.example.com:27017/x", "'mongodb'"),
                                            ("postgresql://u:secret@127.0.0.1:1/x", "at 127.0.0.1:1 (")])
def test_a_storage_that_cannot_work_fails_tune_model_in_one_line_before_anything_is_made(tmp_path, sample_data,
                                                                                       storage, named):
    """Issue 20: these ended in "Module failed: ..." with the library's text twice and no word of storage, after
    the run folder, the pack and a warm spare were made."""
    runs = tmp_path / "runs"
    outcome = _run(tune_model, {"config": str(write_config(tmp_path)), "templates_dir": str(TEMPLATES),
                                "runs_root": str(runs), "storage": storage})
    assert outcome.failed and outcome.result["msg"].startswith("storage: ") and named in outcome.result["msg"]
    assert "\n" not in outcome.result["msg"] and "secret" not in json.dumps(outcome.result)
    assert not runs.exists(), "no run folder, no pack, no spare"


def test_model_facts_gives_each_warning_of_the_facts_step_once(tmp_path, sample_data, monkeypatch):
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, line: warned.append(line))
    data = tmp_path / "data"
    shutil.copytree(sample_data, data)
    (data / "cat" / "labels.csv").write_text("name,label\n")
    outcome = _run(model_facts, {"config": str(write_config(tmp_path, dataset={"path": str(data)})),
                                 "templates_dir": str(TEMPLATES)})
    assert not outcome.failed
    assert warned == ["dataset.path: skipped 1 entry of the class folders that is not .png/.jpg/.jpeg files "
                      "('cat/labels.csv')"]
