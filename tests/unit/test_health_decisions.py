"""The health check's decisions on container records (our own logic; tests/integration/test_health.py kills real
containers). A container here is a plain object with the three attributes the check reads."""
import fcntl
import types

from ansible.module_utils.autotune import health

LABELS = "io.autotune"


def _container(run_dir, trial="0", name="autotune-s-0000-abc", task=None, exit_code=137):
    labels = {f"{LABELS}.project": "autotune", f"{LABELS}.study": "s", f"{LABELS}.trial": trial,
              f"{LABELS}.run_dir": str(run_dir)}
    if task:
        labels[f"{LABELS}.task"] = task
    return types.SimpleNamespace(name=name, labels=labels,
                                 attrs={"State": {"Status": "exited", "ExitCode": exit_code, "OOMKilled": False}})


def _live(run_dir):
    (run_dir / "trials" / "0000").mkdir(parents=True)
    lock = open(run_dir / ".tune.lock", "w", encoding="utf-8")  # noqa: SIM115 - held for the test
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def test_a_dead_trial_of_a_live_study_is_relaunched(tmp_path):
    with _live(tmp_path):
        assert health.examine(_container(tmp_path))[0] == "relaunch"


def test_odd_labels_and_look_alikes_are_left_alone_without_crashing_the_pass(tmp_path):
    with _live(tmp_path):
        assert health.examine(_container(tmp_path, trial="²")) == ("leave", "its trial directory is gone")
        assert health.examine(_container(tmp_path, trial="../../etc")) == ("leave", "its trial directory is gone")
        assert health.examine(_container("relative/dir"))[0] == "leave"
        assert health.examine(_container(tmp_path, name="evil-0000")) == (
            "leave", "its name is not one the docker runner gives")
        assert health.examine(_container(tmp_path, task="verify"))[1] == "it is a verify container, not a training one"


def test_a_linked_trial_folder_or_stop_marker_is_never_followed(tmp_path):
    with _live(tmp_path):
        (tmp_path / "trials" / "0000" / "stopped_by_controller").symlink_to("/nonexistent")
        assert health.examine(_container(tmp_path)) == ("leave", "its controller stopped it")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "trials").mkdir()
    (elsewhere / "trials" / "0000").symlink_to(tmp_path)
    assert health.examine(_container(elsewhere)) == ("leave", "its trial directory is gone")


def test_only_a_spare_never_handed_a_trial_whose_controller_is_gone_is_orphaned(tmp_path):
    spare = ".spare-0-abc123"
    assert health.orphaned_spare(_container(tmp_path, trial=spare)) == \
        "a warm spare never handed a trial, and its study's controller is gone"
    (tmp_path / "spares.json").write_text(f'{{"{spare}": "0003"}}')
    assert health.orphaned_spare(_container(tmp_path, trial=spare)) is None, "handed: tune.yml resumes its trial"
    with _live(tmp_path / "live"):
        assert health.orphaned_spare(_container(tmp_path / "live", trial=spare)) is None, "its controller hands it one"
    assert health.orphaned_spare(_container(tmp_path, trial="0")) is None, "a trial's container is not a spare"
    assert health.orphaned_spare(_container(tmp_path, trial=".spare-0-../..")) is None
    assert health.orphaned_spare(_container(tmp_path, trial=".spare-1-def456", name="evil-0000")) is None
    assert health.orphaned_spare(_container("relative/dir", trial=".spare-1-def456")) is None
