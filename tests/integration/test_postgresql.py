"""roles/postgresql on this machine, against the real server (.ci/run provisions it through
playbooks/postgresql.yml and hands the tests the URL in a 0600 file: conftest.postgres_url).

The role is run again here with the same password (read from that URL), so the server the other tests
use keeps working: a second run must change nothing. CI machines have no systemd, so this is the role's
direct mode (pg_ctlcluster); its systemd mode runs in roles/postgresql/molecule/default."""
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import BIN, REPO, missing, password_of
from test_secret_leaks import found_in

PLAYBOOK = REPO / "playbooks" / "postgresql.yml"
LOOPBACK_RULES = [
    ("local", "all", "postgres", "", "peer"),
    ("host", "autotune", "autotune", "127.0.0.1/255.255.255.255", "scram-sha-256"),
    ("host", "autotune", "autotune", "::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "scram-sha-256"),
]


def _password(url):
    return password_of(url)


@pytest.fixture(scope="module")
def secrets_file(postgres_url, tmp_path_factory):
    """The role's password as a 0600 vars file (-e @FILE), the way .ci/run and the docs pass it."""
    if os.geteuid() != 0:
        missing("roles/postgresql installs packages and writes the server's files: run as root")
    folder = tmp_path_factory.mktemp("pg-secrets")
    folder.chmod(0o700)
    path = folder / "pg.yml"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump({"postgresql_password": str(_password(postgres_url))}))
    return path


def _sample_ps(process, seen):
    while process.poll() is None:
        seen.update(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)
                    .stdout.splitlines())
        time.sleep(0.05)


def run_role(*args):
    """ansible-playbook playbooks/postgresql.yml ARGS; returns (returncode, output, every `ps -eo args` line seen)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    with subprocess.Popen([str(BIN / "ansible-playbook"), str(PLAYBOOK), *map(str, args)], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        seen = set()
        sampler = threading.Thread(target=_sample_ps, args=(process, seen), daemon=True)
        sampler.start()
        output, _ = process.communicate(timeout=600)
        sampler.join(timeout=10)
    return process.returncode, output, seen


def _recap(output):
    line = next(line for line in output.splitlines() if line.startswith("localhost") and "changed=" in line)
    return dict(field.split("=") for field in line.split()[2:])


def _superuser_query(sql):
    """psql as the postgres OS user over the socket (peer), the way an administrator checks the server."""
    process = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-F", "\t", "-c", sql],
                             cwd="/", capture_output=True, text=True, timeout=60, check=False)
    assert process.returncode == 0, process.stderr
    return [tuple(line.split("\t")) for line in process.stdout.splitlines()]


HBA_SQL = ("SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), "
           "coalesce(address || coalesce('/' || netmask, ''), ''), auth_method FROM pg_hba_file_rules ORDER BY line_number")


def test_role_twice_changes_nothing_the_second_time_and_never_shows_the_password(secrets_file, postgres_url):
    password = _password(postgres_url)
    assert len(password) >= 16
    started = time.monotonic()
    first_rc, first, first_ps = run_role("-e", f"@{secrets_file}")
    assert first_rc == 0, first[-4000:]
    second_rc, second, second_ps = run_role("-e", f"@{secrets_file}", "-vvv")
    assert second_rc == 0, second[-4000:]
    recap = _recap(second)
    assert recap["changed"] == "0" and recap["failed"] == "0", second[-4000:]
    # The sampling saw the run itself (so an empty result is not a blind spot), never the password.
    # (Module processes live a fraction of a second: on 2 busy cores the sampler may miss them, so only the
    # playbook's own process is required to have been seen.)
    assert any("ansible-playbook" in line for line in first_ps | second_ps)
    assert found_in({"first run": first, "second run": second, "process list": "\n".join(first_ps | second_ps)},
                    [password]) == []
    # -vvv shows module arguments: the user task is hidden, the password itself masked everywhere.
    assert "Create the login role with its password" in second
    assert "censored: 'the output has been hidden due to the fact that" in second
    server_log = Path("/var/log/postgresql/postgresql-15-main.log")
    if server_log.exists():
        assert found_in({"server log": server_log.read_text(errors="replace")}, [password]) == []
    print(f"two role runs: {time.monotonic() - started:.1f} s")


def test_login_over_tcp_with_the_password_and_a_wrong_one_refused(postgres_url):
    import psycopg2  # pylint: disable=import-outside-toplevel  # pinned in requirements.txt
    with psycopg2.connect(postgres_url, connect_timeout=10) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_database(), host(inet_server_addr()), "
                       "current_setting('max_connections'), current_setting('listen_addresses')")
        assert cursor.fetchone() == ("autotune", "autotune", "127.0.0.1", "100", "localhost")
    connection.close()
    parts = urlsplit(postgres_url)
    wrong = parts._replace(netloc=f"autotune:not-{uuid.uuid4().hex}@{parts.hostname}:{parts.port}").geturl()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed for user \"autotune\""):
        psycopg2.connect(wrong, connect_timeout=10)
    # The superuser has no password at all: it cannot log in over TCP.
    with pytest.raises(psycopg2.OperationalError, match="no pg_hba.conf entry"):
        psycopg2.connect(host="127.0.0.1", port=parts.port, user="postgres", dbname="postgres",
                         password=_password(postgres_url), connect_timeout=10)


def test_pg_hba_holds_only_the_superuser_by_peer_and_the_login_role_from_loopback(secrets_file):
    assert _superuser_query(HBA_SQL) == LOOPBACK_RULES
    scram = _superuser_query("SELECT left(rolpassword, 14), rolsuper FROM pg_authid WHERE rolname = 'autotune'")
    assert scram == [("SCRAM-SHA-256$", "f")]


def test_trainers_addresses_are_let_in_and_taken_out_again(secrets_file, tmp_path):
    """The default postgresql_client_hosts: each trainers host's ansible_host (or its name), loopback ones left out."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local",
                                "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
        "children": {"trainers": {"hosts": {"localhost": None, "t1": {"ansible_host": "192.0.2.11"},
                                            "t2": {"ansible_host": "2001:db8::12"},
                                            "t3.example.com": None}}}}}))
    code, output, _ = run_role("-i", inventory, "-e", f"@{secrets_file}")
    assert code == 0, output[-4000:]
    rules = _superuser_query(HBA_SQL)
    try:
        assert sorted(rules) == sorted(LOOPBACK_RULES + [
            ("host", "autotune", "autotune", "192.0.2.11/255.255.255.255", "scram-sha-256"),
            ("host", "autotune", "autotune", "2001:db8::12/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "scram-sha-256"),
            ("host", "autotune", "autotune", "t3.example.com", "scram-sha-256")])
    finally:
        code, output, _ = run_role("-e", f"@{secrets_file}")
        assert code == 0, output[-4000:]
    assert _superuser_query(HBA_SQL) == LOOPBACK_RULES


def test_missing_password_stops_the_role_with_one_line(tmp_path):
    empty = tmp_path / "none.yml"
    empty.write_text("{}\n")
    code, output, _ = run_role("-e", f"@{empty}")
    assert code != 0
    assert "postgresql_password is required: set it from the vault" in output
    assert "changed=0" in output


def test_optuna_study_round_trips_a_trial(postgres_url):
    import optuna  # pylint: disable=import-outside-toplevel  # pinned in requirements.txt
    name = f"test-postgresql-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(storage=postgres_url, study_name=name, direction="maximize")
    try:
        trial = study.ask()
        filters = trial.suggest_int("filters", 4, 64, log=True)
        trial.set_user_attr("trial_dir", "trials/0000")
        study.tell(trial, 0.81)
        loaded = optuna.load_study(study_name=name, storage=postgres_url)
        assert [(t.number, t.state, t.value, t.params, t.user_attrs) for t in loaded.trials] == [
            (0, optuna.trial.TrialState.COMPLETE, 0.81, {"filters": filters}, {"trial_dir": "trials/0000"})]
        assert loaded.best_value == 0.81
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


def test_redhat_internals_render(tmp_path):
    """The RHEL path cannot run here (Debian machines only): its variables render to the paths and the
    pg_ctl command line the docs name, and the cluster directory is where the hba and ident files are."""
    playbook = tmp_path / "render.yml"
    role = REPO / "roles" / "postgresql"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "vars": {"postgresql_password": "render-only"},
        "tasks": [
            {"ansible.builtin.include_vars": str(role / "defaults" / "main.yml")},
            {"ansible.builtin.include_vars": str(role / "vars" / "main.yml")},
            {"ansible.builtin.include_vars": str(role / "vars" / "RedHat.yml")},
            {"ansible.builtin.debug": {"msg": "{{ {'ctl': __postgresql_direct_ctl + ['start'], 'hba': __postgresql_hba_file,"
                                              " 'ident': __postgresql_ident_file, 'packages': __postgresql_packages,"
                                              " 'service': __postgresql_service} | to_json }}"}}]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    process = subprocess.run([str(BIN / "ansible-playbook"), str(playbook)], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    import json  # pylint: disable=import-outside-toplevel
    rendered = json.loads(json.loads(process.stdout)["plays"][0]["tasks"][-1]["hosts"]["localhost"]["msg"])
    assert rendered == {
        "ctl": ["runuser", "-u", "postgres", "--", "/usr/bin/pg_ctl", "-D", "/var/lib/pgsql/data",
                "-l", "/var/lib/pgsql/pg_ctl.log", "-w", "-t", "60", "start"],
        "hba": "/var/lib/pgsql/data/pg_hba.conf", "ident": "/var/lib/pgsql/data/pg_ident.conf",
        "packages": ["postgresql-server", "python3-psycopg2"], "service": "postgresql"}
