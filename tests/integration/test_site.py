"""playbooks/site.yml and the inventories: the default single-machine inventory keeps `make run`
working, the example multi-host inventory has the five groups, documented variables and vaulted
secrets that open with the documented example password."""
import json
import os
import re
import subprocess

import pytest
import yaml

from conftest import BIN, REPO

EXAMPLE = REPO / "inventory" / "example"
EXAMPLE_VAULT_PASSWORD = "autotune-example-only"  # documented in group_vars/all/vault.yml: example only
ROLE_PREFIXES = {"autotune_venv_": "autotune_venv", "jenkins_": "jenkins", "nvidia_": "nvidia", "docker_": "docker",
                 "trainer_image_": "trainer_image", "health_cron_": "health_cron", "git_trigger_": "git_trigger",
                 "postgresql_": "postgresql"}


def _run(*command, **env):
    full_env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
                    ANSIBLE_NOCOLOR="1", **env)
    return subprocess.run([str(BIN / command[0]), *command[1:]], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def vault_password_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vault") / "password"
    path.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
    return path


def test_default_inventory_is_this_machine_in_the_trainer_and_gpu_groups():
    process = _run("ansible-inventory", "--list")
    assert process.returncode == 0, process.stderr
    inventory = json.loads(process.stdout)
    assert inventory["trainers"]["hosts"] == ["localhost"] and inventory["gpu"]["hosts"] == ["localhost"]
    assert not any(inventory.get(group, {}).get("hosts") for group in ("jenkins", "git", "db"))
    host = inventory["_meta"]["hostvars"]["localhost"]
    assert host["ansible_connection"] == "local"
    assert host["ansible_python_interpreter"] == "{{ ansible_playbook_python }}"


def test_site_composes_the_roles_per_group_in_order():
    plays = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    order = [(play["hosts"], [role["role"] for role in play["roles"]]) for play in plays]
    assert order == [("trainers:!localhost", ["autotune_venv"]), ("trainers:gpu", ["docker"]), ("gpu", ["nvidia"]),
                     ("trainers", ["trainer_image", "health_cron"]), ("jenkins", ["jenkins"]), ("git", ["git_trigger"]),
                     ("db", ["postgresql"])]


@pytest.mark.parametrize("inventory", ["default", "example"])
def test_site_syntax_and_hosts(inventory, vault_password_file):
    args = [] if inventory == "default" else ["-i", str(EXAMPLE), "--vault-password-file", str(vault_password_file)]
    syntax = _run("ansible-playbook", "--syntax-check", "playbooks/site.yml", *args)
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    listed = _run("ansible-playbook", "--list-hosts", "playbooks/site.yml", *args)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    hosts = re.findall(r"pattern: \['([^']+)'\]\s+hosts \((\d+)\)", listed.stdout)
    # The default inventory's trainer is the controller's localhost: no venv play there (make venv's Python).
    expected = ({"trainers:!localhost": "0", "trainers:gpu": "1", "gpu": "1", "trainers": "1", "jenkins": "0",
                 "git": "0", "db": "0"}
                if inventory == "default"
                else {"trainers:!localhost": "2", "trainers:gpu": "2", "gpu": "1", "trainers": "2", "jenkins": "1",
                      "git": "1", "db": "1"})
    assert dict(hosts) == expected


def test_example_inventory_secrets_are_vaulted_and_open_with_the_example_password(vault_password_file):
    text = (EXAMPLE / "group_vars" / "all" / "vault.yml").read_text()
    names = re.findall(r"^(vault_[a-z_]+): !vault \|", text, flags=re.M)
    assert names == ["vault_jenkins_admin_password", "vault_autotune_trigger_token", "vault_autotune_smtp_password",
                     "vault_postgresql_password"]
    assert EXAMPLE_VAULT_PASSWORD in text and "EXAMPLE ONLY" in text
    process = _run("ansible", "ci.example.com", "-i", str(EXAMPLE), "--vault-password-file", str(vault_password_file),
                   "-m", "ansible.builtin.debug", "-a",
                   "msg={{ [jenkins_admin_password, jenkins_trigger_token, jenkins_smtp_password] | join(' ') }}")
    assert process.returncode == 0, process.stdout + process.stderr
    assert "example-admin-password-change-me example-trigger-token-change-me example-smtp-password-change-me" in process.stdout
    process = _run("ansible", "db.example.com", "-i", str(EXAMPLE), "--vault-password-file", str(vault_password_file),
                   "-m", "ansible.builtin.debug", "-a", "msg={{ postgresql_password }}")
    assert process.returncode == 0, process.stdout + process.stderr
    assert "example-postgresql-password-change-me" in process.stdout
    # Without the password nothing is readable in clear.
    for plain in ("example-admin-password", "example-trigger-token", "example-smtp-password",
                  "example-postgresql-password"):
        for path in EXAMPLE.rglob("*"):
            if path.is_file():
                assert plain not in path.read_text(), path


def test_example_group_vars_set_only_variables_the_roles_define():
    for path in sorted((EXAMPLE / "group_vars").rglob("*.yml")):
        if path.name == "vault.yml":
            continue
        lines = path.read_text().splitlines()
        for name in yaml.safe_load(path.read_text()) or {}:
            role = next((role for prefix, role in ROLE_PREFIXES.items() if name.startswith(prefix)), None)
            if role is not None:
                defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
                assert name in defaults, f"{path.name}: {name} is not a variable of roles/{role}"
            index = next(i for i, line in enumerate(lines) if line.startswith(name + ":"))
            # Documented: a comment above it, or above the block it belongs to.
            assert any(line.startswith("#") for line in lines[:index + 1]), f"{path.name}: {name} undocumented"


def test_a_playbook_runs_from_outside_the_checkout_with_the_documented_ansible_config(tmp_path, sample_data):
    """Cron, AWX and people start playbooks from anywhere: ANSIBLE_CONFIG=<checkout>/ansible.cfg is the one setting
    (its library, module_utils, roles, plugins and inventory paths are read relative to the file, not the folder)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_NOCOLOR="1")
    command = [str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"), "--check",
               "-e", json.dumps({"autotune_config": str(REPO / "examples" / "catsdogs" / "autotune.yml"),
                                 "autotune_runs_root": str(tmp_path / "runs")})]
    ran = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert "TASK [autotune : Read the model's facts]" in ran.stdout and "failed=0" in ran.stdout
    # Without it, from the same folder, the roles are not found: the setting is what makes it work.
    env.pop("ANSIBLE_CONFIG")
    bare = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert bare.returncode != 0 and "autotune" in bare.stdout + bare.stderr
