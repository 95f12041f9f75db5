"""A second push learns from the first: two commits of one model repository through playbooks/pipeline.yml, real git,
real training in the trainer containers (the pipeline's runner), each commit's study in the SQLite file of its own run
folder (the default). The first push searches until it reaches the goal; the next commit changes one line, and its
study starts from the first's: the first's best is trial 1, right after the committed baseline, and the first's
finished trials are given to the sampler."""
import email
import email.policy
import json
import subprocess
import time

import yaml

from conftest import SAMPLE_DATA, run_playbook

GIT = ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com"]
# The sample CNN as tests/integration/test_pipeline_stages.py tunes it: its baseline stays short of the goal.
CONFIG = {"dataset": {"path": str(SAMPLE_DATA)}, "target": {"goal": 0.8}, "budget": {"max_trials": 8},
          "model": {"template": "cnn", "baseline": {"blocks": 1, "filters": 4, "epochs": 1, "dense_units": 8}},
          "search": {"space": {"filters": {"type": "int", "low": 4, "high": 32, "log": True},
                               "epochs": {"type": "int", "low": 1, "high": 4}}},
          "notify": {"to": ["ml-team@example.com"]}}


def _commit(work, config, message):
    (work / "autotune.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run(GIT + ["add", "autotune.yml"], cwd=work, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", message], cwd=work, check=True)
    subprocess.run(GIT + ["push", "-q", "origin", "HEAD:main"], cwd=work, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True).stdout.strip()


def _push(tmp_path, bare, sha):
    started = time.time()
    process = run_playbook("pipeline.yml", {"autotune_repo": str(bare), "autotune_commit": sha, "autotune_publish": False,
                                            "autotune_runs_root": str(tmp_path / "runs"),
                                            "autotune_workspaces": str(tmp_path / "ws")})
    run_dir = tmp_path / "runs" / f"model-{sha[:7]}"
    assert process.returncode == 0, process.stdout[-3000:]
    return json.loads((run_dir / "summary.json").read_text()), run_dir, time.time() - started


def test_the_next_commit_starts_from_the_best_of_the_last_and_reaches_the_goal_at_once(tmp_path, sample_data,
                                                                                        docker_engine):
    bare, work = tmp_path / "model.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    first_sha = _commit(work, CONFIG, "Model")
    first, _, first_seconds = _push(tmp_path, bare, first_sha)
    assert first["reached"] and first["best_trial"] >= 1, "the committed baseline alone does not reach the goal"
    assert first["learned"]["studies"] == [] and first["learned"]["lines"][0].startswith(
        "learn: no earlier study of repository model with a finished trial")
    best = {k: first["best_params"][k] for k in ("filters", "epochs")}

    # The one-line change: more filters in the committed model. The earlier best sets the searched filters and epochs,
    # so trial 1 trains the model that reached the goal (the trainer's seed is the study's: it scores the same).
    changed = yaml.safe_load(yaml.safe_dump(CONFIG))
    changed["model"]["baseline"]["filters"] = 6
    second_sha = _commit(work, changed, "Wider dense layer")
    second, run_dir, second_seconds = _push(tmp_path, bare, second_sha)

    learned = second["learned"]["studies"]
    finished = [t for t in first["trials"] if t["state"] == "COMPLETE" and t["outcome"] != "duplicate"]
    assert [(e["study"], e["commit"], e["best_trial"], e["imported"]) for e in learned] == \
        [(f"model-{first_sha[:7]}", first_sha, first["best_trial"], len(finished))]
    assert second["reached"] and second["best_trial"] in (0, 1), second["progress"]
    if second["best_trial"] == 1:
        assert learned[0]["as_trial"] == 1
        assert {k: second["trials"][1]["params"][k] for k in best} == best, "the earlier best's searched values"
    assert second["n_trials"] <= 2, "imported trials are not counted as trials run here"
    body = email.message_from_bytes((run_dir / "result.eml").read_bytes(), policy=email.policy.default) \
        .get_body(("plain",)).get_content()
    assert f"Learned: learned from study model-{first_sha[:7]} (commit {first_sha[:7]}): its best (trial " in body
    print(f"first push {first_seconds:.1f} s ({first['n_trials']} trials), second {second_seconds:.1f} s "
          f"({second['n_trials']} trials): ratio {second_seconds / first_seconds:.2f}")
