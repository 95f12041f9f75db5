"""Issue 20, row 8 and item 5: names and values the code under test chose are printed escaped everywhere a person
reads them (progress.log and the terminal, report.txt, the mail and its .eml, the dashboard notes)."""
import email
import email.policy
import json
import re
import types

import pytest

import tune_report
from ansible.module_utils.autotune import dashboard, printable, report
from ansible.module_utils.autotune.progress import ProgressLog
from ansible.module_utils.autotune.storage import default_storage
from ansible.module_utils.autotune.study import StudyLoop
from ansible.module_utils.autotune.tune import summarise
from conftest import REPO
from fakes import FakeRunner
from modules_support import raise_on_exit, run_module
from test_study_loop import _setup

# Sets the terminal's title, clears the screen, forges a mail header line and a red progress line.
EVIL = "units\x1b]0;pwned\x07\x1b[2J\r\nBcc: victim@example.com\r\n\x1b[31mFAKE: goal reached\x1b[0m\u202e"
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]")  # every control character but the LF between lines


@pytest.fixture(name="modules")
def _modules(monkeypatch):
    return raise_on_exit(monkeypatch)


def _report(args):
    return run_module(tune_report, args)


def _no_forged_line(text):
    assert not RAW.search(text), repr(text[:300])
    assert not any(line.startswith(("Bcc:", "FAKE", "\x1b")) for line in text.splitlines())


def test_escape_writes_every_control_character_as_an_escape_and_keeps_the_rest():
    assert printable.escape("a\x1b[2J\r\nb\tc\x7f\x9b\u202e\u2028 é✓") == "a\\x1b[2J\\r\\nb\\tc\\x7f\\x9b\\u202e\\u2028 é✓"
    assert printable.escape_lines("one\x1b\ntwo\r") == "one\\x1b\ntwo\\r"
    assert printable.escape(3.5) == "3.5"


def test_the_callback_plugins_own_escape_is_the_shared_one():
    """The plugin may not import module_utils (docs/architecture.md): its copy must escape exactly the same."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("autotune_progress", REPO / "callback_plugins" / "autotune_progress.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    assert plugin.CONTROL.pattern == printable.CONTROL.pattern
    every = "".join(map(chr, range(0x3000)))
    assert plugin.escape(every) == printable.escape(every)


def test_the_callback_plugin_prints_a_raw_line_escaped(monkeypatch, tmp_path):
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("autotune_progress", REPO / "callback_plugins" / "autotune_progress.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    callback = plugin.CallbackModule()
    shown = []
    callback._display = types.SimpleNamespace(display=shown.append)  # pylint: disable=protected-access
    with open(callback._path, "a", encoding="utf-8") as handle:  # pylint: disable=protected-access
        handle.write(f"trial 0 {EVIL.replace(chr(10), '')}=8\n")  # an LF ends a line in the file; the rest is text
    callback.v2_playbook_on_stats(None)
    assert len(shown) == 1 and shown[0].startswith("autotune | trial 0 units\\x1b]0;pwned\\x07")
    assert "\\x1b[2J\\rBcc: victim@example.com\\r\\x1b[31mFAKE" in shown[0]
    _no_forged_line(shown[0])


def _tuned_with_a_hostile_name(tmp_path):
    """A build_model(hp) that names a hyperparameter EVIL at run time; the loop writes progress.log as tune.run does."""
    seen = {EVIL: {"spec": {"type": "categorical", "choices": [8, 16]}, "default": 8}}
    config, plan, run_dir = _setup(tmp_path, search={"strategy": "random"}, budget={"max_trials": 3},
                                   target={"goal": 0.99})
    progress, runner = ProgressLog(run_dir), FakeRunner(lambda params: [0.6], seen=lambda params: seen)
    storage = default_storage(run_dir)
    study, reason, _ = StudyLoop(config, plan, {"path": "unused"}, runner, run_dir, storage, progress).run()
    dataset = {"source": "data", "classes": ["cat", "dog"], "counts": {}, "n_train": 1, "n_val": 1,
               "input_shape": [28, 28, 1], "fingerprint": "f"}
    summary = summarise(config, study, reason, run_dir, storage, runner, dataset, plan)
    summary["progress"] = progress.lines
    report.write_json(f"{run_dir}/summary.json", summary)
    return run_dir, summary, progress


def test_a_hostile_hyperparameter_name_is_escaped_in_progress_report_mail_and_eml(tmp_path, modules):
    run_dir, summary, progress = _tuned_with_a_hostile_name(tmp_path)
    assert any("units\\x1b]0;pwned" in line for line in progress.lines), "the name is shown, escaped"
    for line in progress.lines:
        _no_forged_line(line)
    _no_forged_line(open(f"{run_dir}/progress.log", encoding="utf-8").read())

    done = _report({"run_dir": run_dir, "write_eml": True, "recipients": ["team@example.com"]}).result
    # Not a printable identifier, the name is never registered (space.registered): the mail has no such parameter.
    assert "pwned" not in done["body"] and "Bcc: victim" not in done["body"]
    _no_forged_line(done["subject"])
    _no_forged_line(done["body"])
    _no_forged_line(open(f"{run_dir}/report.txt", encoding="utf-8").read())
    with open(f"{run_dir}/result.eml", "rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    assert message["Bcc"] is None and message["To"] == "team@example.com"
    _no_forged_line(message.get_body(("plain",)).get_content())
    assert json.loads(open(f"{run_dir}/summary.json", encoding="utf-8").read())["best_params"] == summary["best_params"]


def test_a_dashboard_note_escapes_the_reason_and_the_diff(tmp_path):
    trial = types.SimpleNamespace(number=1, value=None, state=types.SimpleNamespace(name="FAIL"),
                                  user_attrs={"outcome": "failed", "reason": f"exit status 1: {EVIL}"})
    baseline = types.SimpleNamespace(number=0, user_attrs={})
    note = dashboard.trial_note(trial, baseline, str(tmp_path), "val_accuracy")
    assert "Reason: exit status 1: units\\x1b]0;pwned" in note
    _no_forged_line(note)


def test_a_failure_mail_escapes_its_reason_step_and_context(tmp_path, modules):
    run_dir = tmp_path / "run"
    done = _report({"run_dir": str(run_dir), "failure": f"model.file: bad {EVIL}", "step": f"Detect {EVIL}",
                    "context": {"commit": EVIL}, "write_eml": True}).result
    _no_forged_line(done["subject"])
    _no_forged_line(done["body"])
    _no_forged_line((run_dir / "failure.txt").read_text())
    message = email.message_from_bytes((run_dir / "failure.eml").read_bytes(), policy=email.policy.default)
    assert message["Bcc"] is None


@pytest.mark.parametrize("sender", ["ci@example.com\r\nBcc: victim@example.com", "ci@example.com\n", "<ci@example.com>",
                                    "Ci <ci@example.com>"])
def test_a_bad_sender_in_an_invalid_config_still_yields_failure_eml(tmp_path, modules, sender):
    """Row 9: tune_report crashed ("Header values may not contain linefeed") and wrote no failure.eml."""
    config = tmp_path / "autotune.yml"
    config.write_text(json.dumps({"notify": {"to": ["team@example.com", "x@y\r\nBcc: z@w"], "sender": sender}}))
    run_dir = tmp_path / "runs" / "model-abc1234"
    done = _report({"run_dir": str(run_dir), "failure": "autotune.yml is invalid: notify.sender: ...",
                    "config": str(config), "write_eml": True}).result
    assert done["sender"] == "autotune@localhost" and done["recipients"] == ["team@example.com"]
    assert len(modules) == 1 and modules[0].startswith("notify: left out 2 invalid e-mail address(es)")
    _no_forged_line(modules[0])
    message = email.message_from_bytes((run_dir / "failure.eml").read_bytes(), policy=email.policy.default)
    assert (message["From"], message["To"], message["Bcc"]) == ("autotune@localhost", "team@example.com", None)


def test_a_bad_address_never_reaches_a_header_of_the_eml(tmp_path):
    with pytest.raises(ValueError):
        report.write_eml(str(tmp_path / "x.eml"), "a@b\r\nBcc: c@d", ["e@f"], "s", "b", [])
    assert not (tmp_path / "x.eml").exists()
    report.write_eml(str(tmp_path / "x.eml"), "a@b", ["e@f"], "subject\r\nBcc: c@d", "body", [])
    message = email.message_from_bytes((tmp_path / "x.eml").read_bytes(), policy=email.policy.default)
    assert message["Bcc"] is None and message["Subject"] == "subject\\r\\nBcc: c@d"
