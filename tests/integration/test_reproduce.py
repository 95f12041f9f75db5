"""playbooks/reproduce.yml with real training: a trial of a real tune run (local runner, the cnn template, the sample
data) trained again from its record gives the same value at every epoch, and a changed data set is refused in one
line before anything trains; a docker trial re-runs in the image it trained in and is refused once that image is
gone. Each tune is one 3-epoch trial. Measured on the shared 2-core build machine at a load of 15 to 25 (six
sessions): 85 s for the local half, 200 s for the docker test (two containers per tune, two per re-run).
"""
import json
import os
import shutil
import uuid

import pytest
from PIL import Image, ImageOps

from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.reproduce import reproduce
from ansible.module_utils.autotune.tune import prepare, run
from conftest import REPO, SAMPLE_DATA, TEMPLATES, TRAINER_IMAGE, run_playbook, write_config

TIMING = ("epoch", "seconds", "time")


def tune_one_trial(work, data, **sections):
    """Trial 0 alone, 3 epochs toward a goal it cannot reach (so it trains them all); returns (run_dir, summary)."""
    config_path = write_config(work, dataset={"path": str(data)}, target={"metric": "val_accuracy", "goal": 0.99},
                               model={"template": "cnn", "baseline": {"filters": 8, "dense_units": 16, "epochs": 3}},
                               search={"strategy": "escalate", "ladder": ["epochs"], "pruner": "none",
                                       "space": {"epochs": {"type": "categorical", "choices": [3]}}},
                               budget={"max_trials": 1, "trial_timeout": 300, "max_seconds": 600}, **sections)
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(work / "runs"))
    summary = run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer"))
    assert len(summary["trials"][0]["epochs"]) == 3, summary["verdict"]
    return run_dir, summary


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, sample_data):
    """A run folder whose trial 0 trained on a copy of the sample data (the local runner)."""
    work = tmp_path_factory.mktemp("reproduce")
    data = work / "images"
    shutil.copytree(SAMPLE_DATA, data)
    run_dir, summary = tune_one_trial(work, data)
    return {"run_dir": run_dir, "trial": os.path.join(run_dir, "trials", "0000"), "data": data, "summary": summary}


def values(epochs):
    return [{k: v for k, v in epoch.items() if k not in TIMING} for epoch in epochs]


def test_the_record_holds_what_a_rerun_needs(tuned):
    with open(os.path.join(tuned["run_dir"], "records", "0000.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    assert record["spec"]["seed"] == 1 and record["spec"]["deterministic"] is True
    assert record["environment"]["packages"]["keras"] and record["environment"]["interpreter"]
    assert record["data"]["fingerprint"] == tuned["summary"]["dataset"]["fingerprint"] and record["data"]["pack"]
    assert len(record["code_sha256"]) == 64 and record["commit"] is None  # the config is in no git repository
    assert values(record["epochs"]) == values(tuned["summary"]["trials"][0]["epochs"])


def test_reproduce_yml_retrains_trial_0_to_the_recorded_values(tuned):
    done = run_playbook("reproduce.yml", {"autotune_trial": tuned["trial"]})
    assert done.returncode == 0, done.stdout[-3000:]
    assert "\n        reproduced: the re-run's 3 epoch(s) equal the record, every value\n" in done.stdout
    assert "\n        epoch 3: recorded / re-run: val_accuracy " in done.stdout
    rerun = os.path.join(tuned["run_dir"], "reproduced", "0000-rerun", "metrics.jsonl")
    with open(rerun, encoding="utf-8") as handle:
        rerun_epochs = [json.loads(line) for line in handle if line.strip()]
    recorded = tuned["summary"]["trials"][0]["epochs"]
    assert values(rerun_epochs) == values(recorded), "every epoch's value, to the last bit"
    assert [e["val_accuracy"] for e in rerun_epochs] == [e["val_accuracy"] for e in recorded]
    for folder in (tuned["trial"], os.path.dirname(rerun)):  # the trainer says what it turned on, in the trial's log
        with open(os.path.join(folder, "trainer.log"), encoding="utf-8") as handle:
            assert "autotune_trainer: seed 1, op determinism on" in handle.read()


def test_check_mode_checks_and_trains_nothing(tuned):
    done = run_playbook("reproduce.yml", {"autotune_trial": tuned["trial"]}, check=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "record, code, data and trainer match; nothing trained (check mode)" in done.stdout


def test_a_changed_data_set_is_refused_in_one_line(tuned):
    image = sorted((tuned["data"] / "cat").iterdir())[0]
    with Image.open(image) as original:
        ImageOps.invert(original.convert("L")).save(image)  # one image of 2,000, other pixels
    rerun = os.path.join(tuned["run_dir"], "reproduced", "0000-rerun")
    before = os.stat(rerun).st_mtime_ns if os.path.exists(rerun) else None
    done = run_playbook("reproduce.yml", {"autotune_trial": tuned["trial"]})
    assert done.returncode != 0
    failed = [line for line in done.stdout.splitlines() if line.startswith("[ERROR]: Task failed: Module failed: ")]
    assert len(failed) == 1, done.stdout[-3000:]
    line = failed[0]
    assert f"dataset.path: '{tuned['data']}' changed since trial 0 was recorded (fingerprint " in line, line
    assert line.endswith("expected the same images (names, sizes, modification times) to reproduce it"), line
    assert "epoch 1:" not in done.stdout, "refused before training"
    assert (os.stat(rerun).st_mtime_ns if os.path.exists(rerun) else None) == before


def test_a_docker_trial_reruns_in_its_image_and_is_refused_once_that_image_is_gone(docker_engine, tmp_path,
                                                                                   sample_data):
    # An image of its own (the shared one with this tree's trainer first on PYTHONPATH), so removing it is real.
    context = tmp_path / "image"
    shutil.copytree(REPO / "trainer" / "autotune_trainer", context / "autotune_trainer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (context / "Dockerfile").write_text(f"FROM {TRAINER_IMAGE}\nCOPY autotune_trainer /opt/reproduce-test/"
                                        "autotune_trainer\nENV PYTHONPATH=/opt/reproduce-test\n")
    tag = f"autotune-reproduce-test:{uuid.uuid4().hex[:8]}"
    image, _ = docker_engine.images.build(path=str(context), tag=tag, rm=True)
    try:
        run_dir, summary = tune_one_trial(tmp_path, SAMPLE_DATA, runner={"kind": "docker", "docker": {"image": tag}})
        trial = os.path.join(run_dir, "trials", "0000")
        found = reproduce(trial)
        with open(os.path.join(run_dir, "records", "0000.json"), encoding="utf-8") as handle:
            assert json.load(handle)["environment"]["image_id"] == image.id
        assert found["reproduced"] is True, found["lines"]
        assert [row["rerun"] for row in found["epochs"]] == values(summary["trials"][0]["epochs"])
    finally:
        docker_engine.images.remove(image.id, force=True)
    with pytest.raises(AutotuneError) as caught:
        reproduce(trial)
    line = str(caught.value)
    assert line.startswith(f"trainer: trial 0 trained in image {tag} ({image.id[:19]}), which cannot be used now: ")
    assert "is not on the Docker host" in line and "\n" not in line
