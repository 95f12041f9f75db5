"""The result mail through a real SMTP server (aiosmtpd) with authentication; the password never shows."""
import email
import email.policy
import json
import socket

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import run_playbook

USER, PASSWORD = "autotune", "s3cret-Pa55-never-printed"


class Inbox:
    def __init__(self):
        self.messages, self.logins = [], []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.rcpt_tos, envelope.original_content))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        self.logins.append(ok)
        return AuthResult(success=ok)


def free_port():
    """A loopback port nobody listens on (connecting to it is refused until a server starts there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_smtp(inbox, port):
    """A real SMTP server (aiosmtpd) on 127.0.0.1:port that requires the test login; call .stop() when done."""
    # Plain-text AUTH is fine on loopback in a test; aiosmtpd warns about it, so say so once here.
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    return controller


@pytest.fixture()
def smtp_server():
    inbox, port = Inbox(), free_port()
    controller = start_smtp(inbox, port)
    yield inbox, port
    controller.stop()


def test_result_is_mailed_with_plot_and_password_stays_secret(tuned_run, smtp_server):
    inbox, port = smtp_server
    extra = {"autotune_config": str(tuned_run["config"]), "autotune_runs_root": str(tuned_run["work"] / "runs"),
             "autotune_smtp_port": port, "autotune_mail_to": ["alice@example.com", "bob@example.com"]}
    env = {"AUTOTUNE_SMTP_HOST": "127.0.0.1", "AUTOTUNE_SMTP_USERNAME": USER, "AUTOTUNE_SMTP_PASSWORD": PASSWORD}
    process = run_playbook("tune.yml", extra, env=env, verbosity=3)
    assert process.returncode == 0, process.stdout[-3000:]
    assert inbox.logins == [True]
    assert len(inbox.messages) == 1
    recipients, raw = inbox.messages[0]
    assert sorted(recipients) == ["alice@example.com", "bob@example.com"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    summary = json.loads((tuned_run["run_dir"] / "summary.json").read_text())
    assert message["Subject"] == (f"[autotune] catsdogs: goal 0.8 reached (held-out test "
                                  f"{summary['best_test_value']:.4f}, val_accuracy {summary['best_value']:.4f}, "
                                  f"after {summary['n_trials']} trials)")
    body = message.get_body(("plain",)).get_content()
    # Both figures, each named: the held-out one is the headline, with its size and standard error.
    assert (f"Held-out test accuracy: {summary['best_test_value']:.4f} ± {summary['test']['standard_error']:.3f} "
            f"on {summary['test']['n']} images") in body
    assert f"Validation val_accuracy: {summary['best_value']:.4f}" in body
    assert f"Best trial: {summary['best_trial']};" in body
    assert f"filters: {summary['best_params']['filters']}" in body
    assert body.count("finished") >= summary["n_completed"]
    attachments = list(message.iter_attachments())
    assert [part.get_filename() for part in attachments] == ["accuracy_per_trial.png", "trials.csv"]
    assert attachments[0].get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    table = attachments[1].get_payload(decode=True).decode()  # community.general.mail sends it as a file, any type
    assert table == (tuned_run["run_dir"] / "trials.csv").read_text() and len(table.splitlines()) == summary["n_trials"] + 1
    # The secret: not in the (very verbose) output, not in any file of the run, not in the command line.
    assert PASSWORD not in process.stdout
    assert PASSWORD not in " ".join(process.args)
    for path in tuned_run["run_dir"].rglob("*"):
        if path.is_file() and path.suffix not in (".keras", ".npz", ".db"):
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert not (tuned_run["run_dir"] / "result.eml").read_bytes().count(PASSWORD.encode())


def test_wrong_password_fails_without_showing_it(tuned_run, smtp_server):
    inbox, port = smtp_server
    wrong = "wrong-Pa55-also-secret"
    extra = {"autotune_config": str(tuned_run["config"]), "autotune_runs_root": str(tuned_run["work"] / "runs"),
             "autotune_smtp_port": port}
    env = {"AUTOTUNE_SMTP_HOST": "127.0.0.1", "AUTOTUNE_SMTP_USERNAME": USER, "AUTOTUNE_SMTP_PASSWORD": wrong}
    process = run_playbook("tune.yml", extra, env=env)
    assert process.returncode != 0
    assert inbox.messages == [] and inbox.logins == [False]
    assert "Authentication" in process.stdout or "authenticat" in process.stdout.lower()
    assert wrong not in process.stdout
