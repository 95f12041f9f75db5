"""git push -> post-receive hook -> pipeline -> mail + autotune/<short-sha>, with real git, real SMTP, real training."""
import email
import email.policy
import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import BIN, REPO, SAMPLE_DATA, run_playbook

PASSWORD, TOKEN = "smtp-Pa55-in-vault", "jenkins-T0ken-in-vault"


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(envelope.original_content)
        return "250 OK"

    @staticmethod
    def authenticate(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=auth_data.login == b"autotune" and auth_data.password == PASSWORD.encode())


def _git(*args, cwd):
    return subprocess.run(["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)


def _install(tmp_path, **role_vars):
    bare = tmp_path / "model.git"
    common = {"git_trigger_repo_path": str(bare), "git_trigger_project_dir": str(REPO),
              "git_trigger_ansible_playbook": str(BIN / "ansible-playbook"),
              "git_trigger_log_dir": str(tmp_path / "pipelines"),
              "git_trigger_extra_vars": {"autotune_runs_root": str(tmp_path / "runs"),
                                         "autotune_workspaces": str(tmp_path / "workspaces")}}
    common.update(role_vars)
    installed = run_playbook("tests/playbooks/git_trigger.yml", common)
    assert installed.returncode == 0, installed.stdout[-3000:]
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    _git("checkout", "-q", "-b", "main", cwd=work)
    config = {"dataset": {"path": str(SAMPLE_DATA)},
              "model": {"template": "cnn", "baseline": {"blocks": 1, "filters": 8, "epochs": 3, "dense_units": 32}},
              "target": {"goal": 0.8},
              "search": {"space": {"filters": {"type": "int", "low": 4, "high": 32, "log": True},
                                   "epochs": {"type": "int", "low": 1, "high": 4},
                                   "blocks": {"type": "int", "low": 1, "high": 2}}},
              "budget": {"max_trials": 8}, "notify": {"to": ["ml-team@example.com"], "pusher": True}}
    (work / "autotune.yml").write_text(yaml.safe_dump(config))
    _git("add", "autotune.yml", cwd=work)
    _git("commit", "-q", "-m", "Baseline model", cwd=work)
    return bare, work


def _wait(predicate, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_push_runs_the_pipeline_and_mails_the_commit_diff(tmp_path, sample_data):
    inbox, port = Inbox(), _free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=Inbox.authenticate,
                      auth_required=True, auth_require_tls=False)
    smtp.start()
    try:
        bare, work = _install(tmp_path, git_trigger_env={"AUTOTUNE_SMTP_HOST": "127.0.0.1",
                                                         "AUTOTUNE_SMTP_USERNAME": "autotune"},
                              git_trigger_secret_env={"AUTOTUNE_SMTP_PASSWORD": PASSWORD},
                              git_trigger_extra_vars={"autotune_runs_root": str(tmp_path / "runs"),
                                                      "autotune_workspaces": str(tmp_path / "workspaces"),
                                                      "autotune_smtp_port": port})
        secret = bare / "hooks" / "autotune-trigger.secret"
        assert oct(secret.stat().st_mode)[-3:] == "600"
        assert PASSWORD not in (bare / "hooks" / "post-receive").read_text()
        sha = _git("rev-parse", "HEAD", cwd=work).stdout.strip()
        started = time.time()
        pushed = _git("push", "origin", "main", cwd=work)
        push_seconds = time.time() - started
        assert push_seconds < 5, "the push returns at once"
        assert f"pipeline for {sha[:7]} started" in pushed.stderr
        # A second trigger for the same commit while the first runs starts nothing.
        again = subprocess.run([str(bare / "hooks" / "post-receive")], input=f"{'0' * 40} {sha} refs/heads/main\n",
                               capture_output=True, text=True, cwd=bare, check=True)
        assert "already running; not starting another" in again.stdout
        first = tmp_path / "runs" / f"model-{sha[:7]}" / "trials" / "0000" / "trial.json"
        assert _wait(first.exists, 300)
        first_trial = time.time() - started
        log = tmp_path / "pipelines" / f"{sha}.log"
        assert _wait(lambda: inbox.messages or "PLAY RECAP" in log.read_text(), 600)
        assert inbox.messages, log.read_text()[-3000:]
        mail_seconds = time.time() - started
    finally:
        smtp.stop()
    branch = f"autotune/{sha[:7]}"
    refs = subprocess.run(["git", "-C", str(bare), "branch", "--list", "autotune/*"], capture_output=True, text=True).stdout
    assert branch in refs
    diff = subprocess.run(["git", "-C", str(bare), "diff", sha, branch], capture_output=True, text=True).stdout
    assert "+++ b/model.py" in diff and "+++ b/autotune-result.json" in diff
    message = email.message_from_bytes(inbox.messages[0], policy=email.policy.default)
    body = message.get_body(("plain",)).get_content()
    assert diff.strip() in body, "the mail shows the result commit's diff"
    # notify.pusher: the pushed commit's author (dev@example.com, _git) hears of it too.
    assert "reached" in message["Subject"] and message["To"] == "ml-team@example.com, dev@example.com"
    result = json.loads(subprocess.run(["git", "-C", str(bare), "show", f"{branch}:autotune-result.json"],
                                       capture_output=True, text=True).stdout)
    assert result["commit"] == sha and result["reached"] is True and float(result["best_test_value"]) >= 0.8 - 1e-6
    subject = subprocess.run(["git", "-C", str(bare), "log", "-1", "--format=%B", branch], capture_output=True,
                             text=True).stdout
    assert subject.startswith("autotune: held-out test accuracy ") and "Validation val_accuracy: " in subject
    log = (tmp_path / "pipelines" / f"{sha}.log").read_text()
    assert PASSWORD not in log and PASSWORD not in body
    print(f"\npush returned in {push_seconds:.2f} s; first trial started {first_trial:.1f} s after the push; "
          f"mail {mail_seconds:.1f} s after the push")


def test_other_branches_tags_and_deletions_start_nothing(tmp_path):
    bare, work = _install(tmp_path)
    _git("checkout", "-q", "-b", "feature", cwd=work)
    _git("push", "-q", "origin", "feature", cwd=work)
    _git("tag", "v1", cwd=work)
    _git("push", "-q", "origin", "v1", cwd=work)
    _git("push", "-q", "origin", "--delete", "feature", cwd=work)
    time.sleep(2)
    assert not (tmp_path / "pipelines").exists() or list((tmp_path / "pipelines").iterdir()) == []


class Recorder(BaseHTTPRequestHandler):
    calls = []

    def do_POST(self):  # noqa: N802 - http.server's hook name
        length = int(self.headers.get("Content-Length", 0))
        Recorder.calls.append({"method": "POST", "path": self.path, "auth": self.headers.get("Authorization"),
                               "type": self.headers.get("Content-Type"),
                               "body": json.loads(self.rfile.read(length).decode())})
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        """Quiet."""


def test_push_with_jenkins_configured_calls_the_webhook_trigger(tmp_path):
    """Jenkins itself cannot run here: a local HTTP endpoint records what the hook sends (docs/jenkins.md)."""
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        bare, work = _install(tmp_path, git_trigger_jenkins_url=f"http://127.0.0.1:{server.server_port}",
                              git_trigger_jenkins_token=TOKEN,
                              git_trigger_repo_url="https://git.example.com/model.git")
        sha = _git("rev-parse", "HEAD", cwd=work).stdout.strip()
        pushed = _git("push", "origin", "main", cwd=work)
    finally:
        server.shutdown()
    assert "Jenkins build of" in pushed.stderr and TOKEN not in pushed.stderr
    assert len(Recorder.calls) == 1
    call = Recorder.calls[0]
    assert call["method"] == "POST" and call["path"] == "/generic-webhook-trigger/invoke" and TOKEN not in call["path"]
    assert call["type"] == "application/json"
    assert call["body"] == {"repo": "https://git.example.com/model.git", "commit": sha, "branch": "refs/heads/main"}
    assert call["auth"] == f"Bearer {TOKEN}"
    assert TOKEN not in (bare / "hooks" / "post-receive").read_text()
    assert TOKEN not in (bare / "hooks" / "autotune-trigger.json").read_text()
    assert not (tmp_path / "pipelines").exists() or not list((tmp_path / "pipelines").glob("*.log"))
