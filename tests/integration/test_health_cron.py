"""roles/health_cron on this host: the cron entry exists, its command runs the health playbook, removal is one variable."""
import json
import subprocess

import pytest

from conftest import BIN, REPO, run_playbook


def _crontab():
    listed = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
    return listed.stdout if listed.returncode == 0 else ""


@pytest.fixture()
def cron_role(tmp_path):
    log = tmp_path / "health.log"
    common = {"health_cron_project_dir": str(REPO), "health_cron_ansible_playbook": str(BIN / "ansible-playbook"),
              "health_cron_log": str(log), "health_cron_manage_service": False,
              "health_cron_extra_args": "-e autotune_health_lock=/tmp/autotune-health-crontest.lock"}
    yield common, log
    run_playbook("tests/playbooks/health_cron.yml", dict(common, health_cron_enabled=False))


def test_cron_entry_is_installed_idempotent_runs_and_is_removed(cron_role):
    common, log = cron_role
    first = run_playbook("tests/playbooks/health_cron.yml", common)
    assert first.returncode == 0, first.stdout[-3000:]
    entries = [line for line in _crontab().splitlines() if "playbooks/health.yml" in line]
    assert len(entries) == 1 and entries[0].startswith("* * * * * cd "), _crontab()
    assert open("/etc/logrotate.d/autotune-health").read().count(str(log)) == 1
    second = run_playbook("tests/playbooks/health_cron.yml", common)
    assert "changed=0" in second.stdout, second.stdout[-2000:]
    # The scheduled command itself, as cron would run it (minimal environment).
    job = entries[0].split(None, 5)[5]
    ran = subprocess.run(["/bin/sh", "-c", job], env={"PATH": "/usr/bin:/bin", "HOME": "/root"},
                         capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0, log.read_text()[-3000:]
    assert "PLAY [Heal autotune training]" in log.read_text() and "failed=0" in log.read_text()
    removed = run_playbook("tests/playbooks/health_cron.yml", dict(common, health_cron_enabled=False))
    assert removed.returncode == 0 and "playbooks/health.yml" not in _crontab()
