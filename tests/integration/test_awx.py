"""playbooks/awx.yml (AWX as code), checked offline: no AWX can be installed on the CI machine.

Syntax, every task an awx.awx module called with options that module documents, survey specs
that AWX accepts, the SMTP password injected as an environment variable only, no_log on the
task that carries it, the health schedule; and the template's own extra variables, templated by
Ansible exactly as AWX hands them to the playbook, turn survey answers into the tune variables.
"""
import json
import os
import re
import subprocess

import pytest
import yaml

from conftest import BIN, REPO

PLAYBOOK = REPO / "playbooks" / "awx.yml"
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


class _Loader(yaml.SafeLoader):
    """Reads !unsafe (and !vault) scalars as plain strings, as they appear in the file."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


@pytest.fixture(scope="module")
def play():
    return yaml.load(PLAYBOOK.read_text(), Loader=_Loader)[0]


@pytest.fixture(scope="module")
def tasks(play):
    return {task["name"]: task for task in play["tasks"]}


def module_of(task):
    """The task's module: its one fully qualified key."""
    (module,) = [key for key in task if key.count(".") >= 2]
    return module


def _env():
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1")


def test_syntax_check():
    process = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", str(PLAYBOOK)],
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stdout + process.stderr


def test_every_task_is_an_awx_module_with_documented_options(tasks):
    modules = {name: module_of(task) for name, task in tasks.items()}
    awx_modules = sorted({m for m in modules.values() if m != "ansible.builtin.assert"})
    assert all(m.startswith("awx.awx.") for m in awx_modules), awx_modules
    process = subprocess.run([str(BIN / "ansible-doc"), "-j", *awx_modules], env=_env(),
                             capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stderr
    docs = json.loads(process.stdout)
    for name, task in tasks.items():
        module = modules[name]
        if module == "ansible.builtin.assert":
            continue
        options = docs[module]["doc"]["options"]
        known = set(options) | {alias for spec in options.values() for alias in spec.get("aliases", [])}
        assert set(task[module]) <= known, f"{name}: {set(task[module]) - known}"
        for option, value in task[module].items():
            spec = options.get(option) or next(s for s in options.values() if option in s.get("aliases", []))
            if "choices" in spec and isinstance(value, str) and "{{" not in value:
                assert value in spec["choices"], f"{name}: {option}={value}"


def test_the_four_job_templates_run_playbooks_of_this_repository(tasks, play):
    templates = {task["awx.awx.job_template"]["name"]: task["awx.awx.job_template"]
                 for task in tasks.values() if "awx.awx.job_template" in task}
    names = play["vars"]["awx_template_names"]
    assert set(templates) == {"{{ awx_template_names.%s }}" % key for key in ("tune", "pipeline", "health", "site")}
    assert set(names) == {"tune", "pipeline", "health", "site"}
    playbooks = {template["playbook"] for template in templates.values()}
    assert playbooks == {"playbooks/tune.yml", "playbooks/pipeline.yml", "playbooks/health.yml", "playbooks/site.yml"}
    for playbook in playbooks:
        assert (REPO / playbook).is_file(), playbook
    for template in templates.values():
        assert template["project"] == "{{ awx_project_name }}" and template["inventory"] == "{{ awx_inventory_name }}"
    surveyed = {template["playbook"]: template["survey_spec"] for template in templates.values() if template.get("survey_enabled")}
    assert surveyed == {"playbooks/tune.yml": "{{ awx_surveys.tune }}", "playbooks/pipeline.yml": "{{ awx_surveys.pipeline }}"}


@pytest.mark.parametrize("survey", ["tune", "pipeline"])
def test_survey_specs_are_what_awx_accepts(play, survey):
    spec = json.loads(json.dumps(play["vars"]["awx_surveys"][survey]))  # JSON, as the API receives it
    assert spec["name"] and spec["description"] and spec["spec"]
    variables = []
    for question in spec["spec"]:
        assert {"question_name", "variable", "type", "required"} <= set(question), question
        assert question["type"] in SURVEY_TYPES
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", question["variable"])
        assert isinstance(question["required"], bool)
        if question["type"] in ("integer", "float", "text", "textarea"):
            assert question["min"] <= question["max"]
        if question["type"] == "text" and isinstance(question.get("default"), str) and "{{" not in question["default"]:
            assert question["min"] <= len(question["default"]) <= question["max"]
        variables.append(question["variable"])
    assert len(variables) == len(set(variables))
    if survey == "pipeline":
        # pipeline.yml's inputs, by name.
        assert variables == ["autotune_repo", "autotune_commit", "autotune_branch"]
        text = (REPO / "playbooks" / "pipeline.yml").read_text()
        assert all(variable in text for variable in variables)
    else:
        assert variables == ["autotune_config", "autotune_goal", "autotune_max_trials", "autotune_mail_to_csv"]
        goal = spec["spec"][1]
        assert goal["type"] == "float" and (goal["min"], goal["max"]) == (0, 1) and goal["required"] is False


def test_smtp_password_is_injected_as_a_file_only(tasks):
    credential_type = tasks["Create the SMTP credential type"]["awx.awx.credential_type"]
    assert credential_type["kind"] == "cloud"
    fields = {field["id"]: field for field in credential_type["inputs"]["fields"]}
    assert fields["password"].get("secret") is True
    injectors = credential_type["injectors"]
    # A file of the job holds the password; the environment names the file (ansible-runner writes the job's
    # environment, values included, into its artifacts: tests/integration/test_awx_runner.py).
    assert injectors["file"] == {"template": "{{ password | default('') }}"}
    assert injectors["env"]["AUTOTUNE_SMTP_PASSWORD_FILE"] == "{{ tower.filename }}"
    assert "password" not in json.dumps(injectors["env"]).replace("AUTOTUNE_SMTP_PASSWORD_FILE", "")
    assert "password" not in json.dumps(injectors.get("extra_vars", {}))
    # The playbooks read the password from that file (or from AUTOTUNE_SMTP_PASSWORD outside AWX).
    defaults = (REPO / "roles" / "autotune" / "defaults" / "main.yml").read_text()
    assert "lookup('ansible.builtin.file', lookup('ansible.builtin.env', 'AUTOTUNE_SMTP_PASSWORD_FILE'))" in defaults
    # The injector templates reach AWX untemplated (!unsafe in the playbook).
    raw = PLAYBOOK.read_text()
    assert re.search(r"template: !unsafe \"\{\{ password", raw)


def test_secret_bearing_tasks_have_no_log(tasks):
    # A task whose arguments template a password, token or secret variable must not log them
    # (the credential type only names the field: its injectors stay untemplated).
    bearing = []
    for name, task in tasks.items():
        module = module_of(task)
        if module == "awx.awx.credential_type":
            continue
        if re.search(r"\{\{[^}]*(password|token|secret)", json.dumps(task[module])):
            bearing.append(name)
            assert task.get("no_log") is True, name
    assert bearing == ["Create the SMTP credential"]


def test_health_template_is_scheduled_every_minute(tasks, play):
    schedule = tasks["Schedule the health template"]["awx.awx.schedule"]
    assert schedule["unified_job_template"] == "{{ awx_template_names.health }}"
    rrule = play["vars"]["awx_health_schedule_rrule"]
    assert re.fullmatch(r"DTSTART:\d{8}T\d{6}Z RRULE:FREQ=MINUTELY;INTERVAL=1", rrule)


def test_template_extra_vars_turn_survey_answers_into_tune_variables(tasks, tmp_path):
    """AWX passes the template's extra variables (Jinja allowed) with the survey answers: run them
    through Ansible as the tune job would see them, for answered and for empty surveys."""
    extra_vars = tasks["Create the tune job template"]["awx.awx.job_template"]["extra_vars"]
    cases = {
        "answered": {"autotune_goal": 0.9, "autotune_max_trials": 12, "autotune_mail_to_csv": "a@example.com, b@example.com"},
        "goal-only": {"autotune_goal": "0.95"},
        "empty": {"autotune_mail_to_csv": ""},
    }
    plays = [{"name": case, "hosts": "localhost", "gather_facts": False, "vars": {**answers, **extra_vars},
              "tasks": [{"name": "Show", "ansible.builtin.debug": {
                  "msg": {"overrides": "{{ autotune_overrides }}", "mail_to": "{{ autotune_mail_to }}"}}}]}
             for case, answers in cases.items()]
    playbook = tmp_path / "extra_vars.yml"
    playbook.write_text(yaml.safe_dump(plays))
    env = dict(_env(), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    process = subprocess.run([str(BIN / "ansible-playbook"), str(playbook)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-2000:]
    seen = {p["play"]["name"]: p["tasks"][0]["hosts"]["localhost"]["msg"] for p in json.loads(process.stdout)["plays"]}
    assert seen["answered"] == {"overrides": {"target": {"goal": 0.9}, "budget": {"max_trials": 12}},
                                "mail_to": ["a@example.com", "b@example.com"]}
    assert seen["goal-only"] == {"overrides": {"target": {"goal": 0.95}}, "mail_to": []}
    assert seen["empty"] == {"overrides": {}, "mail_to": []}


def test_required_settings_are_checked_before_anything_talks_to_awx(play):
    assert module_of(play["tasks"][0]) == "ansible.builtin.assert"
    process = subprocess.run([str(BIN / "ansible-playbook"), str(PLAYBOOK)], cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode != 0
    assert "awx_project_scm_url" in process.stdout
