"""Role trainer_image with the real engine: the CPU image built by playbooks/trainer_host.yml runs as
a non-root user with the controller's pins and the trainer package; its tag follows its inputs;
the GPU Dockerfile (rendered, not built here) passes Docker's own parser."""
import io
import json
import re
import shutil

import docker
import pytest

from containers_support import (MANIFEST, engine, explain, pinned, read_manifest, require_root,
                                run_playbook, REPO)

NVIDIA_BASE = re.compile(r"^nvidia/cuda:")


@pytest.fixture(scope="module")
def client():
    return engine()


@pytest.fixture(scope="module")
def manifest(client):
    """The site's manifest; provisions the image (a build of a few minutes) only when it is missing."""
    present = MANIFEST.exists() and "cpu" in read_manifest()["images"]
    if present:
        try:
            client.images.get(read_manifest()["images"]["cpu"])
        except Exception:  # pylint: disable=broad-except
            present = False
    if not present:
        require_root()
        result = run_playbook("playbooks/trainer_host.yml", "-e", "@.ci/image_vars.yml")  # no registry here
        assert result.returncode == 0, explain(result)
    return read_manifest()


@pytest.fixture(scope="module")
def variants(client, tmp_path_factory):
    """Render-only runs of the role under variants of its inputs (tests/playbooks/trainer_image_inputs.yml)."""
    require_root()
    scratch = tmp_path_factory.mktemp("trainer-inputs")
    trainer_copy = scratch / "trainer"
    shutil.copytree(REPO / "trainer", trainer_copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    hp = trainer_copy / "autotune_trainer" / "hp.py"
    hp.write_text(hp.read_text() + "\n# a changed line\n")
    (trainer_copy / "autotune_trainer" / "extra.py").write_text("EXTRA = 1\n")
    result = run_playbook("tests/playbooks/trainer_image_inputs.yml",
                          "-e", f"inputs_dir={scratch}", "-e", f"trainer_copy={trainer_copy}",
                          "-e", f"site_image_vars={REPO / '.ci' / 'image_vars.yml'}")
    assert result.returncode == 0, explain(result)
    found = {name: json.loads((scratch / f"{name}.json").read_text()) for name in ("pin", "code", "noca", "same")}
    found["context"] = scratch / "build" / "context"
    return found


def test_cpu_image_is_tagged_by_its_inputs(client, manifest):
    name = manifest["name"]
    cpu = manifest["flavours"]["cpu"]
    assert manifest["images"]["cpu"] == cpu["image"]
    assert re.fullmatch(rf"{re.escape(name)}:cpu-[0-9a-f]{{12}}", cpu["image"])
    assert cpu["image"].endswith(cpu["inputs"][:12])
    image = client.images.get(cpu["image"])
    assert image.id == cpu["id"]
    assert f"{name}:cpu-latest" in image.tags
    assert image.labels["io.autotune.inputs"] == cpu["inputs"]
    assert image.labels["io.autotune.flavour"] == "cpu"


def test_cpu_image_runs_as_non_root_with_the_pins_and_the_trainer(client, manifest):
    probe = (
        "import json, os, importlib.metadata as md\n"
        "import keras, autotune_trainer, tensorflow\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'home': os.path.expanduser('~'),"
        " 'versions': {p: md.version(p) for p in ('tensorflow-cpu', 'keras', 'numpy', 'tensorboard', 'pillow', 'autotune-trainer')},"
        " 'trainer': autotune_trainer.__file__}))\n"
    )
    out = client.containers.run(manifest["images"]["cpu"], ["python", "-c", probe],
                                remove=True, network_disabled=True)
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["uid"] != 0 and seen["gid"] != 0
    assert seen["trainer"].startswith("/opt/trainer/")
    pins = pinned()
    for package in ("tensorflow-cpu", "keras", "numpy", "tensorboard", "pillow"):
        assert seen["versions"][package] == pins[package], package


def test_tag_changes_with_each_input_and_only_then(manifest, variants):
    built = manifest["flavours"]["cpu"]["inputs"]
    # Same inputs, another build folder, stale files of other variants in it: the same tag as the built image.
    assert variants["same"]["flavours"]["cpu"]["inputs"] == built
    for changed in ("pin", "code", "noca"):
        assert variants[changed]["flavours"]["cpu"]["inputs"] != built, changed
    assert len({variants[v]["flavours"]["cpu"]["inputs"] for v in ("pin", "code", "noca", "same")}) == 4
    # A CPU pin does not touch the GPU flavour: the site's GPU tag is unchanged by the render-only run.
    assert variants["same"]["flavours"]["gpu"]["inputs"] == manifest["flavours"]["gpu"]["inputs"]
    assert variants["same"]["images"] == {}  # render-only: nothing built, nothing claimed


def test_gpu_dockerfile_is_rendered_and_parses(client, variants):
    gpu = variants["same"]["flavours"]["gpu"]
    text = (variants["context"] / "Dockerfile.gpu").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert froms == [gpu["base"], gpu["base"]] and NVIDIA_BASE.match(gpu["base"])
    assert "'tensorflow[and-cuda]==2.21.0'" in text
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert _docker_parse_error(client, text) is None
    assert "unknown instruction" in _docker_parse_error(client, text.replace("WORKDIR", "WORKDIRR"))


def _docker_parse_error(client, dockerfile):
    """None when Docker's (legacy) builder parses the Dockerfile; else its error. Nothing is pulled or
    built: the builder parses the whole file before it looks for the (missing) --target stage."""
    target = "autotune-parse-check-only"
    try:
        for chunk in client.api.build(fileobj=io.BytesIO(dockerfile.encode()), target=target, decode=True, rm=True):
            error = chunk.get("error") or chunk.get("errorDetail", {}).get("message")
            if error:
                break
        else:
            return "the build did not stop at the missing target"
    except docker.errors.APIError as exc:  # the daemon answers 400 before it streams anything
        error = str(exc.explanation)
    return None if f"failed to reach build target {target}" in error else error
