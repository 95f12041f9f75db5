"""The result always reaches a person: mail retries, the .eml fallback, re-sending, word of failures, chat.

Real parts only: aiosmtpd as the SMTP server (started late, or not at all), real git repositories, a real
HTTP server for the chat webhook, and the run folder of the shared tuning run (copied, never trained again).
"""
import email
import email.policy
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from conftest import BIN, REPO, SAMPLE_DATA, copy_run, run_playbook
from test_mail import PASSWORD, USER, Inbox, free_port, smtp_server, start_smtp  # noqa: F401 - smtp_server is a fixture

WEBHOOK_SECRET, CHAT_TOKEN = "hooks-S3cretPath-never-printed", "chat-T0ken-never-printed"
FAST = {"autotune_mail_retry_delays": [2, 2]}  # three tries, two seconds apart (the default is [5, 15, 40])


def _smtp_env():
    return {"AUTOTUNE_SMTP_HOST": "127.0.0.1", "AUTOTUNE_SMTP_USERNAME": USER, "AUTOTUNE_SMTP_PASSWORD": PASSWORD}


def _copied_run(tuned_run, tmp_path):
    """The shared tuning run, copied with its study, so resuming it here trains nothing new."""
    assert tuned_run["process"].returncode == 0, tuned_run["process"].stdout[-2000:]
    run_dir = copy_run(tuned_run["run_dir"], tmp_path / "runs" / "catsdogs")
    for name in ("result.eml", "result.delivery.json"):
        (run_dir / name).unlink(missing_ok=True)
    extra = {"autotune_config": str(tuned_run["config"]), "autotune_runs_root": str(tmp_path / "runs"),
             "autotune_mail_to": ["alice@example.com"]}
    return run_dir, extra


def _trial_dirs(run_dir):
    return sorted(p.name for p in (run_dir / "trials").iterdir())


def _no_secret_anywhere(output, folder, secrets=(PASSWORD,)):
    for secret in secrets:
        assert secret not in output
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix not in (".keras", ".npz", ".db"):
                assert secret.encode() not in path.read_bytes(), path


def _play_starting_smtp_after_first_failure(extra, env, inbox, port):
    """Run tune.yml, streaming its output; start the SMTP server once the first try has been refused."""
    command = [str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"), "-e", json.dumps(extra), "-vvv"]
    full_env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
                    ANSIBLE_NOCOLOR="1", **env)
    lines, controller, refused_at = [], None, None
    with subprocess.Popen(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        for line in process.stdout:
            lines.append(line)
            if controller is None and f"Mail try 1 via 127.0.0.1:{port} failed" in line:
                refused_at, controller = time.time(), start_smtp(inbox, port)
        process.wait(timeout=600)
    if controller:
        controller.stop()
    return process.returncode, "".join(lines), refused_at


def test_mail_retries_until_the_server_is_up_and_arrives_once(tuned_run, tmp_path):
    run_dir, extra = _copied_run(tuned_run, tmp_path)
    trials = _trial_dirs(run_dir)
    inbox, port = Inbox(), free_port()
    started = time.time()
    code, output, refused_at = _play_starting_smtp_after_first_failure(
        dict(extra, autotune_smtp_port=port, **FAST), _smtp_env(), inbox, port)
    assert code == 0, output[-3000:]
    assert refused_at, "the first try met a server that was down"
    assert len(inbox.messages) == 1 and inbox.logins == [True]
    delivered = time.time() - refused_at
    assert "Mail try 2 via" not in output, "the second try went through"
    record = json.loads((run_dir / "result.delivery.json").read_text())
    assert record["delivered"] is True and record["tries"] == 2 and record["server"] == f"127.0.0.1:{port}"
    message = email.message_from_bytes(inbox.messages[0][1], policy=email.policy.default)
    assert message["Subject"] == record["subject"] and "goal 0.8 reached" in message["Subject"]
    assert _trial_dirs(run_dir) == trials, "resuming a study that reached its goal trains no new trial"
    _no_secret_anywhere(output, run_dir)
    print(f"\nfirst try refused; delivered {delivered:.1f} s later (retry delay 2 s); play {time.time() - started:.1f} s")


def test_server_down_keeps_the_message_and_a_rerun_delivers_it_once(tuned_run, tmp_path):
    run_dir, extra = _copied_run(tuned_run, tmp_path)
    trials = _trial_dirs(run_dir)
    port = free_port()
    started = time.time()
    down = run_playbook("tune.yml", dict(extra, autotune_smtp_port=port, **FAST), env=_smtp_env(), verbosity=3)
    down_seconds = time.time() - started
    assert down.returncode != 0
    # Each refused try is shown by Ansible (ignored) and then named by one line of ours; the play ends on one line.
    errors = [line for line in down.stdout.splitlines() if line.startswith("[ERROR]")]
    eml, report = run_dir / "result.eml", run_dir / "report.txt"
    assert errors[-1] == ("[ERROR]: Task failed: Action failed: Result mail not delivered via SMTP server "
                          f"127.0.0.1:{port} after 3 tries: [Errno 111] Connection refused. The message is kept in "
                          f"{eml} and the report in {report}; run the playbook again to send it (nothing is trained again)")
    assert down.stdout.count("...ignoring") == 3 and down.stdout.count(f"via 127.0.0.1:{port} failed") == 3
    # Nothing lost: the whole message (body, diff, plot) is in the .eml; the study and its models are kept.
    kept = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    summary = json.loads((run_dir / "summary.json").read_text())
    body = kept.get_body(("plain",)).get_content()
    assert f"Validation val_accuracy: {summary['best_value']:.4f}" in body and "+++ best/model.py" in body
    assert [part.get_filename() for part in kept.iter_attachments()] == ["accuracy_per_trial.png", "trials.csv"]
    assert kept["To"] == "alice@example.com" and kept["Subject"] in report.read_text()
    assert (run_dir / "best_model.keras").exists() and (run_dir / "study.db").exists()
    assert json.loads((run_dir / "result.delivery.json").read_text())["delivered"] is False

    inbox = Inbox()
    controller = start_smtp(inbox, port)
    try:
        again = run_playbook("tune.yml", dict(extra, autotune_smtp_port=port, **FAST), env=_smtp_env(), verbosity=3)
    finally:
        controller.stop()
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Sending the result that was not delivered on" in again.stdout
    assert len(inbox.messages) == 1 and inbox.logins == [True]
    sent = email.message_from_bytes(inbox.messages[0][1], policy=email.policy.default)
    assert sent.get_body(("plain",)).get_content().startswith("This message was not delivered on")
    assert json.loads((run_dir / "result.delivery.json").read_text())["delivered"] is True
    assert json.loads((run_dir / "summary.json").read_text())["new_trials"] == 0
    assert _trial_dirs(run_dir) == trials, "the re-run trained no new trial"
    _no_secret_anywhere(down.stdout + again.stdout, run_dir)
    print(f"\nserver down: failed after 3 tries in {down_seconds:.1f} s (delays 2 s, 2 s)")


def test_a_missed_goal_is_mailed_too(tuned_run, tmp_path, smtp_server):
    inbox, port = smtp_server
    run_dir, extra = _copied_run(tuned_run, tmp_path)
    n_trials = json.loads((run_dir / "summary.json").read_text())["n_trials"]
    overrides = {"target": {"goal": 0.999}, "budget": {"max_trials": n_trials}}
    missed = run_playbook("tune.yml", dict(extra, autotune_smtp_port=port, autotune_overrides=overrides),
                          env=_smtp_env())
    assert missed.returncode != 0 and "Goal not reached" in missed.stdout
    assert len(inbox.messages) == 1
    message = email.message_from_bytes(inbox.messages[0][1], policy=email.policy.default)
    assert "goal 0.999 NOT reached" in message["Subject"]
    assert "trial budget spent" in message.get_body(("plain",)).get_content()


def _pushed_repo(tmp_path, config):
    bare, work = tmp_path / "model.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    (work / "autotune.yml").write_text(yaml.safe_dump(config))
    git = ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com"]
    subprocess.run(git + ["add", "autotune.yml"], cwd=work, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "Model"], cwd=work, check=True)
    subprocess.run(git + ["push", "-q", "origin", "HEAD:main"], cwd=work, check=True)
    return bare, subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()


def _pipeline_vars(tmp_path, bare, sha, **more):
    return dict({"autotune_repo": str(bare), "autotune_commit": sha, "autotune_runs_root": str(tmp_path / "runs"),
                 "autotune_workspaces": str(tmp_path / "ws")}, **more)


def test_invalid_config_pushed_sends_a_failure_mail_naming_the_reason(tmp_path, smtp_server):
    inbox, port = smtp_server
    config = {"dataset": {"path": str(SAMPLE_DATA)}, "model": {"template": "cnn"}, "target": {"goal": 1.5},
              "notify": {"to": ["ml-team@example.com"], "pusher": True}}
    bare, sha = _pushed_repo(tmp_path, config)
    process = run_playbook("pipeline.yml", _pipeline_vars(tmp_path, bare, sha, autotune_smtp_port=port, **FAST),
                           env=_smtp_env(), verbosity=3)
    assert process.returncode != 0
    assert "Tune until the goal" not in process.stdout, "nothing was trained"
    assert len(inbox.messages) == 1
    recipients, raw = inbox.messages[0]
    # The pushed configuration's recipients, read though it is invalid, and (notify.pusher) the commit's author.
    assert sorted(recipients) == ["dev@example.com", "ml-team@example.com"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    reason = "target.goal: 1.5 is invalid; expected a number between 0 and 1"
    assert "FAILED before tuning at 'Read the model's facts'" in message["Subject"]
    assert reason in message["Subject"]
    body = message.get_body(("plain",)).get_content()
    assert f"Commit: {sha}" in body and f"Repository: {bare}" in body and reason in body
    # Ansible shows the failed step's own error (rescued), then the play ends on one line with the reason.
    errors = [line for line in process.stdout.splitlines() if line.startswith("[ERROR]")]
    assert errors[-1] == ("[ERROR]: Task failed: Action failed: Failed before tuning at 'Read the model's facts': "
                          f"autotune.yml is invalid: {reason} (word mailed to ml-team@example.com, dev@example.com)")
    run_dir = tmp_path / "runs" / f"model-{sha[:7]}"
    assert json.loads((run_dir / "failure.delivery.json").read_text())["delivered"] is True
    _no_secret_anywhere(process.stdout, tmp_path / "runs")


def test_a_sender_with_crlf_in_an_invalid_config_is_one_line_and_the_failure_mail_still_goes_out(tmp_path, smtp_server):
    """Issue 20 row 9: tune_report crashed ("Header values may not contain linefeed"): no failure.eml, no mail."""
    inbox, port = smtp_server
    config = {"dataset": {"path": str(SAMPLE_DATA)}, "model": {"template": "cnn"},
              "notify": {"to": ["ml-team@example.com"], "sender": "ci@example.com\r\nBcc: victim@example.com"}}
    bare, sha = _pushed_repo(tmp_path, config)
    process = run_playbook("pipeline.yml", _pipeline_vars(tmp_path, bare, sha, autotune_smtp_port=port, **FAST),
                           env=_smtp_env())
    assert process.returncode != 0 and "Tune until the goal" not in process.stdout
    reason = "notify.sender: 'ci@example.com\\r\\nBcc: victim@example.com' is invalid; expected an e-mail address"
    errors = [line for line in process.stdout.splitlines() if line.startswith("[ERROR]")]
    assert reason in errors[-1] and "Header values may not contain" not in process.stdout
    assert [recipients for recipients, _ in inbox.messages] == [["ml-team@example.com"]], "no Bcc to the victim"
    eml = tmp_path / "runs" / f"model-{sha[:7]}" / "failure.eml"
    for raw in (inbox.messages[0][1], eml.read_bytes()):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert (message["From"], message["Bcc"]) == ("autotune@localhost", None)
        assert not any(line.startswith("Bcc:") for line in message.get_body(("plain",)).get_content().splitlines())


class Webhook(BaseHTTPRequestHandler):
    calls = []

    def do_POST(self):  # noqa: N802 - http.server's hook name
        length = int(self.headers.get("Content-Length", 0))
        Webhook.calls.append({"path": self.path, "auth": self.headers.get("Authorization"),
                              "body": json.loads(self.rfile.read(length).decode())})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        """Quiet."""


@pytest.fixture()
def webhook():
    Webhook.calls = []
    server = HTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{WEBHOOK_SECRET}", Webhook.calls
    server.shutdown()


def test_failed_checkout_posts_to_the_chat_and_keeps_the_mail_without_smtp(tmp_path, webhook):
    url, calls = webhook
    bare, _ = _pushed_repo(tmp_path, {"model": {"template": "cnn"}})
    missing = "0123456789abcdef0123456789abcdef01234567"
    env = {"AUTOTUNE_CHAT_WEBHOOK": url, "AUTOTUNE_CHAT_TOKEN": CHAT_TOKEN}
    process = run_playbook("pipeline.yml", _pipeline_vars(tmp_path, bare, missing, autotune_mail_to=["dev@example.com"],
                                                          autotune_runs_url="https://ci.example.com/runs/"),
                           env=env, verbosity=3)
    assert process.returncode != 0
    last = [line for line in process.stdout.splitlines() if line.startswith("[ERROR]")][-1]
    assert "Failed before tuning at 'Check out the pushed commit into its own workspace'" in last
    eml = tmp_path / "runs" / f"model-{missing[:7]}" / "failure.eml"
    assert f"word written to {eml}" in last
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "dev@example.com" and "FAILED before tuning" in message["Subject"]
    assert len(calls) == 1
    call = calls[0]
    assert call["path"] == f"/{WEBHOOK_SECRET}" and call["auth"] == f"Bearer {CHAT_TOKEN}"
    assert call["body"]["text"] == f"{message['Subject']} https://ci.example.com/runs/model-{missing[:7]}"
    _no_secret_anywhere(process.stdout, tmp_path / "runs", secrets=(WEBHOOK_SECRET, CHAT_TOKEN))


def test_a_study_that_stops_on_an_error_mid_run_still_sends_word(tuned_run, tmp_path, smtp_server):
    """The study's storage is lost while a trial trains (the study deleted under it): the play fails with one line,
    and the recipients get word of it, with what was kept and how to resume (issue 24 item 4)."""
    import optuna  # pylint: disable=import-outside-toplevel
    inbox, port = smtp_server
    run_dir, extra = _copied_run(tuned_run, tmp_path)
    n_trials = json.loads((run_dir / "summary.json").read_text())["n_trials"]
    overrides = {"target": {"goal": 0.999}, "budget": {"max_trials": n_trials + 4}}
    command = [str(BIN / "ansible-playbook"), str(REPO / "playbooks" / "tune.yml"), "-e",
               json.dumps(dict(extra, autotune_smtp_port=port, autotune_overrides=overrides, **FAST))]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_NOCOLOR="1", **_smtp_env())
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        metrics = run_dir / "trials" / f"{n_trials:04d}" / "metrics.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None and not metrics.exists():
            time.sleep(0.1)
        optuna.delete_study(study_name="catsdogs", storage=f"sqlite:///{run_dir / 'study.db'}")
        output = process.communicate(timeout=600)[0]
    assert process.returncode != 0
    errors = [line for line in output.splitlines() if line.startswith("[ERROR]")]
    assert errors[-1].startswith("[ERROR]: Task failed: Action failed: Failed while tuning at 'Tune until the goal "
                                 "is reached or the budget is spent': the study stopped while tuning ("), errors
    assert errors[-1].endswith("(word mailed to alice@example.com)"), errors[-1]
    assert len(inbox.messages) == 1
    message = email.message_from_bytes(inbox.messages[0][1], policy=email.policy.default)
    assert message["Subject"].startswith("[autotune] catsdogs: FAILED while tuning at 'Tune until the goal")
    body = message.get_body(("plain",)).get_content()
    assert f"Kept: {len(_trial_dirs(run_dir))} trial folder(s) in {run_dir / 'trials'}" in body
    assert len(_trial_dirs(run_dir)) > n_trials, "the new trials' folders are kept too"
    assert "Last trial recorded: " in body and "To resume, fix the cause and run the same command again" in body
    assert (run_dir / "failure.eml").is_file() and (run_dir / "best_model.keras").is_file(), "nothing finished is lost"
    assert subprocess.run(["pgrep", "-f", f"autotune_trainer.*{run_dir}"], capture_output=True,
                          check=False).stdout == b"", "no trainer outlives the failed study"
