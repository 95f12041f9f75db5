"""Pushed code stays in its box: attacks from docs/security.md tried for real (real container, links, git)."""
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from ansible.module_utils.autotune.tune import prepare, run
from conftest import BIN, REPO, TEMPLATES, run_playbook, write_config

HOSTILE = REPO / "tests" / "fixtures" / "hostile_model.py"
VICTIM = "/tmp/autotune-victim"  # the path hostile_model.py links to (a container cannot be told another)


def _tune(tmp_path, attack, runner, goal=0.99):
    config_path = write_config(
        tmp_path, model={"file": str(HOSTILE), "baseline": {"attack": attack}},
        # chance_epochs 0: the liar trains a model at chance (learning rate 0) that must reach its end and the verifier.
        search={"strategy": "random", "space": {"attack": {"type": "categorical", "choices": [attack]}},
                "chance_epochs": 0},
        budget={"max_trials": 1, "trial_timeout": 45}, target={"goal": goal}, runner=runner, study=f"hostile-{attack}")
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(tmp_path / "runs"))
    return run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer")), run_dir


@pytest.fixture()
def victim():
    with open(VICTIM, "w", encoding="utf-8") as handle:
        handle.write("ssh-ed25519 AAAA operator@host\n")
    os.chmod(VICTIM, 0o644)
    yield VICTIM
    os.unlink(VICTIM)


def test_links_planted_by_a_container_lead_the_controller_nowhere(docker_engine, tmp_path, sample_data, victim):
    summary, run_dir = _tune(tmp_path, "links", {"kind": "docker", "docker": {"cpus": 1, "memory": "2g"}})
    trial = summary["trials"][0]
    assert trial["outcome"] == "timed_out", trial
    with open(victim, encoding="utf-8") as handle:
        assert handle.read() == "ssh-ed25519 AAAA operator@host\n", "the stop marker or the log went through a link"
    assert os.stat(victim).st_uid == 0, "never chowned to the container's user"
    folder = os.path.join(run_dir, "trials", "0000")
    assert not os.path.islink(os.path.join(folder, "trainer.log")) and not os.path.islink(
        os.path.join(folder, "stopped_by_controller")), "the controller replaced the links with its own files"


def test_fifos_planted_by_a_container_fail_its_trial_without_hanging_the_controller(docker_engine, tmp_path,
                                                                                   sample_data):
    """Issue 20 row 1: a FIFO in place of metrics.jsonl hung the controller (its trial_timeout never fired)."""
    done = {}
    worker = threading.Thread(target=lambda: done.update(zip(("summary", "run_dir"), _tune(
        tmp_path, "fifo", {"kind": "docker", "docker": {"cpus": 1, "memory": "2g", "warm": False}}))), daemon=True)
    worker.start()
    worker.join(240)
    assert not worker.is_alive(), "the controller hung on a FIFO the trial planted"
    trial = done["summary"]["trials"][0]
    assert trial["outcome"] == "bad_trial_file", trial
    assert trial["reason"] == "metrics.jsonl: the file is a FIFO; expected a regular file"
    assert not docker_engine.containers.list(all=True, filters={"label": "io.autotune.study=hostile-fifo"}), \
        "its container was stopped and removed"


def test_a_trial_that_claims_a_score_counts_with_what_its_model_really_scores(tmp_path, sample_data):
    summary, _ = _tune(tmp_path, "lie", {"kind": "local"})
    trial = summary["trials"][0]
    assert trial["reported_value"] == 1.0, "the trial did claim a perfect score"
    assert trial["verified_value"] < 0.75 and trial["value"] == trial["verified_value"]
    assert summary["reached"] is False and summary["best_value"] < 0.75


def test_a_model_that_memorised_the_validation_split_is_judged_on_images_no_trial_held(docker_engine, tmp_path,
                                                                                     sample_data):
    summary, run_dir = _tune(tmp_path, "memorise", {"kind": "docker", "docker": {"cpus": 1, "memory": "2g"}},
                             goal=0.95)
    trial = summary["trials"][0]
    assert trial["verified_value"] == 1.0, "it did memorise the validation split it was given"
    assert trial["test_value"] < 0.95 and summary["best_test_value"] == trial["test_value"]
    assert summary["reached"] is False and summary["test"]["n"] == 300
    assert "held-out test split scores" in trial["reason"]
    # The held-out pack lives in a 0700 folder beside the trials' pack, never inside what a trial mounts.
    held_out = Path(run_dir) / "data" / "held-out"
    assert held_out.stat().st_mode & 0o777 == 0o700 and list(held_out.glob("testset-*/x_test.npy"))
    assert not list((Path(run_dir) / "data").glob("dataset-*/x_test.npy"))


def test_a_repository_argument_cannot_become_a_git_option(tmp_path):
    marker = tmp_path / "pwned"
    result = run_playbook("pipeline.yml", {"autotune_repo": f"--upload-pack=touch {marker}", "autotune_commit": "abcdef1",
                                           "autotune_workspaces": str(tmp_path / "ws")})
    assert result.returncode != 0 and not marker.exists()
    assert "autotune_repo must be a git URL or path not starting with '-'" in " ".join(result.stdout.split())


def test_the_jenkinsfile_refuses_the_same_values():
    """The Jenkinsfile's allow-lists (Groovy ==~, Java regex) read with Python's re, which agrees on them."""
    text = (REPO / "Jenkinsfile").read_text()
    patterns = dict(re.findall(r"params\.(\w+) \?: ''\) ==~ /(.+?)/\)\)", text))
    assert set(patterns) == {"COMMIT", "BRANCH", "REPO"}
    for name, value in (("REPO", "--upload-pack=/tmp/x"), ("REPO", "-oProxyCommand=x"), ("BRANCH", "-D"),
                        ("COMMIT", "abc; rm -rf /")):
        assert not re.fullmatch(patterns[name], value), (name, value)
    assert re.fullmatch(patterns["REPO"], "https://git.example.com/model.git")
    assert re.fullmatch(patterns["REPO"], "/srv/git/model.git") and re.fullmatch(patterns["BRANCH"], "feature/x-1")


def test_a_pushed_template_cannot_run_code_while_model_facts_renders_it(tmp_path, sample_data):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.py.j2").write_text("{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}\n")
    (tmp_path / "evil.yml").write_text("framework: keras\nhyperparameters:\n  x: {default: 1, type: int, low: 1, high: 2}\n")
    config = write_config(tmp_path, model={"template": "evil.py.j2"}, search={"space": None})
    config.write_text(config.read_text().replace("  space: null\n", ""))
    result = subprocess.run([str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"), "--check",
                             "-e", f"autotune_config={config}"], cwd=REPO, capture_output=True, text=True, check=False,
                            env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}"))
    assert result.returncode != 0 and not marker.exists()
    assert "tried an unsafe operation" in result.stdout, result.stdout[-2000:]
