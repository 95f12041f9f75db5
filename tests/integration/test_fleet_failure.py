"""A fleet study that stops on an error sends word once, from the controller (issue 24 item 4): the hosts and the
database are real (test_fleet.py's worker containers and PostgreSQL); the study is deleted while a host trains."""
import email
import email.policy
import time
import uuid

import optuna

from test_fleet import RUNNING, _config, _trials, _wait, fleet_hosts, worker_image  # noqa: F401  # pylint: disable=unused-import


def _delete(study, url, play):
    """Delete the study while the host writes to it. Optuna's delete_study gives up without a word when a write of
    the host lands in its transaction (it ignores the IntegrityError and rolls back): delete until it is gone."""
    storage = optuna.storages.RDBStorage(url)
    for _ in range(50):
        if study not in optuna.get_all_study_names(storage):
            return
        optuna.delete_study(study_name=study, storage=storage)
        time.sleep(0.1)
    play.kill()
    raise AssertionError(f"study {study} could not be deleted in 50 tries")


def test_a_fleet_study_lost_mid_run_sends_word_once_from_the_controller(fleet_hosts, tmp_path, postgres_url,
                                                                        sample_data):
    study = f"fleet-lost-{uuid.uuid4().hex[:8]}"
    fleet_hosts.host("host-a")
    inventory = fleet_hosts.inventory(**{"host-a": {}})
    config = _config(tmp_path, study, model={"template": "cnn", "baseline": {"filters": 4, "dense_units": 8,
                                                                            "epochs": 30}},
                     notify={"to": ["alice@example.com"]})
    play = fleet_hosts.start(inventory, config)

    def training():
        return any(t.state == RUNNING and t.intermediate_values for t in _trials(postgres_url, study) or [])
    _wait(training, play, "the host's first trial past its first epoch")
    _delete(study, postgres_url, play)
    output = fleet_hosts.finish(play)

    assert play.returncode != 0
    errors = [line for line in output.splitlines() if line.startswith("[ERROR]")]
    assert errors and "Failed while tuning at 'Collect the study and its artifacts into the run folder'" in errors[-1], \
        output[-3000:]
    assert f"word written to {tmp_path / 'runs' / study}" in errors[-1], errors[-1]
    run_dir = tmp_path / "runs" / study
    assert sorted(p.name for p in run_dir.glob("*.eml")) == ["failure.eml"], "word of the failure, and no result"
    with open(run_dir / "failure.eml", "rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    assert message["Subject"].startswith(f"[autotune] {study}: FAILED while tuning at 'Collect the study")
    assert message["To"] == "alice@example.com"
    body = message.get_body(("plain",)).get_content()
    assert "To resume, fix the cause and run the same command again" in body
    host = fleet_hosts.containers["host-a"].exec_run(["sh", "-c", "find ~/autotune-fleet -name '*.eml' | wc -l"])
    assert host.output.strip() == b"0", "the host sends no word of its own: the controller does, once"
