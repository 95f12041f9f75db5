"""Secret-leak scan: a pushed commit tuned through pipeline.yml with an SMTP password and a PostgreSQL storage
password, trials in containers, a real SMTP server; then every byte we can reach is searched for both secrets:
stdout/stderr at -vvv, the run folder and workspace, the mail, the pushed result commit, each trial container's
`docker inspect` (env, labels, command) and the process list sampled while the pipeline ran. The fleet's S3 keys
(an s3:// artifact store) are scanned for the same way, with the same Watch and found_in, in
tests/integration/test_fleet.py::test_a_dead_hosts_trial_resumes_on_the_other_host_from_its_checkpoint_in_s3."""
import json
import os
import subprocess
import threading
import time

import docker
import yaml

from conftest import BIN, REPO, SAMPLE_DATA, password_of
from test_mail import PASSWORD as SMTP_PASSWORD, USER, Inbox, free_port, start_smtp


def _git(*args, cwd):
    return subprocess.run(["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)


def _pushed_commit(tmp_path):
    bare, work = tmp_path / "model.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    config = {"dataset": {"path": str(SAMPLE_DATA)}, "notify": {"to": ["team@example.com"]},
              "model": {"template": "cnn", "baseline": {"blocks": 1, "filters": 4, "epochs": 1, "dense_units": 8}},
              "budget": {"max_trials": 4, "trial_timeout": 300}}
    (work / "autotune.yml").write_text(yaml.safe_dump(config))
    _git("add", "autotune.yml", cwd=work)
    _git("commit", "-q", "-m", "model", cwd=work)
    _git("push", "-q", "origin", "HEAD:main", cwd=work)
    return bare, _git("rev-parse", "HEAD", cwd=work).stdout.strip()


class Watch(threading.Thread):
    """Samples the process list and every container of ours while the pipeline runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen, self.done = [], threading.Event()
        self.client = docker.from_env()

    def run(self):
        while not self.done.is_set():
            self.seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            # The low-level list inspects nothing: a container removed between listing and inspecting is skipped,
            # where containers.list() raised and ended the watch (CI, 2026-12-07).
            for container in self.client.api.containers(all=True, filters={"label": "io.autotune.project=autotune"}):
                try:
                    self.seen.append(json.dumps(self.client.api.inspect_container(container["Id"])))
                except docker.errors.NotFound:
                    pass
            time.sleep(0.2)


def found_in(haystacks, secrets):
    """Where each secret (str) appears in the haystacks ({where: str or bytes}): [(where, secret index)], [] when none.
    The index, never the secret, names it: the failure's message must not leak it either."""
    return [(where, n) for where, data in haystacks.items() for n, secret in enumerate(secrets)
            if (secret.encode() if isinstance(data, bytes) else secret) in data]


def _files(*roots):
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    yield path


def test_no_secret_reaches_any_output_file_mail_commit_container_or_process(tmp_path, docker_engine, postgres_url):
    storage_password = password_of(postgres_url)
    assert storage_password and len(storage_password) >= 8
    secrets = [SMTP_PASSWORD, storage_password]
    inbox, port = Inbox(), free_port()
    smtp = start_smtp(inbox, port)
    bare, sha = _pushed_commit(tmp_path)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_NOCOLOR="1", AUTOTUNE_STORAGE=postgres_url, AUTOTUNE_SMTP_HOST="127.0.0.1",
               AUTOTUNE_SMTP_PORT=str(port), AUTOTUNE_SMTP_USERNAME=USER, AUTOTUNE_SMTP_PASSWORD=SMTP_PASSWORD)
    extra = {"autotune_repo": str(bare), "autotune_commit": sha, "autotune_runs_root": str(tmp_path / "runs"),
             "autotune_workspaces": str(tmp_path / "ws")}
    watch = Watch()
    watch.start()
    try:
        result = subprocess.run([str(BIN / "ansible-playbook"), "-vvv", str(REPO / "playbooks" / "pipeline.yml"),
                                 "-e", json.dumps(extra)], cwd=REPO, env=env, capture_output=True, timeout=1500,
                                check=False)
    finally:
        watch.done.set()
        watch.join()
        smtp.stop()
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(inbox.messages) == 1, "the result was mailed through the real server"
    assert any(b"autotune-" in sample.encode() for sample in watch.seen), "trial containers were inspected"
    committed = subprocess.run(["git", "-C", str(bare), "log", "-p", "--all"], capture_output=True, check=True).stdout
    haystacks = {"stdout": result.stdout, "stderr": result.stderr, "commit": committed,
                 "mail": b"".join(raw for _, raw in inbox.messages),
                 "ps+inspect": "\n".join(watch.seen).encode()}
    for path in _files(tmp_path / "runs", tmp_path / "ws"):
        with open(path, "rb") as handle:
            haystacks[path] = handle.read()
    leaks = found_in(haystacks, secrets)
    assert leaks == [], f"secrets found in: {sorted({where for where, _ in leaks})}"
    assert len(haystacks) > 20, "the scan covered the run folder and the workspace"
