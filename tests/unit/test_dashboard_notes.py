"""What the dashboard shows beyond Optuna's own records (module_utils/autotune/dashboard.py), the mail's and the
progress header's link to it, and the role's launcher filter (roles/dashboard/files/autotune_dashboard.py).

The study loop runs against the in-memory runner; the notes are read back with optuna-dashboard's own
get_note, from the storage, as the dashboard reads them. The browser side is tests/integration/test_dashboard.py.
"""
import importlib.util
import io
import json

import optuna
import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from optuna_dashboard import get_note

import tune_report
from ansible.module_utils.autotune import dashboard, report
from ansible.module_utils.autotune.storage import default_storage
from ansible.module_utils.autotune.study import StudyLoop
from conftest import REPO
from fakes import FakeRunner
from test_study_loop import _setup, by_filters

LAUNCHER = REPO / "roles" / "dashboard" / "files" / "autotune_dashboard.py"


def _launcher():
    spec = importlib.util.spec_from_file_location("autotune_dashboard_launcher", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _note(study, number):
    frozen = study.trials[number]
    return get_note(optuna.trial.Trial(study, frozen._trial_id))  # pylint: disable=protected-access


def _run_loop(tmp_path, script, **sections):
    config, plan, run_dir = _setup(tmp_path, **sections)
    lines = []
    storage = default_storage(run_dir)
    watch = dashboard.prepare(config, plan, storage, "fake", "http://127.0.0.1:8080/", lines.append)
    loop = StudyLoop(config, plan, {"path": "unused.npz"}, FakeRunner(script), run_dir, storage, lines.append)
    study, _, _ = loop.run()
    return study, watch, lines


def test_notes_written_from_the_worker_thread_are_all_there_after_close(tmp_path):
    """tune.run writes notes beside the loop (importing optuna_dashboard costs seconds before trial 0)."""
    config, plan, run_dir = _setup(tmp_path)
    lines, storage = [], default_storage(run_dir)
    notes = dashboard.Notes(lines.append)
    dashboard.prepare(config, plan, storage, "fake", None, lines.append, notes)
    loop = StudyLoop(config, plan, {"path": "unused.npz"}, FakeRunner(by_filters({4: [0.6], 8: [0.85]})), run_dir,
                     storage, lines.append, notes)
    study, _, _ = loop.run()
    notes.close()
    assert "val_accuracy >= 0.8" in get_note(study)
    assert [_note(study, n).splitlines()[0] for n in (0, 1)] == [
        "### Trial 0: finished, val_accuracy **0.6000**", "### Trial 1: finished, val_accuracy **0.8500**"]
    assert not any("not saved" in line for line in lines)


def test_study_url_is_the_studys_page_under_the_base_address():
    assert dashboard.study_url("http://127.0.0.1:8080/", 3) == "http://127.0.0.1:8080/dashboard/studies/3"
    assert dashboard.study_url("https://ci.example/optuna", 1) == "https://ci.example/optuna/dashboard/studies/1"
    assert dashboard.study_url("", 1) is None and dashboard.study_url(None, 1) is None


def test_study_carries_goal_strategy_runner_and_the_metric_name(tmp_path):
    study, watch, lines = _run_loop(tmp_path, by_filters({4: [0.6], 8: [0.85]}))
    # "created" (with repository, commit and data where known) is what a later study finds it by (learn.py).
    assert {k: v for k, v in study.user_attrs.items() if k != "created"} == {
        "goal": 0.8, "metric": "val_accuracy", "direction": "maximize", "strategy": "escalate", "runner": "fake"}
    assert study.metric_names == ["val_accuracy"]
    assert watch == {"study_id": 1, "dashboard_url": "http://127.0.0.1:8080/dashboard/studies/1"}
    study_note = get_note(study)
    assert "val_accuracy >= 0.8" in study_note and "strategy **escalate**" in study_note
    assert not any("not saved" in line for line in lines)


def test_each_trial_note_says_how_it_ended_with_its_code_diff_from_the_baseline(tmp_path):
    study, _, _ = _run_loop(tmp_path, by_filters({4: [0.6], 8: [0.7, 0.85]}))
    baseline, second = _note(study, 0), _note(study, 1)
    assert baseline.startswith("### Trial 0: finished, val_accuracy **0.6000**")
    assert "committed baseline" in baseline and "```diff" not in baseline
    assert second.startswith("### Trial 1: finished, val_accuracy **0.8500**")
    assert "val_accuracy per epoch: 0.7000, 0.8500" in second
    assert "--- trial 0/model.py\n+++ trial 1/model.py" in second
    assert "-    x = layers.Conv2D(4, kernel_size=3" in second and "+    x = layers.Conv2D(8, kernel_size=3" in second


def test_failed_and_pruned_trials_carry_their_reason(tmp_path):
    study, _, _ = _run_loop(tmp_path, by_filters({8: "crash"}), budget={"max_trials": 2, "max_consecutive_failures": 5})
    note = _note(study, 1)
    assert note.startswith("### Trial 1: failed, FAIL")
    assert "Reason: exit status 1: RuntimeError: scripted crash" in note
    assert "+    x = layers.Conv2D(8" in note  # what was tried, even though it failed


def test_a_repeated_draw_points_at_the_trial_it_repeats(tmp_path):
    config, plan, run_dir = _setup(tmp_path, search={"strategy": "random", "seed": 3,
                                                     "space": {"filters": {"type": "categorical", "choices": [4, 8]}}},
                                   budget={"max_trials": 6}, target={"goal": 0.99})
    loop = StudyLoop(config, plan, {"path": "unused.npz"}, FakeRunner(by_filters({})), run_dir,
                     default_storage(run_dir), lambda line: None)
    study, _, _ = loop.run()
    repeats = [t for t in study.trials if t.user_attrs.get("duplicate_of") is not None]
    assert repeats, "the seed draws a repeat within six trials"
    note = _note(study, repeats[0].number)
    assert f"Same parameters as trial {repeats[0].user_attrs['duplicate_of']}" in note and "```diff" not in note


def test_a_note_that_cannot_be_saved_is_one_progress_line_never_the_end_of_the_run(tmp_path, monkeypatch):
    import optuna_dashboard  # pylint: disable=import-outside-toplevel

    def refuse(*_):
        raise RuntimeError("storage refused postgresql://u:hunter22@db/x")
    monkeypatch.setattr(optuna_dashboard, "save_note", refuse)
    study, _, lines = _run_loop(tmp_path, by_filters({4: [0.6], 8: [0.85]}))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    failures = [line for line in lines if "not saved" in line]
    assert len(failures) == 3  # the study's note and both trials'
    assert "trial   1  dashboard note not saved: RuntimeError" in failures[-1]
    assert not any("hunter22" in line for line in lines)


def test_a_diff_holding_a_code_fence_cannot_close_the_notes_fence():
    assert dashboard._fence("a\n```\nb") == "````"  # pylint: disable=protected-access
    assert dashboard._fence("plain") == "```"  # pylint: disable=protected-access


def test_mail_gives_the_dashboard_address_only_when_there_is_one():
    summary = {"study": "s", "metric": "val_accuracy", "goal": 0.8, "reached": True, "best_value": 0.85,
               "best_params": {"filters": 8}, "best_trial": 1, "n_trials": 2, "stop_reason": "goal reached",
               "runner": "local", "storage": "sqlite:///x", "run_dir": "/r", "searched": ["filters"]}
    _, body = report.message(summary, [], "")
    assert "Dashboard:" not in body
    _, body = report.message(dict(summary, dashboard_url="http://h:8080/dashboard/studies/2"), [], "")
    assert "Run directory: /r\nDashboard: http://h:8080/dashboard/studies/2\n" in body


class _Exit(Exception):
    pass


def test_tune_report_links_the_study_under_the_address_it_is_given(tmp_path, monkeypatch):
    def exit_json(self, **kwargs):
        raise _Exit(kwargs)
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    summary = {"study": "s", "metric": "val_accuracy", "goal": 0.8, "reached": True, "best_value": 0.85,
               "best_params": {"filters": 8}, "best_trial": 1, "n_trials": 0, "stop_reason": "goal reached",
               "runner": "local", "storage": "sqlite:///x", "run_dir": str(tmp_path), "searched": [], "trials": [],
               "study_id": 4, "dashboard_url": None}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with patch_module_args({"run_dir": str(tmp_path), "dashboard_url": "https://ci.example/optuna"}), \
            pytest.raises(_Exit) as caught:
        tune_report.main()
    assert "Dashboard: https://ci.example/optuna/dashboard/studies/4" in caught.value.args[0]["body"]


def test_launcher_filter_removes_the_password_in_every_spelling():
    launcher = _launcher()
    secrets = launcher.secrets_of("postgresql://tuner:p%40ss%2Fw0rd@db:5432/autotune?sslmode=require")
    assert secrets[0] in ("p@ss/w0rd", "p%40ss%2Fw0rd")
    out = io.StringIO()
    stream = launcher.Redacting(out, secrets)
    stream.write("connect postgresql://tuner:p%40ss%2Fw0rd@db/autotune failed for p@ss/w0rd\n")
    assert out.getvalue() == "connect postgresql://tuner:***@db/autotune failed for ***\n"
    assert launcher.secrets_of("redis://h/0?password=hunter22&db=1") == ["hunter22"]
    assert launcher.secrets_of("sqlite:////runs/catsdogs/study.db") == []


def test_launcher_reads_optuna_dashboards_own_config_format(tmp_path):
    config = tmp_path / "d.toml"
    config.write_text('[optuna_dashboard]\nstorage = "sqlite:////x.db"\nhost = "127.0.0.1"\nport = 8081\n'
                      '[autotune]\naccess_log = true\n')
    assert _launcher().load(str(config)) == {"storage": "sqlite:////x.db", "host": "127.0.0.1", "port": 8081,
                                             "access_log": True, "read_only": True}


def test_role_pins_the_same_versions_as_requirements():
    defaults = yaml.safe_load((REPO / "roles" / "dashboard" / "defaults" / "main.yml").read_text())
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.lower()] = version
    for package in defaults["dashboard_packages"]:
        name, version = package.split("==", 1)
        assert pins.get(name.lower()) == version, f"{package} differs from requirements.txt"
