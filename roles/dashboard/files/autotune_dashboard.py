"""Serve optuna-dashboard for one study storage, read-only (role dashboard, and `make dashboard`).

Usage: python autotune_dashboard.py CONFIG.toml
       python autotune_dashboard.py --storage URL [--host HOST] [--port PORT] [--access-log]

CONFIG.toml is optuna-dashboard's own --from-config format ([optuna_dashboard] storage, host,
port) plus an [autotune] section (access_log, read_only). The role writes it with mode 0600, so the
storage URL, which may hold a database password, is never on a command line (the process list);
--storage is for a URL without one (a run folder's SQLite) and refuses a password. Every
line this process writes (startup, request log, a traceback of a failed connection) goes through
a filter that replaces the password, so it never reaches the log either.

Read-only unless read_only = false: optuna-dashboard has no login, and its API renames and deletes
studies, tells trials and edits notes for whoever reaches the port (another user of the host, on
loopback). Every method but GET and HEAD is answered 405 before optuna-dashboard sees it; every
route of optuna-dashboard 0.21 that changes the storage is a POST, PUT or DELETE. The tuning run
writes its notes into the storage itself (optuna_dashboard.save_note), so they still show.

Standard library plus optuna_dashboard's public API (wsgi()), served like optuna-dashboard's own
CLI does (wsgiref, one thread per request). This file must stay importable without optuna-dashboard:
the unit tests import it to check the filter.
"""
import argparse
import re
import sys
import tomllib
from socketserver import ThreadingMixIn
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

MASK = "***"
SECRET_KEYS = re.compile(r"^(password|passwd|pwd|secret|token|key)$", re.IGNORECASE)


def secrets_of(url):
    """The strings of a storage URL that must never be written: its password (user-info or a query
    parameter such as ?password=), as written and %-decoded and %-encoded; longest first."""
    found = set()
    try:
        parts = urlsplit(url)
        if parts.password:
            found.add(parts.password)
        found.update(value for key, value in parse_qsl(parts.query, keep_blank_values=False)
                     if SECRET_KEYS.match(key))
    except ValueError:  # not a URL urlsplit can read (e.g. a bad port): fall back on the user-info pattern
        match = re.match(r"^[^:/]+://[^:/@]*:([^@]*)@", url)
        if match:
            found.add(match.group(1))
    variants = set()
    for secret in found:
        variants.update({secret, unquote(secret), quote(unquote(secret), safe="")})
    return sorted((s for s in variants if s), key=len, reverse=True)


def redact(text, secrets):
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class Redacting:
    """A text stream that writes everything through redact()."""

    def __init__(self, stream, secrets):
        self._stream, self._secrets = stream, secrets

    def write(self, text):
        return self._stream.write(redact(text, self._secrets))

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


class ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """No line per request (the page polls every few seconds); errors are still logged."""

    def log_request(self, code="-", size="-"):
        pass


READ_METHODS = ("GET", "HEAD")
REFUSAL = (b'{"reason": "this dashboard is read-only: studies change through the tuning run, not here '
           b'(docs/dashboard.md)"}')


def read_only(app):
    """``app`` answering 405 to every method but GET and HEAD, whatever the path: nothing reaches the storage."""

    def guarded(environ, start_response):
        if str(environ.get("REQUEST_METHOD", "GET")).upper() in READ_METHODS:
            return app(environ, start_response)
        start_response("405 Method Not Allowed", [("Content-Type", "application/json"), ("Allow", ", ".join(READ_METHODS)),
                                                  ("Content-Length", str(len(REFUSAL)))])
        return [REFUSAL]
    return guarded


def load(path):
    with open(path, "rb") as handle:
        document = tomllib.load(handle)
    settings = dict(document.get("optuna_dashboard", {}))
    ours = document.get("autotune", {})
    settings.update(access_log=bool(ours.get("access_log", False)), read_only=ours.get("read_only", True) is not False)
    return settings


def settings_of(argv):
    """(settings, where they came from) from CONFIG.toml or --storage/--host/--port; raises SystemExit on misuse."""
    if len(argv) == 2 and not argv[1].startswith("-"):
        return load(argv[1]), argv[1]
    parser = argparse.ArgumentParser(prog=argv[0], description="Serve optuna-dashboard read-only.")
    parser.add_argument("--storage", required=True, help="an Optuna storage URL without a password")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv[1:])
    if secrets_of(args.storage):
        parser.error("--storage holds a password, which the process list shows to every user; expected it in "
                     "CONFIG.toml (mode 0600), as roles/dashboard writes it")
    return {"storage": args.storage, "host": args.host, "port": args.port, "access_log": args.access_log,
            "read_only": True}, "--storage"


def main(argv):
    settings, source = settings_of(argv)
    storage = settings.get("storage")
    if not storage:
        print(f"{source}: [optuna_dashboard] storage is missing; expected an Optuna storage URL", file=sys.stderr)
        return 2
    secrets = secrets_of(storage)
    # Before optuna is imported, so every handler and warning it sets up writes through the filter.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    sys.stdout = Redacting(sys.stdout, secrets)
    sys.stderr = Redacting(sys.stderr, secrets)

    import optuna_dashboard  # pylint: disable=import-outside-toplevel

    host, port = str(settings.get("host", "127.0.0.1")), int(settings.get("port", 8080))
    app = optuna_dashboard.wsgi(storage)
    if settings["read_only"]:
        app = read_only(app)
    handler = WSGIRequestHandler if settings["access_log"] else QuietHandler
    server = make_server(host, port, app, server_class=ThreadedServer, handler_class=handler)
    print(f"optuna-dashboard {optuna_dashboard.__version__} serving {redact(storage, secrets)} "
          f"on http://{host}:{port}/dashboard{' read-only' if settings['read_only'] else ' (read-write)'}",
          file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
