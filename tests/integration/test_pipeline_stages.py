"""The Jenkinsfile's stages, run as Jenkins runs them: one ansible-playbook process per stage, in order.

No Jenkins can run here (no Jenkins package or war can be downloaded on the CI machine): this executes each stage's shell command from the Jenkinsfile
with the parameters as environment variables, against a real git repository, real training, and
checks that together they do what one pipeline.yml run does.
"""
import json
import os
import subprocess

import yaml

from conftest import BIN, REPO, SAMPLE_DATA
from test_jenkins import jenkinsfile_steps


def test_stages_in_separate_processes_tune_publish_and_mail(tmp_path, sample_data):
    bare, work = tmp_path / "model.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    config = {"dataset": {"path": str(SAMPLE_DATA)}, "target": {"goal": 0.8}, "budget": {"max_trials": 8},
              "model": {"template": "cnn", "baseline": {"blocks": 1, "filters": 4, "epochs": 1, "dense_units": 8}},
              "search": {"space": {"filters": {"type": "int", "low": 4, "high": 32, "log": True},
                                   "epochs": {"type": "int", "low": 1, "high": 4}}},
              "notify": {"to": ["ml-team@example.com"]}}
    (work / "autotune.yml").write_text(yaml.safe_dump(config))
    git = ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com"]
    subprocess.run(git + ["add", "autotune.yml"], cwd=work, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "Baseline"], cwd=work, check=True)
    subprocess.run(git + ["push", "-q", "origin", "HEAD:main"], cwd=work, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()

    env = dict(os.environ, REPO=str(bare), COMMIT=sha, BRANCH="main", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1")
    extra = json.dumps({"autotune_runs_root": str(tmp_path / "runs"), "autotune_workspaces": str(tmp_path / "ws")})
    _, stages = jenkinsfile_steps()
    outputs = {}
    for stage in stages:
        for script in stage["scripts"]:
            done = subprocess.run(["/bin/sh", "-c", f"{script} -e '{extra}'"], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=900, check=False)
            outputs[stage["name"]] = done.stdout
            assert done.returncode == 0, f"stage {stage['name']}: {done.stdout[-3000:]}"
    assert "Tune until the goal is reached" not in outputs["Checkout"] + outputs["Detect model and environment"]
    assert "keras cnn" in " ".join(outputs["Detect model and environment"].split())
    assert "autotune | " in outputs["Tune until the goal"] and "changed: [localhost]" in outputs["Tune until the goal"]
    summary = json.loads((tmp_path / "runs" / f"model-{sha[:7]}" / "summary.json").read_text())
    assert summary["reached"] and summary["n_trials"] >= 2
    branch = f"autotune/{sha[:7]}"
    shown = subprocess.run(["git", "-C", str(bare), "show", f"{branch}:autotune-result.json"],
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(shown)["best_value"] == summary["best_value"]
    eml = (tmp_path / "runs" / f"model-{sha[:7]}" / "result.eml").read_text()
    assert "+++ b/model.py" in eml, "the Notify stage mails the result commit's diff"
