"""Issue 20, row 6: the operator's autotune_limits cap whatever budget a pushed configuration asks.

model_facts (the pipeline's Detect step) and tune_model get the role's autotune_limits as ``limits``; a value above
its cap is lowered to it and said in one line. The pipeline, AWX and cron paths all run playbooks/pipeline.yml,
which runs the role's facts.yml and tune.yml with ``limits: "{{ autotune_limits }}"``.
"""
from pathlib import Path

import pytest
import yaml

from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune.errors import ConfigError
from conftest import REPO, TEMPLATES, write_config
from test_modules import _raise_on_exit, _run  # noqa: F401  (the autouse fixture: exit_json raises)
import model_facts

GREEDY = {"max_trials": 100000, "max_seconds": 10 ** 7, "trial_timeout": 10 ** 6}
CAPS = {"max_trials": 30, "max_seconds": 600, "trial_timeout": 120, "slots": 2}


def test_a_pushed_budget_above_the_operators_caps_is_lowered_and_said(tmp_path, sample_data):
    config = write_config(tmp_path, budget=GREEDY)
    # Not pushed: a pushed configuration is refused the local runner where trials would share root (here), and the
    # caps apply to every configuration the modules load, pushed or not.
    outcome = _run(model_facts, {"config": str(config), "templates_dir": str(TEMPLATES), "limits": CAPS,
                                 "overrides": {"runner": {"kind": "local", "slots": 6}}})
    assert not outcome.failed, outcome.result
    assert outcome.result["limited"] == [
        "budget.max_seconds: 10000000 lowered to 600 seconds (the operator's autotune_limits.max_seconds)",
        "budget.max_trials: 100000 lowered to 30 trials (the operator's autotune_limits.max_trials)",
        "runner.slots: 6 lowered to 2 trials at once (the operator's autotune_limits.slots)",
        "budget.trial_timeout: 1000000 lowered to 120 seconds per trial (the operator's autotune_limits.trial_timeout)",
    ]


def test_values_under_the_caps_are_kept_and_unset_caps_cap_nothing():
    config = {"budget": {"max_trials": 5, "max_seconds": 60, "trial_timeout": 30}, "runner": {"slots": 1}}
    assert tune_config.apply_limits(config, {"max_trials": 10, "slots": None}) == []
    assert config["budget"]["max_trials"] == 5 and config["limited"] == []
    with pytest.raises(ConfigError, match=r"autotune_limits.max_trials: 0 is invalid"):
        tune_config.apply_limits(config, {"max_trials": 0})


def test_every_path_that_runs_pushed_code_passes_the_operators_limits():
    """pipeline.yml (Jenkins, AWX, the git hook's cron-less runs) reaches the modules through the role's task files."""
    defaults = yaml.safe_load((REPO / "roles/autotune/defaults/main.yml").read_text())
    assert set(defaults["autotune_limits"]) == set(tune_config.LIMITS)
    for tasks in ("facts.yml", "tune.yml"):
        task = yaml.safe_load((REPO / "roles/autotune/tasks" / tasks).read_text())
        module = [t for t in task if "model_facts" in t or "tune_model" in t][0]
        args = module.get("model_facts") or module.get("tune_model")
        assert args["limits"] == "{{ autotune_limits }}"
    pipeline = Path(REPO / "playbooks/pipeline.yml").read_text()
    assert "tasks_from: facts.yml" in pipeline and "tasks_from: tune.yml" in pipeline


def test_the_fleet_passes_the_limits_to_the_study_and_to_every_worker():
    plays = yaml.safe_load((REPO / "playbooks/fleet.yml").read_text())
    def flat(tasks):  # tasks inside blocks (and their rescue) too
        for task in tasks:
            yield task
            yield from flat(task.get("block", []) + task.get("rescue", []) + task.get("always", []))
    tasks = list(flat([task for play in plays for task in play.get("tasks", [])]))
    study = [t["fleet_study"] for t in tasks if "fleet_study" in t]
    worker = [t["fleet_worker"] for t in tasks if "fleet_worker" in t]
    assert study and all(args["limits"] == "{{ autotune_limits | default(omit) }}" for args in study)
    assert worker and all(args["limits"] == "{{ autotune_fleet_created.limits | default(omit) }}" for args in worker)
