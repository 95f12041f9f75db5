"""The docker runner against a real Docker engine and the trainer image built by roles/trainer_image."""
import json
import os
import time

import docker
import pytest

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune.kinds import template as template_kind
from ansible.module_utils.autotune.tune import prepare, run
from conftest import TRAINER_IMAGE as IMAGE, REPO, TEMPLATES, run_playbook, write_config


LABEL = "io.autotune.project=autotune"


@pytest.fixture(scope="module")
def engine(docker_engine):
    return docker_engine


def _leftovers(client, study):
    return client.containers.list(all=True, filters={"label": [LABEL, f"io.autotune.study={study}"]})


def test_trial_container_is_isolated_labelled_and_removed(engine, tmp_path, sample_data):
    from ansible.module_utils.autotune.runners.docker import DockerRunner
    packed = tune_dataset.prepare({"path": str(sample_data), "image_size": [28, 28], "color": "grayscale",
                                   "validation_split": 0.2, "test_split": 0.15, "seed": 1}, str(tmp_path / "cache"))["path"]
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    probe = (
        "import json, os, socket\n"
        "out = {'uid': os.getuid(), 'interfaces': sorted(os.listdir('/sys/class/net'))}\n"
        "try:\n    open('/data/dataset/x_train.npy', 'ab').close(); out['data_write'] = 'allowed'\n"
        "except OSError as e:\n    out['data_write'] = e.strerror\n"
        "try:\n    socket.create_connection(('pypi.org', 443), timeout=5); out['network'] = 'connected'\n"
        "except OSError as e:\n    out['network'] = type(e).__name__\n"
        "out['mounts'] = {l.split()[1]: l.split()[3].split(',')[0] for l in open('/proc/mounts')\n"
        "                 if l.split()[1].startswith(('/data', '/trial', '/work', '/root', '/tmp/'))}\n"
        "json.dump(out, open('/trial/probe.json', 'w'))\n"
    )
    meta = template_kind.template_meta(str(TEMPLATES / "cnn.py.j2"))
    params = {n: s["default"] for n, s in meta["hyperparameters"].items()}
    (trial_dir / "model.py").write_text(probe + template_kind.render(str(TEMPLATES / "cnn.py.j2"), params, 0))
    (trial_dir / "trial.json").write_text(json.dumps({"number": 0, "params": params, "model_api": "template",
                                                      "metric": "val_accuracy", "goal": None, "seed": 1}))
    runner = DockerRunner(IMAGE, cpus=1, memory="2g")
    process = runner.start(str(trial_dir), packed, {"study": "isolation", "trial": "0", "run_dir": str(tmp_path)})
    attrs = process.container.attrs
    ours = {k: v for k, v in attrs["Config"]["Labels"].items() if k in (
        "io.autotune.project", "io.autotune.study", "io.autotune.trial", "io.autotune.run_dir")}
    assert ours == {"io.autotune.project": "autotune", "io.autotune.study": "isolation",
                    "io.autotune.trial": "0", "io.autotune.run_dir": str(tmp_path)}
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert attrs["HostConfig"]["Memory"] == 2 * 1024**3 and attrs["HostConfig"]["NanoCpus"] == 10**9
    # TensorFlow's pools sized to the one CPU, not to the host's cores (runners/docker.thread_environment).
    assert {"TF_NUM_INTRAOP_THREADS=1", "TF_NUM_INTEROP_THREADS=1"} <= set(attrs["Config"]["Env"])
    # Hardened: pushed model code gets no capabilities, no privilege gain, a read-only root and a process cap.
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"] and attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
    assert attrs["HostConfig"]["ReadonlyRootfs"] is True and attrs["HostConfig"]["PidsLimit"] == 4096
    assert "/tmp" in attrs["HostConfig"]["Tmpfs"]
    binds = sorted(attrs["HostConfig"]["Binds"])
    assert binds == sorted([f"{trial_dir}:/trial:rw", f"{packed}:/data/dataset:ro"])
    deadline = time.time() + 180
    while process.exit_code() is None and time.time() < deadline:
        time.sleep(0.5)
    assert process.outcome() == ("finished", None), (trial_dir / "trainer.log").read_text()[-2000:]
    process.cleanup()
    found = json.loads((trial_dir / "probe.json").read_text())
    assert found["uid"] != 0
    assert found["interfaces"] == ["lo"] and found["network"] in ("gaierror", "OSError", "ConnectionRefusedError")
    assert found["data_write"] in ("Read-only file system", "Permission denied")
    assert found["mounts"] == {"/data/dataset": "ro", "/trial": "rw"}, "nothing else of the host is mounted"
    assert (trial_dir / "model.keras").exists() and "val_accuracy:" in (trial_dir / "trainer.log").read_text()
    spare = [c for c in _leftovers(engine, "isolation") if c.labels["io.autotune.trial"].startswith(".spare-")]
    assert len(spare) == 1 and spare[0].status == "running", "the next trial's warm container waits"
    runner.close()
    assert _leftovers(engine, "isolation") == [] and not list((tmp_path / "trials").glob(".spare-*")), \
        "nothing is left after the study: the unused spare and its folder are removed"


def test_timeout_and_oom_are_recorded_and_the_study_goes_on(engine, tmp_path, sample_data):
    config_path = write_config(
        tmp_path, model={"file": str(REPO / "tests" / "fixtures" / "misbehaving_model.py"), "baseline": {"behaviour": "hog"}},
        search={"strategy": "escalate", "ladder": ["behaviour"], "pruner": "none",
                "space": {"behaviour": {"type": "categorical", "choices": ["hog", "hang", "ok"]}}},
        budget={"max_trials": 3, "trial_timeout": 25, "max_consecutive_failures": 3},
        runner={"kind": "docker", "docker": {"memory": "1g", "cpus": 2}}, target={"goal": 0.99}, study="limits",
    )
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(tmp_path / "runs"))
    summary = run(config, plan, run_dir, storage)
    outcomes = [(t["params"]["behaviour"], t["outcome"]) for t in summary["trials"]]
    assert outcomes == [("hog", "oom"), ("hang", "timed_out"), ("ok", "finished")]
    assert "killed for memory (OOM)" in summary["trials"][0]["reason"]
    assert summary["trials"][1]["reason"] == "timed out after 25 s"
    assert summary["runner"] == "docker" and summary["runner_details"]["image"] == IMAGE
    assert summary["runner_details"]["image_id"].startswith("sha256:")
    for number in range(3):
        assert (tmp_path / "runs" / "limits" / "trials" / f"{number:04d}" / "trainer.log").exists()
    assert _leftovers(engine, "limits") == []


def test_tune_playbook_with_docker_runner_reaches_the_goal(engine, tmp_path, sample_data):
    config = write_config(tmp_path, runner={"kind": "docker", "docker": {"cpus": 2, "memory": "2g"}}, study="dockere2e",
                          budget={"max_trials": 8})
    result = run_playbook("tune.yml", {"autotune_config": str(config), "autotune_runs_root": str(tmp_path / "runs")})
    assert result.returncode == 0, result.stdout[-3000:]
    summary = json.loads((tmp_path / "runs" / "dockere2e" / "summary.json").read_text())
    assert summary["reached"] and summary["best_value"] >= 0.8 and summary["runner"] == "docker"
    assert _leftovers(engine, "dockere2e") == []


def test_framework_without_an_image_fails_before_any_container(engine, tmp_path, sample_data):
    config = write_config(tmp_path, runner={"kind": "docker", "docker": {"images": {"pytorch": {"cpu": "x"}}}}, study="noimage")
    result = run_playbook("tune.yml", {"autotune_config": str(config), "autotune_runs_root": str(tmp_path / "runs")})
    assert result.returncode != 0
    assert "no trainer image for framework 'keras'; images exist for: pytorch" in result.stdout
    assert not (tmp_path / "runs" / "noimage").exists()
