"""The execution environment's definition (execution-environment.yml) agrees with the rest of the tree: every
collection our playbooks and roles call is pinned in collections/requirements.yml at the version the pinned `ansible`
package bundles (which the EE installs), and the EE's Python pins are requirements.txt's. Files only; the build and a
job run in it are tests/integration/test_awx_runner.py's."""
import json
import re
from pathlib import Path

import ansible_collections
import yaml

from conftest import REPO

EE = yaml.safe_load((REPO / "execution-environment.yml").read_text())
FQCN = re.compile(r"\b([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\.[a-z_][a-z0-9_]*\b")


def _pins(path):
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def _collections_called():
    """namespace.name of every FQCN in playbooks/ and roles/ that names an installed collection."""
    installed = Path(ansible_collections.__path__[0])
    called = set()
    for path in [*REPO.glob("playbooks/**/*.yml"), *REPO.glob("roles/**/*.yml")]:
        for namespace, name in FQCN.findall(path.read_text()):
            if namespace != "ansible" or name not in ("builtin", "legacy"):
                if (installed / namespace / name / "MANIFEST.json").is_file():
                    called.add(f"{namespace}.{name}")
    return called


def test_every_collection_called_is_pinned_at_the_bundled_version():
    listed = {c["name"]: c["version"] for c in yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())["collections"]}
    called = _collections_called()
    assert {"community.general", "community.docker", "awx.awx"} <= called  # the scan finds what we know we call
    assert called <= set(listed), f"called but not in collections/requirements.yml: {sorted(called - set(listed))}"
    installed = Path(ansible_collections.__path__[0])
    for name, version in listed.items():
        manifest = json.loads((installed / Path(*name.split(".")) / "MANIFEST.json").read_text())
        assert manifest["collection_info"]["version"] == version, f"{name}: {version} listed, ansible bundles {manifest['collection_info']['version']}"


def test_the_ee_installs_the_pinned_ansible_and_the_requirements_pins():
    controller, test = _pins(REPO / "requirements.txt"), _pins(REPO / "requirements-test.txt")
    deps = EE["dependencies"]
    assert deps["ansible_core"]["package_pip"] == f"ansible-core=={controller['ansible-core']}"
    assert deps["ansible_runner"]["package_pip"] == f"ansible-runner=={test['ansible-runner']}"
    ee_pins = _pins(REPO / deps["python"])
    assert ee_pins["ansible"] == controller["ansible"], "the collections come with the ansible package"
    assert {name: controller.get(name) for name in ee_pins} == ee_pins, "requirements-ee.txt pins as requirements.txt"
    assert (REPO / deps["system"]).is_file()


def test_the_ee_builds_from_our_local_base_image():
    defaults = yaml.safe_load((REPO / "roles" / "trainer_image" / "defaults" / "main.yml").read_text())
    assert EE["images"]["base_image"]["name"] == defaults["trainer_image_bootstrap_image"]
    assert EE["version"] == 3 and EE["options"]["workdir"] == "/runner"
