"""The original pipeline's script (examples/original_pipeline) tuned to the goal in the docker runner:
each trial is the user's rewritten script in its own hardened container, reading its Kaggle-style folders
read-only at their own paths, through playbooks/tune.yml as a user runs it."""
import json
import shutil
import sys

from conftest import REPO, run_playbook

EXAMPLE = REPO / "examples" / "original_pipeline"


def test_the_original_pipelines_script_reaches_the_goal_in_containers(docker_engine, tmp_path, sample_data):
    checkout = tmp_path / "checkout"  # the user's folder: script, configuration and images; nothing of the repo
    checkout.mkdir()
    for name in ("train.py", "autotune.yml"):
        shutil.copyfile(EXAMPLE / name, checkout / name)
    sys.path.insert(0, str(EXAMPLE))
    try:
        from make_layout import lay_out  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.remove(str(EXAMPLE))
    assert lay_out(sample_data, checkout / "cnn_dataset")["test_set/cats"] == 200
    held_out = tmp_path / "held_out"  # outside the checkout: the script's container never sees it, its scorer does
    for name in ("cats", "dogs"):
        (held_out / name).mkdir(parents=True)
        for image in sorted((checkout / "cnn_dataset" / "training_set" / name).iterdir())[:100]:
            shutil.move(image, held_out / name / image.name)
    result = run_playbook("tune.yml", {
        "autotune_config": str(checkout / "autotune.yml"), "autotune_runs_root": str(tmp_path / "runs"),
        "autotune_overrides": {"runner": {"kind": "docker", "docker": {"cpus": 2, "memory": "2g"}},
                               "budget": {"max_trials": 8, "max_seconds": 900}, "dataset": {"test": str(held_out)}}})
    assert result.returncode == 0, result.stdout[-3000:]
    summary = json.loads((tmp_path / "runs" / "original_pipeline" / "summary.json").read_text())
    assert summary["runner"] == "docker" and summary["reached"] is True and summary["best_value"] >= 0.80
    zero = tmp_path / "runs" / "original_pipeline" / "trials" / "0000"
    assert (zero / "model.py").read_bytes() == (checkout / "train.py").read_bytes(), "trial 0 is the file as pushed"
    assert (zero / "model.h5").is_file(), "what the script saves lands in its trial folder, from the container"
    assert not (checkout / "model.h5").exists(), "nothing is written into the user's folder"
    best = summary["trials"][summary["best_trial"]]
    assert best["verified_value"] is not None, "scored apart on the validation half of test_set"
    assert best["test_value"] >= 0.8 - 1e-6 and summary["test"]["n"] == 200 and summary["test"]["caveat"] is None, \
        "the goal judged on dataset.test, a folder the script never read"
    leftovers = docker_engine.containers.list(all=True, filters={"label": "io.autotune.study=original_pipeline"})
    assert leftovers == []
