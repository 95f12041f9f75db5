"""Every role describes itself in meta/argument_specs.yml, and Ansible holds it to that description.

The specs declare each variable of the role's defaults/main.yml (with the same default where one is given), the
variables an entry point reads without a default, and an entry point for each tasks_from the playbooks use. Ansible
checks the variables against them before the role's first task: a wrong type fails in one line naming it.
"""
import os
import subprocess

import pytest
import yaml

from conftest import BIN, REPO

ROLES = sorted(path.name for path in (REPO / "roles").iterdir() if (path / "tasks" / "main.yml").is_file())
TYPES = {"str", "int", "float", "bool", "list", "dict", "path", "raw"}


class _PlaybookLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """Reads playbooks with Ansible's own tags (!unsafe, !vault) as plain strings."""


_PlaybookLoader.add_multi_constructor("!", lambda loader, _tag, node: loader.construct_scalar(node))


def _specs(role):
    return yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def _defaults(role):
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}


def _options(specs):
    """(entry point, name, spec) of every option, suboptions included."""
    def walk(entry, options, prefix=""):
        for name, spec in options.items():
            yield entry, prefix + name, spec
            yield from walk(entry, spec.get("options", {}), f"{prefix}{name}.")
    for entry, spec in specs.items():
        yield from walk(entry, spec.get("options", {}))


@pytest.mark.parametrize("role", ROLES)
def test_main_entry_point_declares_every_default_with_the_same_value(role):
    main = _specs(role)["main"]["options"]
    defaults = _defaults(role)
    assert sorted(set(defaults) - set(main)) == [], f"{role}: variables of defaults/main.yml missing from the spec"
    for name, spec in main.items():
        if "default" in spec:
            assert name in defaults, f"{role}: {name} has a default in the spec but none in defaults/main.yml"
            assert spec["default"] == defaults[name], f"{role}: {name}'s default differs from defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_every_entry_point_and_option_is_described_and_typed(role):
    specs = _specs(role)
    defaults = _defaults(role)
    for entry, spec in specs.items():
        assert entry == "main" or (REPO / "roles" / role / "tasks" / entry).is_file(), f"{role}: no tasks/{entry}"
        for field in ("short_description", "description"):
            assert isinstance(spec.get(field), str) and "\n" not in spec[field].strip(), (role, entry, field)
    for entry, name, spec in _options(specs):
        where = f"{role} {entry} {name}"
        assert isinstance(spec.get("description"), str) and spec["description"].strip(), where
        assert spec.get("type") in TYPES, where
        assert spec["type"] != "list" or spec.get("elements") in TYPES, f"{where}: a list names its elements"
        # Secrets are described, never given a value here; a variable with a default cannot be required.
        assert not (spec.get("no_log") and "default" in spec), f"{where}: a secret has no default in the spec"
        assert not (spec.get("required") and ("default" in spec or name in defaults)), where
        # An option an entry point shares with main is the same option (the files use YAML anchors).
        if entry != "main" and name in specs["main"]["options"]:
            assert spec == specs["main"]["options"][name], where


def _role_calls(node):
    """(role, tasks_from) of every include_role and import_role in a parsed playbook."""
    if isinstance(node, list):
        for item in node:
            yield from _role_calls(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key.split(".")[-1] in ("include_role", "import_role") and isinstance(value, dict):
                yield value["name"], value.get("tasks_from", "main")
            else:
                yield from _role_calls(value)


def test_every_tasks_from_of_the_playbooks_has_an_entry_point():
    """Ansible picks the entry point by the exact tasks_from string; one without a spec would skip the check."""
    seen = set()
    for playbook in sorted((REPO / "playbooks").glob("*.yml")):
        for role, entry in _role_calls(yaml.load(playbook.read_text(), Loader=_PlaybookLoader)):
            if "{{" not in entry:  # fleet.yml's loop over result.yml and notify.yml
                seen.add((role, entry))
                assert entry in _specs(role), f"{playbook.name}: {role} tasks_from {entry} has no entry point"
    assert {("autotune", "facts.yml"), ("docker", "start.yml"), ("trainer_image", "worker.yml")} <= seen


def _dashboard(tmp_path, *args):
    """ansible-playbook of the dashboard role alone on localhost, with the given arguments."""
    playbook = tmp_path / "check.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Check the dashboard role's arguments", "hosts": "localhost",
                                         "connection": "local", "gather_facts": False,
                                         "roles": [{"role": "dashboard"}]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run([str(BIN / "ansible-playbook"), str(playbook), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_wrong_type_fails_at_the_roles_start_in_one_line(tmp_path):
    # Check mode, and values the role's own settings check refuses too: should Ansible's check ever let them
    # through, the role would stop after gathering facts, changing nothing (and this test would fail).
    failed = _dashboard(tmp_path, "--check", "-e", "dashboard_port=not-a-port",
                        "-e", "dashboard_service_mode=sometimes")
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    lines = output.splitlines()
    assert ("argument 'dashboard_port' is of type str and we were unable to convert to int: "
            "\"'not-a-port'\" cannot be converted to an int") in lines
    assert "value of dashboard_service_mode must be one of: auto, systemd, direct, got: sometimes" in lines
    # The check is the role's first task and it stopped the play: none of the role's own tasks started.
    tasks = [line for line in lines if line.startswith("TASK [")]
    assert len(tasks) == 1 and tasks[0].startswith("TASK [dashboard : Validating arguments against arg spec 'main'")
    assert "ok=0" in output and "failed=1" in output


def test_values_given_as_strings_on_the_command_line_pass(tmp_path):
    # -e key=value gives strings: the int, bool and list options take them, as module options do. Only the tasks
    # tagged always run (Ansible's argument check is one): none of the role's own.
    passed = _dashboard(tmp_path, "--tags", "argument-check", "-e", "dashboard_port=8081",
                        "-e", "dashboard_read_only=false", "-e", "dashboard_packages=optuna-dashboard==0.21.0")
    assert passed.returncode == 0, passed.stdout[-2000:] + passed.stderr[-2000:]
    assert "ok=1" in passed.stdout and "failed=0" in passed.stdout
