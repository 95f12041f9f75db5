"""optuna-dashboard served by roles/dashboard, looked at with a real headless Chromium (Debian's package,
driven by Playwright, which downloads no browser of its own).

The storage is a private PostgreSQL instance (initdb into a temporary folder) with a password-protected
role when Debian's postgresql is installed (.ci/run installs it);
without it, SQLite with the password as a ?password= query parameter, which SQLite ignores but which
travels through the very same path (AUTOTUNE_STORAGE -> role -> 0600 file -> launcher). Two studies live
there: "catsdogs", tuned for real by playbooks/tune.yml (three trials, escalate, a goal it cannot reach so
the budget ends it), and "catsdogs-live", written with Optuna directly, whose last trial is still RUNNING.

Checked: the role runs twice with changed=0 the second time; both studies are listed; the trials table
shows every trial with its value; the history chart renders; a trial's note shows its code diff; the
progress header and the mail give the study's page; the password is in no page or API answer, no process's
command line or environment, no log; another local user (nobody) can change nothing through it (issue 20,
row 10: DELETE /api/studies/1 answered 204 and emptied the study). Screenshots land in
$AUTOTUNE_ARTEFACTS/dashboard (default runs/test-artefacts/dashboard).
"""
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from ansible.module_utils.autotune import dashboard as tune_dashboard
from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.modelcode import code_for
from ansible.module_utils.autotune.tune import prepare
from conftest import REPO, TEMPLATES, missing, write_config
from containers_support import explain, recap, require_root

CHROMIUM = "/usr/lib/chromium/chromium"
LAUNCHER = REPO / "roles" / "dashboard" / "files" / "autotune_dashboard.py"
NOBODY_PYTHON = "/usr/bin/python3"  # a Python another user can run (the project's may live under /root)
# What another user tries: every kind of change optuna-dashboard 0.21's API offers, each with a body it accepts.
CHANGES = [("DELETE", "/api/studies/{study}", None),
           ("POST", "/api/studies/{study}/rename", {"study_name": "renamed"}),
           ("PUT", "/api/studies/{study}/note", {"version": 0, "body": "defaced"}),
           ("PUT", "/api/studies/{study}/{trial}/note", {"version": 0, "body": "defaced"}),
           ("POST", "/api/trials/{trial}/tell", {"state": "Fail"}),
           ("POST", "/api/trials/{trial}/user-attrs", {"user_attrs": {"outcome": "forged"}}),
           ("POST", "/api/studies", {"study_name": "planted", "directions": ["maximize"]})]
SERVICE = "autotune-dashboard-test"
CONFIG_FILE = Path("/etc/autotune-dashboard") / f"{SERVICE}.toml"
LOG = Path("/var/log") / f"{SERVICE}.log"
CTL = Path("/usr/local/sbin") / f"{SERVICE}-ctl"
ARTEFACTS = Path(os.environ.get("AUTOTUNE_ARTEFACTS", REPO / "runs" / "test-artefacts")) / "dashboard"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _playbook(playbook, extra_vars_file=None, extra_vars=None, env=None):
    """ansible-playbook with its variables in a file or as non-secret JSON: nothing secret on its command line."""
    command = [str(Path(sys.executable).parent / "ansible-playbook"), playbook]
    if extra_vars_file:
        command += ["-e", f"@{extra_vars_file}"]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    full_env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    full_env.update(env or {})
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=1200, check=False)


def _as_postgres(*command, sql=None):
    return subprocess.run(["runuser", "-u", "postgres", "--", *command], input=sql, capture_output=True, text=True,
                          timeout=180, check=False)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """(url, password, kind): a private PostgreSQL instance with a password-protected role, else SQLite with a
    ?password= parameter. Private (initdb into a temporary folder, its own port): the host's own cluster may be
    someone else's to configure, and is left alone."""
    require_root()
    password = "Dash-" + secrets.token_hex(12)
    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if initdbs and shutil.which("runuser") and subprocess.run(["id", "postgres"], capture_output=True).returncode == 0:
        bindir = initdbs[-1].parent
        folder = Path(tempfile.mkdtemp(prefix="autotune-dash-pg-"))  # not under pytest's root-only tmp folder
        shutil.chown(folder, "postgres", "postgres")
        port = _free_port()
        made = _as_postgres(str(bindir / "initdb"), "-D", f"{folder}/data", "-U", "postgres", "--auth-local=trust",
                            "--auth-host=scram-sha-256")
        assert made.returncode == 0, made.stdout + made.stderr
        started = _as_postgres(str(bindir / "pg_ctl"), "-D", f"{folder}/data", "-l", f"{folder}/server.log", "-w",
                               "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        try:
            name = "dash_" + secrets.token_hex(4)
            created = _as_postgres(str(bindir / "psql"), "-h", str(folder), "-p", str(port), "-U", "postgres",
                                   "-v", "ON_ERROR_STOP=1", "-q", sql=f"CREATE ROLE {name} LOGIN PASSWORD '{password}';\n"
                                   f"CREATE DATABASE {name} OWNER {name};\n")
            assert created.returncode == 0, created.stderr
            # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; the project pins psycopg2-binary.
            yield f"postgresql+psycopg2://{name}:{password}@127.0.0.1:{port}/{name}", password, "postgresql"
        finally:
            _as_postgres(str(bindir / "pg_ctl"), "-D", f"{folder}/data", "-m", "fast", "-w", "stop")
            shutil.rmtree(folder, ignore_errors=True)
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI provisions PostgreSQL (.ci/run installs postgresql), yet no initdb was found", pytrace=False)
    folder = tmp_path_factory.mktemp("sqlite-storage")
    # Not PostgreSQL: the secrecy checks then follow a password SQLite ignores through the same path.
    yield f"sqlite:///{folder}/studies.db?password={password}", password, "sqlite"


@pytest.fixture(scope="module")
def finished(storage, tmp_path_factory, sample_data):
    """The sample study tuned for real through playbooks/tune.yml: three trials, then the budget ends it."""
    url, _, _ = storage
    work = tmp_path_factory.mktemp("dash-tuned")
    config = write_config(work, search={"strategy": "escalate"}, target={"goal": 0.99},
                          budget={"max_trials": 3, "max_seconds": 600, "trial_timeout": 300})
    port = _free_port()
    variables = work / "vars.json"
    variables.touch(mode=0o600)
    variables.write_text(json.dumps({"autotune_config": str(config), "autotune_runs_root": str(work / "runs"),
                                     "autotune_storage": url, "autotune_dashboard_url": f"http://127.0.0.1:{port}"}))
    result = _playbook("playbooks/tune.yml", extra_vars_file=variables)
    run_dir = work / "runs" / "catsdogs"
    assert (run_dir / "summary.json").is_file(), explain(result)
    assert "Goal not reached" in result.stdout, explain(result)  # 0.99 is out of reach in three trials
    return {"result": result, "run_dir": run_dir, "port": port,
            "summary": json.loads((run_dir / "summary.json").read_text())}


@pytest.fixture(scope="module")
def live(storage, finished, tmp_path_factory):
    """A study still running: two told trials with notes, a third RUNNING with one epoch reported."""
    url, _, _ = storage
    work = tmp_path_factory.mktemp("dash-live")
    config, plan, _, _ = prepare(write_config(work, study="catsdogs-live"), str(TEMPLATES))
    study = optuna.create_study(study_name="catsdogs-live", storage=url, direction="maximize")
    for name, value in tune_dashboard.study_attrs(config, "local").items():
        study.set_user_attr(name, value)
    values = {0: [0.70, 0.75], 1: [0.78, 0.81]}
    for number, filters in ((0, 4), (1, 8), (2, 16)):
        params = dict(plan["baseline"], filters=filters)
        trial = study.ask()
        folder = Path(trialdir.trial_path(str(work), number))
        folder.mkdir(parents=True)
        (folder / trialdir.MODEL).write_text(code_for(plan, params, number))
        for name, value in {"params": params, "code": f"trials/{number:04d}/model.py", "run_dir": str(work),
                            "baseline": number == 0}.items():
            trial.set_user_attr(name, value)
        for step, value in enumerate(values.get(number, [0.62])):
            trial.report(value, step)
        if number in values:
            trial.set_user_attr("outcome", "finished")
            study.tell(trial, values[number][-1])
            assert tune_dashboard.annotate_trial(study, trial, str(work), "val_accuracy")
    return {"study": study, "running": 2}


@pytest.fixture(scope="module")
def served(storage, finished, live):
    """The role applied twice against the storage; yields (base URL, first run, second run)."""
    url, _, _ = storage
    role_vars = {"dashboard_service_name": SERVICE, "dashboard_port": finished["port"], "dashboard_access_log": True}
    env = {"AUTOTUNE_STORAGE": url}
    first = _playbook("tests/playbooks/dashboard_role.yml", extra_vars=role_vars, env=env)
    assert first.returncode == 0, explain(first)
    second = _playbook("tests/playbooks/dashboard_role.yml", extra_vars=role_vars, env=env)
    yield f"http://127.0.0.1:{finished['port']}", first, second
    if CTL.exists():
        subprocess.run([str(CTL), "stop"], check=False, timeout=120)
    elif shutil.which("systemctl"):
        subprocess.run(["systemctl", "stop", SERVICE], check=False, timeout=120)
    CONFIG_FILE.unlink(missing_ok=True)  # it holds the password of a role dropped above


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        missing(f"no {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Seen:
    """Every page and API answer the browser got, for the secrecy check."""

    def __init__(self):
        self.texts = []

    def record(self, response):
        try:
            self.texts.append(response.text())
        except Exception:  # pylint: disable=broad-except  # bodies of redirects and aborted requests cannot be read
            pass


@pytest.fixture(scope="module")
def seen():
    return Seen()


@pytest.fixture
def page(browser, served, seen):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.on("response", seen.record)
    page.set_default_timeout(30000)
    yield page
    seen.texts.append(page.content())
    context.close()


def _study_id(name, url):
    return optuna.storages.get_storage(url).get_study_id_from_name(name)


def _shot(page, name):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def _table(page, base, study_id):
    """{number: (state, value text)} from the trials table of the Smart Selection page."""
    page.goto(f"{base}/dashboard/studies/{study_id}/smartSelection")
    page.wait_for_selector("table tbody tr")
    rows = {}
    for row in page.locator("table tbody tr").all():
        cells = row.locator("td").all_inner_texts()
        rows[int(cells[0])] = (cells[1], cells[2])
    return rows


def test_second_role_run_changes_nothing(served):
    _, first, second = served
    assert recap(first)["changed"] > 0, explain(first)
    assert second.returncode == 0, explain(second)
    assert recap(second)["changed"] == 0, explain(second)


def test_both_studies_are_listed(page, served):
    base = served[0]
    page.goto(f"{base}/dashboard")
    page.get_by_text(re.compile(r"^\d+\. catsdogs-live$")).wait_for()  # each study is listed as "<id>. <name>"
    assert page.get_by_text(re.compile(r"^\d+\. catsdogs$")).count() == 1
    _shot(page, "studies")


def test_finished_study_shows_every_trial_its_value_and_the_history(page, served, storage, finished):
    base, url = served[0], storage[0]
    study_id = finished["summary"]["study_id"]
    records = finished["summary"]["trials"]
    assert len(records) == 3
    rows = _table(page, base, study_id)
    assert sorted(rows) == [r["number"] for r in records]
    for record in records:
        state, value = rows[record["number"]]
        assert state == "Complete" and value == repr(record["value"]), rows
    page.goto(f"{base}/dashboard/studies/{study_id}")
    page.locator("#plot-history .scatterlayer .point").first.wait_for()
    assert page.locator("#plot-history .scatterlayer .point").count() >= len(records)
    assert page.get_by_text("val_accuracy", exact=False).count() > 0  # the metric's name, not "Objective 0"
    _shot(page, "finished-study")
    assert _study_id("catsdogs", url) == study_id


def test_a_trials_note_shows_its_diff_from_the_baseline(page, served, finished):
    base, summary = served[0], finished["summary"]
    page.goto(f"{base}/dashboard/studies/{summary['study_id']}/trials?numbers=1")
    diff = page.locator("code.language-diff")
    diff.wait_for()
    text = diff.inner_text()
    assert "--- trial 0/model.py" in text and "+++ trial 1/model.py" in text
    assert any(line.startswith("+") and "Conv2D" in line for line in text.splitlines()), text
    assert page.get_by_text("Trial 1: finished").count() >= 1
    _shot(page, "trial-note")


def test_running_study_shows_its_running_trial_and_history(page, served, storage, live):
    base, url = served[0], storage[0]
    study_id = _study_id("catsdogs-live", url)
    rows = _table(page, base, study_id)
    assert rows[0] == ("Complete", "0.75") and rows[1] == ("Complete", "0.81")
    assert rows[live["running"]][0] == "Running"
    page.goto(f"{base}/dashboard/studies/{study_id}")
    page.locator("#plot-history .scatterlayer .point").first.wait_for()
    _shot(page, "running-study")
    page.goto(f"{base}/dashboard/studies/{study_id}/trials?numbers=1")
    assert "+++ trial 1/model.py" in page.locator("code.language-diff").inner_text()


def test_progress_header_and_mail_give_the_studys_page(finished):
    address = f"http://127.0.0.1:{finished['port']}/dashboard/studies/{finished['summary']['study_id']}"
    header = finished["summary"]["progress"][0]
    assert header.startswith("study catsdogs: goal val_accuracy >= 0.99") and header.endswith(f", dashboard {address}")
    assert f"Dashboard: {address}\n" in (finished["run_dir"] / "report.txt").read_text()


def test_storage_password_is_in_no_page_process_or_log(served, storage, finished, seen):
    _, password, kind = storage
    assert seen.texts, "the browser tests ran first and recorded what the dashboard served"
    assert not [text for text in seen.texts if password in text]
    # Every process's command line and environment (what ps shows, and ps e).
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for name in ("cmdline", "environ"):
            try:
                data = (proc / name).read_bytes()
            except OSError:
                continue
            assert password.encode() not in data, f"{kind} password in /proc/{proc.name}/{name}"
    ps = subprocess.run(["ps", "-e", "e", "-ww", "-o", "pid,args"], capture_output=True, text=True, check=True)
    assert password not in ps.stdout
    assert f"{CONFIG_FILE}" in ps.stdout  # the dashboard runs, configured by file
    # The logs: the dashboard's (access log on), the run's, the playbooks' output; the config file is 0600.
    log = LOG.read_text()
    assert "GET /api/studies" in log and password not in log
    for name in ("progress.log", "report.txt", "summary.json", "result.eml"):
        assert password not in (finished["run_dir"] / name).read_text(errors="replace"), name
    for result in (finished["result"], *served[1:]):
        assert password not in result.stdout + result.stderr
    assert CONFIG_FILE.stat().st_mode & 0o777 == 0o600
    assert password in CONFIG_FILE.read_text()  # where it is meant to be, and nowhere else


def _as_nobody(method, url, body=None):
    """The HTTP status another local user (nobody, none of root's groups) gets for one request."""
    if not os.access(NOBODY_PYTHON, os.X_OK):
        missing(f"needs {NOBODY_PYTHON} (Debian's python3) to send requests as nobody")
    code = ("import sys, urllib.request, urllib.error\n"
            "data = sys.argv[3].encode() if sys.argv[3] else None\n"
            "request = urllib.request.Request(sys.argv[2], data=data, method=sys.argv[1],"
            " headers={'Content-Type': 'application/json'})\n"
            "try:\n    print(urllib.request.urlopen(request, timeout=20).status)\n"
            "except urllib.error.HTTPError as error:\n    print(error.code)\n")
    nobody = pwd.getpwnam("nobody")
    done = subprocess.run([NOBODY_PYTHON, "-c", code, method, url, json.dumps(body) if body is not None else ""],
                          user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/", env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def _tried(base, study_id, trial_id):
    """{method path: status} of every change in CHANGES, sent by nobody."""
    return {f"{method} {path}": _as_nobody(method, base + path.format(study=study_id, trial=trial_id), body)
            for method, path, body in CHANGES}


def _state(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    return [(t.number, t.state, t.value, t.user_attrs.get("outcome")) for t in study.get_trials(deepcopy=False)]


class Launched:
    """The role's launcher serving ``url`` on a free port, as root, read-only unless told otherwise."""

    def __init__(self, url, folder, read_only=True):
        self.port = _free_port()
        config = folder / f"dashboard-{self.port}.toml"
        config.write_text(f"[optuna_dashboard]\nstorage = {json.dumps(url)}\nport = {self.port}\n"
                          f"[autotune]\nread_only = {str(read_only).lower()}\n")
        self.process = subprocess.Popen([sys.executable, str(LAUNCHER), str(config)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        for _ in range(120):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"the launcher exited: {self.process.stdout.read()}")
                subprocess.run(["sleep", "0.5"], check=False)
        pytest.fail("the launcher did not listen within 60 s")
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)


def _trial_id(url, name, number):
    storage = optuna.storages.get_storage(url)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)


def _small_study(url, name):
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for value in (0.7, 0.8):
        trial = study.ask()
        trial.set_user_attr("outcome", "finished")
        study.tell(trial, value)
    study.ask()  # a RUNNING trial, which tell could end
    return study


def test_another_local_user_can_change_nothing_through_the_dashboard(tmp_path):
    """Row 10 reproduced on an unguarded launcher (read_only = false: nobody's DELETE empties the study), then
    refused by the default one: every change answered 405, the study as it was, its pages still served."""
    require_root()
    open_url, url = f"sqlite:///{tmp_path}/open.db", f"sqlite:///{tmp_path}/guarded.db"
    _small_study(open_url, "victim")
    with Launched(open_url, tmp_path, read_only=False) as unguarded:
        assert _as_nobody("DELETE", f"{unguarded.base}/api/studies/1") == 204, "the attack works without the guard"
    assert optuna.get_all_study_names(open_url) == []
    _small_study(url, "kept")
    before, study_id, trial_id = _state(url, "kept"), _study_id("kept", url), _trial_id(url, "kept", 2)
    with Launched(url, tmp_path) as guarded:
        tried = _tried(guarded.base, study_id, trial_id)
        assert set(tried.values()) == {405}, tried
        assert _as_nobody("GET", f"{guarded.base}/api/studies/{study_id}") == 200
        assert _as_nobody("GET", f"{guarded.base}/dashboard") == 200
    assert optuna.get_all_study_names(url) == ["kept"] and _state(url, "kept") == before


def test_the_served_dashboard_changes_nothing_for_another_user(served, storage, live):
    """The same, against the service the role runs (its launcher, its configuration file)."""
    base, url = served[0], storage[0]
    study_id = _study_id("catsdogs-live", url)
    before = _state(url, "catsdogs-live")
    tried = _tried(base, study_id, _trial_id(url, "catsdogs-live", live["running"]))
    assert set(tried.values()) == {405}, tried
    assert _state(url, "catsdogs-live") == before and _as_nobody("GET", f"{base}/api/studies/{study_id}") == 200
    assert sorted(optuna.get_all_study_names(url)) == ["catsdogs", "catsdogs-live"]
