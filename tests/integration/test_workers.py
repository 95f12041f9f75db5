"""Several controllers (workers) on one study in PostgreSQL: trials in parallel, and a worker's death healed by
Optuna's heartbeats — its trial is failed after the grace period and retried by the surviving worker, never lost
nor counted twice. Two controller processes on this host stand in for two hosts (each its own run folder)."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import yaml

from conftest import REPO, SAMPLE_DATA, TEMPLATES

DRIVER = """
import json, sys
import ansible.module_utils
ansible.module_utils.__path__.append({module_utils!r})
from ansible.module_utils.autotune.tune import prepare, run
config, plan, run_dir, storage = prepare(sys.argv[1], {templates!r}, runs_root=sys.argv[2],
                                         storage=open(sys.argv[3]).read().strip())
summary = run(config, plan, run_dir, storage, trainer_path={trainer!r})
print(json.dumps({{"stop_reason": summary["stop_reason"], "n_trials": summary["n_trials"]}}))
""".format(module_utils=str(REPO / "module_utils"), templates=str(TEMPLATES), trainer=str(REPO / "trainer"))


def _worker(tmp_path, name, config_path, url_file):
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(config_path), str(tmp_path / name), url_file],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _epochs(folder):
    path = folder / "trials" / "0000" / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_dead_workers_trial_is_retried_by_another_never_lost_nor_doubled(tmp_path, postgres_url):
    study = f"workers-{uuid.uuid4().hex[:8]}"
    config = {"study": study, "dataset": {"path": str(SAMPLE_DATA)}, "target": {"goal": 0.999},
              "model": {"template": "cnn", "baseline": {"epochs": 8, "batch_size": 32, "filters": 8}},
              "search": {"strategy": "random", "pruner": "none",
                         "space": {"filters": {"type": "int", "low": 4, "high": 16}}},
              "budget": {"max_trials": 4, "trial_timeout": 300},
              "workers": {"heartbeat_interval": 1, "grace_period": 4}}
    config_path = tmp_path / "autotune.yml"
    config_path.write_text(yaml.safe_dump(config))
    url_file = tmp_path / "url"
    url_file.write_text(postgres_url)
    url_file.chmod(0o600)
    first = _worker(tmp_path, "host-a", config_path, str(url_file))
    deadline = time.time() + 240
    while _epochs(tmp_path / "host-a" / study) < 1 and time.time() < deadline:
        time.sleep(0.2)
    second = _worker(tmp_path, "host-b", config_path, str(url_file))
    os.killpg(first.pid, signal.SIGKILL)  # host a dies mid-trial: controller, trainer, spare
    first.wait()
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["stop_reason"] == "trial budget spent (4 trials)"
    trials = optuna.load_study(study_name=study, storage=postgres_url).get_trials(deepcopy=False)
    retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t for t in trials}
    assert trials[0].state == optuna.trial.TrialState.FAIL and 0 in retried, "host a's trial was failed and retried"
    assert retried[0].state == optuna.trial.TrialState.COMPLETE and len(retried[0].intermediate_values) == 8
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING], "no trial is left hanging"
    counted = [t for t in trials if t.number not in retried]
    assert len(counted) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
