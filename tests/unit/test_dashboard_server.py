"""The dashboard launcher's read-only guard (roles/dashboard/files/autotune_dashboard.py), without a server:
issue 20, item 7. The real server, asked by another local user, is tests/integration/test_dashboard.py."""
import importlib.util

import pytest

from conftest import REPO

LAUNCHER = REPO / "roles" / "dashboard" / "files" / "autotune_dashboard.py"


def _launcher():
    spec = importlib.util.spec_from_file_location("autotune_dashboard_server", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(app, method):
    answered = {}

    def start_response(status, headers):
        answered.update(status=status, headers=dict(headers))

    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": "/api/studies/1"}, start_response))
    return answered, body


def test_every_method_but_get_and_head_is_refused_before_optuna_dashboard_sees_it():
    reached = []

    def dashboard(environ, start_response):
        reached.append(environ["REQUEST_METHOD"])
        start_response("204 No Content", [])
        return [b""]

    guarded = _launcher().read_only(dashboard)
    for method in ("DELETE", "POST", "PUT", "PATCH", "OPTIONS", "delete", "PROPFIND"):
        answered, body = _call(guarded, method)
        assert answered["status"].startswith("405") and answered["headers"]["Allow"] == "GET, HEAD", method
        assert b"read-only" in body
    assert reached == []
    assert _call(guarded, "GET")[0]["status"] == "204 No Content" and reached == ["GET"]


def test_read_only_is_the_default_and_only_false_turns_it_off(tmp_path):
    launcher = _launcher()
    config = tmp_path / "d.toml"
    config.write_text('[optuna_dashboard]\nstorage = "sqlite:////x.db"\n')
    assert launcher.load(str(config))["read_only"] is True
    config.write_text('[optuna_dashboard]\nstorage = "sqlite:////x.db"\n[autotune]\nread_only = "no"\n')
    assert launcher.load(str(config))["read_only"] is True, "anything but false keeps it read-only"
    config.write_text('[optuna_dashboard]\nstorage = "sqlite:////x.db"\n[autotune]\nread_only = false\n')
    assert launcher.load(str(config))["read_only"] is False


def test_the_command_line_form_serves_read_only_and_refuses_a_password(capsys):
    launcher = _launcher()
    settings, _ = launcher.settings_of(["d", "--storage", "sqlite:////runs/catsdogs/study.db", "--port", "8090"])
    assert settings == {"storage": "sqlite:////runs/catsdogs/study.db", "host": "127.0.0.1", "port": 8090,
                        "access_log": False, "read_only": True}
    with pytest.raises(SystemExit):
        launcher.settings_of(["d", "--storage", "postgresql+psycopg2://u:hunter22@db/autotune"])
    assert "--storage holds a password" in capsys.readouterr().err
