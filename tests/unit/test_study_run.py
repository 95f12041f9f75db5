"""tune.StudyRun: the one builder of a study loop on a host (tune.run and fleet.work), without training."""
import pytest

from ansible.module_utils.autotune import tune
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.study import StudyLoop


class CountingRunner:
    name = "counting"

    def __init__(self):
        self.closed, self.warmed = 0, []

    def warm_up(self, pack, labels):
        self.warmed.append((pack, labels))

    def close(self):
        self.closed += 1


@pytest.fixture
def runner(monkeypatch):
    made = CountingRunner()
    monkeypatch.setattr(tune, "make_runner", lambda *args: made)
    return made


CONFIG = {"study": "s", "runner": {"kind": "local"}}
PLAN = {"facts": {"framework": "keras"}}


def test_a_lost_storage_is_one_masked_line_and_everything_is_released(runner, tmp_path, monkeypatch):
    def lost(_loop):
        raise OSError("could not connect to postgresql://autotune:s3cret@db/autotune")
    monkeypatch.setattr(StudyLoop, "run", lost)
    monkeypatch.setattr(StudyLoop, "__init__", lambda self, *args: None)
    with pytest.raises(AutotuneError) as caught:
        with tune.StudyRun(CONFIG, PLAN, str(tmp_path), "sqlite:///x.db") as session:
            session.warm_up("pack-0123")
            session.run({}, lambda detail: f"worker w: stopped ({detail})")
    assert "s3cret" not in str(caught.value) and str(caught.value).startswith("worker w: stopped (OSError: ")
    assert runner.warmed == [("pack-0123", {"study": "s", "run_dir": str(tmp_path)})]
    assert runner.closed == 1, "the spares are ended once, also when the loop failed"
    with tune.StudyRun(CONFIG, PLAN, str(tmp_path), "sqlite:///x.db"):  # the run folder's lock was released
        pass


def test_a_second_controller_of_the_folder_is_refused_while_the_first_runs(runner, tmp_path):
    with tune.StudyRun(CONFIG, PLAN, str(tmp_path), "sqlite:///x.db") as first:
        with pytest.raises(AutotuneError, match="is in use by another tune run"):
            with tune.StudyRun(CONFIG, PLAN, str(tmp_path), "sqlite:///x.db"):
                pass
        first.close()
        first.close()
    assert runner.closed == 1
