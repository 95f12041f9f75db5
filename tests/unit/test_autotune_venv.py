"""roles/autotune_venv installs what our modules import on a managed host, at requirements.txt's pins, and the example
inventory runs the trainer hosts' modules in that venv. Reads files only; the role itself runs in its molecule
scenario (roles/autotune_venv/molecule/default)."""
import re

import yaml

from conftest import REPO

ROLE = REPO / "roles" / "autotune_venv"
PIN_RE = re.compile(r"(?P<name>[A-Za-z0-9][\w.-]*)(?P<extras>\[[\w,-]+\])?==(?P<version>[\w.]+)")
MODULES = ["model_facts", "tune_model", "tune_report", "trial_health", "fleet_study", "fleet_worker"]


def _pins(path):
    """name (lower case) -> 'name[extras]==version' of a pip requirements file, comments and blank lines left out."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            match = PIN_RE.fullmatch(line)
            assert match, f"{path.name}: {line!r} is not name==version"
            pins[match.group("name").lower()] = line
    return pins


def test_every_pin_of_the_role_is_requirements_txts():
    controller = _pins(REPO / "requirements.txt")
    files = sorted((ROLE / "files").glob("requirements-*.txt"))
    assert [path.name for path in files] == ["requirements-ansible.txt", "requirements-modules.txt",
                                             "requirements-trainer.txt"]
    for path in files:
        for name, pin in _pins(path).items():
            assert controller.get(name) == pin, f"{path.name}: {pin}, requirements.txt: {controller.get(name)}"


def test_the_role_installs_every_package_a_module_names_in_its_requirements():
    modules = {name.split("[")[0] for name in _pins(ROLE / "files" / "requirements-modules.txt")}
    for name in MODULES:
        text = (REPO / "library" / f"{name}.py").read_text()
        documentation = yaml.safe_load(re.search(r'DOCUMENTATION = r"""(.*?)"""', text, re.S).group(1))
        for item in documentation["requirements"]:
            for package in item.split(" (", 1)[0].split(" and "):
                assert package.lower() in modules, f"{name} needs {package}, which roles/autotune_venv does not install"
    assert _pins(ROLE / "files" / "requirements-ansible.txt").keys() == {"ansible", "ansible-core"}
    assert _pins(ROLE / "files" / "requirements-trainer.txt").keys() == {"tensorflow-cpu", "keras", "tensorboard"}


def test_the_example_trainers_run_modules_in_the_venv_the_role_makes_where_health_cron_looks():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    trainers = yaml.safe_load((REPO / "inventory" / "example" / "group_vars" / "trainers.yml").read_text())
    venv = trainers.get("autotune_venv_path", defaults["autotune_venv_path"])
    assert venv == "/opt/autotune/.venv"
    assert trainers["ansible_python_interpreter"] == "{{ autotune_venv_path }}/bin/python"
    # health_cron runs <project>/.venv/bin/ansible-playbook playbooks/health.yml in the project's checkout.
    assert f"{trainers['health_cron_project_dir']}/.venv" == venv
    assert trainers.get("autotune_venv_project_dir", defaults["autotune_venv_project_dir"]) == trainers[
        "health_cron_project_dir"]
    assert trainers["autotune_venv_project_repo"] == "{{ autotune_project_repo_url }}"


def test_the_provisioning_playbooks_make_the_venv_before_anything_else_runs_on_a_trainer():
    """With the example inventory a trainer's interpreter is the venv: the first play that reaches a trainer host
    must be the venv's, gathering no facts (the role's own tasks run on the host's Python)."""
    for name in ("site.yml", "trainer_host.yml"):
        plays = yaml.safe_load((REPO / "playbooks" / name).read_text())
        first = plays[0]
        assert [role["role"] for role in first["roles"]] == ["autotune_venv"], name
        assert first["gather_facts"] is False, name
        # Never the controller's localhost (the default inventory's trainer, or AWX's execution environment):
        # its modules run in the controller's own Python.
        assert first["hosts"].endswith(":!localhost"), name
