"""Issue 20 rows 1-3: a trial folder's files cannot hang, crash or flood the controller or the health check.

Every read here runs in a thread with a deadline, so a regression to a blocking open fails the test instead of
hanging the suite.
"""
import fcntl
import json
import os
import threading
import tracemalloc
import types

import pytest

from ansible.module_utils.autotune import health, trialdir
from ansible.module_utils.autotune.runners.base import TrialProcess
from ansible.module_utils.autotune.storage import default_storage
from ansible.module_utils.autotune.study import StudyLoop
from fakes import FakeProcess, FakeRunner

DEADLINE = 5.0


def promptly(call, *args):
    """call(*args) in a thread: its value, or the exception it raised; fails when it has not returned in time."""
    box = {}

    def run():
        try:
            box["value"] = call(*args)
        except Exception as exc:  # pylint: disable=broad-except
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), f"{getattr(call, '__name__', call)}{args} blocked for {DEADLINE} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _process(folder):
    class Folder(TrialProcess):  # the folder side only: what every runner inherits
        pass
    return Folder(str(folder))


NAMES = (trialdir.METRICS, trialdir.HEALTH, trialdir.LOG, trialdir.RESULT, trialdir.HP_SEEN)


@pytest.mark.parametrize("name", NAMES)
def test_a_fifo_in_place_of_a_trial_file_is_refused_at_once(tmp_path, name):
    os.mkfifo(tmp_path / name)
    process = _process(tmp_path)
    reader = {trialdir.METRICS: process.new_epochs, trialdir.HEALTH: process.health, trialdir.LOG: process.log_tail,
              trialdir.RESULT: process.result, trialdir.HP_SEEN: lambda: process.hp_seen(strict=True)}[name]
    # The lenient readers (trainer, spares, verify) say "nothing there", at once (these blocked before).
    assert promptly(trialdir.read_json, str(tmp_path / name), {}) == {}
    assert promptly(trialdir.read_metrics, str(tmp_path / name)) == []
    assert promptly(trialdir.tail, str(tmp_path / name)) == []
    with pytest.raises(OSError, match="not a regular file"):
        promptly(trialdir.open_regular, str(tmp_path / name), "r")
    with pytest.raises(trialdir.TrialFileError, match=f"^{name}: the file is a FIFO; expected a regular file$"):
        promptly(reader)


def test_writing_where_a_fifo_stands_never_blocks(tmp_path):
    fifo = tmp_path / trialdir.LOG
    os.mkfifo(fifo)
    with pytest.raises(OSError):  # no reader: ENXIO at once; with one, refused as not a regular file
        promptly(trialdir.open_regular, str(fifo), "ab")


def test_oversized_json_files_are_refused_without_being_read(tmp_path):
    big = tmp_path / trialdir.RESULT
    with open(big, "wb") as handle:
        handle.truncate(trialdir.MAX_JSON_BYTES + 1)  # sparse: nothing to read, only its size
    with pytest.raises(trialdir.TrialFileError, match=r"^result.json: the file is 1048577 bytes; expected at most"):
        trialdir.read_result(str(big))
    assert trialdir.read_json(str(big), "default") == "default"


def test_a_deeply_nested_file_is_malformed_not_a_crash(tmp_path):
    (tmp_path / trialdir.HEALTH).write_text("[" * 200000)
    with pytest.raises(trialdir.TrialFileError, match="^health.json: the file is not JSON"):
        trialdir.read_health(str(tmp_path / trialdir.HEALTH))


@pytest.mark.parametrize("content, field", [
    ({"relaunches": "0"}, "relaunches"), ({"relaunches": -1000000}, "relaunches"), ({"relaunches": 10 ** 9}, "relaunches"),
    ({"relaunches": True}, "relaunches"), ([1], "the content"), ({"relaunches": 1, "history": "x"}, "history"),
    ({"relaunches": 1, "history": [{"at": "now", "why": "x"}]}, r"history\[\]"), ({"gave_up": 1}, "gave_up"),
])
def test_health_json_fields_are_checked_and_relaunches_bounded(tmp_path, content, field):
    (tmp_path / trialdir.HEALTH).write_text(json.dumps(content))
    with pytest.raises(trialdir.TrialFileError, match=f"^health.json: {field} "):
        _process(tmp_path).health()


@pytest.mark.parametrize("content, field", [
    ({"status": "ok", "value": "0.99"}, "value"), ({"status": 1}, "status"), ({"value": True}, "value"),
    ({"fit_seconds": "1"}, "fit_seconds"), ({"resumed_from_epoch": -1}, "resumed_from_epoch"), ("ok", "the content"),
    ({"reason": ["x"]}, "reason"),
])
def test_result_json_fields_are_checked(tmp_path, content, field):
    (tmp_path / trialdir.RESULT).write_text(json.dumps(content))
    with pytest.raises(trialdir.TrialFileError, match=f"^result.json: {field} "):
        _process(tmp_path).result()


def test_hyperparameters_seen_must_have_the_trainers_shape(tmp_path):
    path = tmp_path / trialdir.HP_SEEN
    path.write_text(json.dumps({"filters_0": {"spec": {"type": "int", "low": 1, "high": 4}, "default": 1}}))
    assert list(_process(tmp_path).hp_seen(strict=True)) == ["filters_0"]
    path.write_text(json.dumps({"filters_0": [1, 2]}))
    with pytest.raises(trialdir.TrialFileError, match="^hyperparameters_seen.json: 'filters_0' is"):
        _process(tmp_path).hp_seen(strict=True)
    assert _process(tmp_path).hp_seen() == {}  # after the trial (its failure told once, in conclude)


def test_well_formed_files_read_as_before(tmp_path):
    trialdir.write_json(str(tmp_path / trialdir.RESULT), {"status": "ok", "value": 0.9, "fit_seconds": 1.5,
                                                         "resumed_from_epoch": None, "metric": "val_accuracy"})
    trialdir.write_json(str(tmp_path / trialdir.HEALTH), {"relaunches": 2, "history": [{"at": 1.0, "why": "died"}]})
    process = _process(tmp_path)
    assert process.result()["value"] == 0.9 and process.health()["relaunches"] == 2
    assert _process(tmp_path / "none").result() == {} and _process(tmp_path / "none").health() == {}


@pytest.mark.parametrize("line, field", [
    ('{"epoch": 0, "val_accuracy": "x"}', "line 2 'val_accuracy'"), ('{"epoch": "0", "val_accuracy": 0.5}', "line 2 epoch"),
    ('{"epoch": -1}', "line 2 epoch"), ('[1]', "line 2"), ('{"epoch": 0, "loss": true}', "line 2 'loss'"),
    ('not json', "line 2"), ('{"epoch": 0, "val_accuracy": {"a": 1}}', "line 2 'val_accuracy'"),
])
def test_a_malformed_metrics_line_names_the_line_and_field(tmp_path, line, field):
    (tmp_path / trialdir.METRICS).write_text('{"epoch": 0, "val_accuracy": 0.5}\n' + line + "\n")
    with pytest.raises(trialdir.TrialFileError, match=f"^metrics.jsonl: {field} is"):
        _process(tmp_path).new_epochs()


def test_nan_metrics_are_numbers_the_trainer_reports_as_nan(tmp_path):
    (tmp_path / trialdir.METRICS).write_text('{"epoch": 0, "loss": NaN, "val_accuracy": 0.5}\n')
    assert _process(tmp_path).new_epochs()[0]["epoch"] == 0


def test_metrics_are_read_incrementally_with_a_partial_line_kept(tmp_path):
    path = tmp_path / trialdir.METRICS
    process = _process(tmp_path)
    assert process.new_epochs() == []  # not written yet
    path.write_text('{"epoch": 0, "val_accuracy": 0.5}\n{"epoch": 1, "val_')
    assert [r["epoch"] for r in process.new_epochs()] == [0]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('accuracy": 0.6}\n\n{"epoch": 2, "val_accuracy": 0.7}\n')
    assert [r["epoch"] for r in process.new_epochs()] == [1, 2]
    assert process.new_epochs() == []


def test_a_metrics_file_that_starts_over_is_followed_from_where_it_was(tmp_path):
    """The trainer deletes metrics.jsonl when it discards an unreadable checkpoint and writes epoch 0 again."""
    path = tmp_path / trialdir.METRICS
    process = _process(tmp_path)
    path.write_text('{"epoch": 0, "val_accuracy": 0.5}\n{"epoch": 1, "val_accuracy": 0.6}\n')
    assert len(process.new_epochs()) == 2
    path.unlink()
    path.write_text('{"epoch": 0, "val_accuracy": 0.4}\n{"epoch": 1, "val_accuracy": 0.5}\n'
                    '{"epoch": 2, "val_accuracy": 0.8}\n')
    assert process.new_epochs() == [{"epoch": 2, "val_accuracy": 0.8}]


def _blank_lines(path, size, then=b""):
    with open(path, "wb") as handle:
        for _ in range(size >> 20):
            handle.write(b"\n" * (1 << 20))
        handle.write(b"\n" * (size % (1 << 20)) + then)


def test_a_30_mb_metrics_file_is_never_held_in_memory(tmp_path):
    """Row 3: the controller re-read the whole file every poll (RSS x28 its size); now it reads at most a chunk."""
    path = tmp_path / trialdir.METRICS
    _blank_lines(path, 30 << 20)  # 30 MB of 1-byte lines: no record, nothing malformed but the size
    process = _process(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(trialdir.TrialFileError, match="^metrics.jsonl: the file is 31457280 bytes; expected at most"):
            process.new_epochs()
        assert tracemalloc.get_traced_memory()[1] < 64 << 10  # refused on its size, not read
        _blank_lines(path, trialdir.MAX_METRICS_BYTES - 100, b'{"epoch": 0}\n')
        tracemalloc.reset_peak()
        polls = 0
        while not process.new_epochs():
            polls += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert polls == trialdir.MAX_METRICS_BYTES // trialdir.READ_CHUNK - 1  # one chunk per poll, none read twice
    assert peak < 4 * trialdir.READ_CHUNK, f"peak {peak} bytes"


def test_a_metrics_line_without_end_or_too_many_epochs_is_malformed(tmp_path):
    path = tmp_path / trialdir.METRICS
    path.write_bytes(b'{"epoch": 0' + b" " * trialdir.MAX_LINE_BYTES)
    with pytest.raises(trialdir.TrialFileError, match="^metrics.jsonl: line 1 runs over 4096 bytes"):
        _process(tmp_path).new_epochs()
    path.write_text('{"epoch": 0}\n' * (trialdir.MAX_EPOCHS + 1))
    with pytest.raises(trialdir.TrialFileError, match=f"^metrics.jsonl: line {trialdir.MAX_EPOCHS + 1} is one epoch"):
        _process(tmp_path).new_epochs()


def test_the_log_tail_reads_only_the_end_of_a_large_log(tmp_path):
    path = tmp_path / trialdir.LOG
    with open(path, "wb") as handle:
        handle.write(b"x" * (50 << 20) + b"\nTraceback\nValueError: the last line\n")
    tracemalloc.start()
    try:
        lines = _process(tmp_path).log_tail(2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == ["Traceback", "ValueError: the last line"]
    assert peak < 4 * trialdir.TAIL_BYTES, f"peak {peak} bytes"


# --- the study loop (tests/fakes.py) with trial files read through the real folder readers ----------------------

class FolderProcess(FakeProcess):
    """The fake trainer, with what it 'wrote' read back from its folder as every real runner does."""
    new_epochs, result, health, log_tail = (TrialProcess.new_epochs, TrialProcess.result, TrialProcess.health,
                                            TrialProcess.log_tail)


class PlantingRunner(FakeRunner):
    """Trial folders get files the trial planted: ``plant(params)`` -> {file name: bytes} (or {})."""

    def __init__(self, script, plant):
        super().__init__(script)
        self.plant = plant

    def start(self, trial_dir, data_path, labels):
        process = super().start(trial_dir, data_path, labels)
        process.__class__ = FolderProcess
        values = process.values if isinstance(process.values, list) else []
        process.shown = len(values)  # all written at once: it ends at its first poll unless it hangs
        planted = {trialdir.METRICS: b"".join(b'{"epoch": %d, "val_accuracy": %r}\n' % (i, v)
                                              for i, v in enumerate(values))}
        if values:
            planted[trialdir.RESULT] = json.dumps({"status": "ok", "value": values[-1]}).encode()
        planted.update(self.plant(self.params_of(trial_dir)))
        for name, content in planted.items():
            with open(f"{trial_dir}/{name}", "wb") as handle:
                handle.write(content)
        return process


def _study(tmp_path, plant, script=lambda params: [0.5]):
    from test_study_loop import _setup  # pylint: disable=import-outside-toplevel
    config, plan, run_dir = _setup(tmp_path, budget={"max_trials": 3, "max_consecutive_failures": 3},
                                   target={"goal": 0.99})
    runner = PlantingRunner(script, plant)
    lines = []
    study, reason, _ = StudyLoop(config, plan, {"path": "unused.npz"}, runner, run_dir, default_storage(run_dir),
                                 lines.append).run()
    return study, reason, runner, lines


def test_a_malformed_metrics_line_fails_that_trial_alone_stops_it_and_the_study_goes_on(tmp_path):
    """Row 2: the controller died with 'could not convert string to float' and left the container running."""
    hang = lambda params: "hang" if params["filters"] == 8 else [0.5]  # noqa: E731 - a trainer that runs on
    study, reason, runner, lines = _study(
        tmp_path, lambda params: {trialdir.METRICS: b'{"epoch": 0, "val_accuracy": "x"}\n'} if params["filters"] == 8
        else {}, hang)
    assert reason == "trial budget spent (3 trials)"
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    bad = study.trials[1]
    assert bad.user_attrs["outcome"] == "bad_trial_file"
    assert bad.user_attrs["reason"] == "metrics.jsonl: line 1 'val_accuracy' is 'x'; expected a number"
    assert runner.log == [("stopped", runner.started[1][0])]  # its trainer (container) was stopped
    shown = [line for line in lines if line.startswith("trial   1")]
    assert len(shown) == 1 and shown[0].endswith("[metrics.jsonl: line 1 'val_accuracy' is 'x'; expected a number]")


@pytest.mark.parametrize("name, content, reason", [
    (trialdir.HEALTH, b'{"relaunches": "0"}', "health.json: relaunches is '0'; expected an integer 0..100"),
    (trialdir.RESULT, b'{"status": "ok", "value": "0.99"}', "result.json: value is '0.99'; expected a number or null"),
    (trialdir.HP_SEEN, b'{"units": 3}', "hyperparameters_seen.json: 'units' is 3; expected an object {spec: object "
     "or null, default: value}"),
    (trialdir.METRICS, b"1\n" * 1000, "metrics.jsonl: line 1 is 1; expected an object of 1..64 metrics"),
])
def test_a_malformed_file_read_as_the_trial_ends_fails_it_with_one_line(tmp_path, name, content, reason):
    study, _, _, _ = _study(tmp_path, lambda params: {name: content} if params["filters"] == 8 else {})
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert (study.trials[1].user_attrs["outcome"], study.trials[1].user_attrs["reason"]) == ("bad_trial_file", reason)
    assert "registered_hp" not in study.trials[1].user_attrs  # nothing the trial wrote is taken


def test_a_fifo_planted_by_a_trial_fails_it_without_hanging_the_loop(tmp_path):
    """Row 1 in the loop: a FIFO in place of metrics.jsonl hung the controller past its trial_timeout."""
    def plant(params):
        if params["filters"] == 8:
            os.mkfifo(tmp_path / "run" / "trials" / "0001" / trialdir.LOG)
            return {trialdir.METRICS: b""}
        return {}

    def run_loop():
        return _study(tmp_path, lambda params: {} if params["filters"] != 8 else plant(params) or {},
                      lambda params: "crash" if params["filters"] == 8 else [0.5])
    study, _, _, _ = promptly(run_loop)
    assert study.trials[1].user_attrs["outcome"] == "bad_trial_file"
    assert study.trials[1].user_attrs["reason"].startswith("trainer.log: the file is a FIFO; expected a regular file")


# --- the health pass: each container on its own, relaunches bounded -------------------------------------------

def _dead(run_dir, trial, started):
    labels = {"io.autotune.project": "autotune", "io.autotune.study": "s", "io.autotune.trial": trial,
              "io.autotune.run_dir": str(run_dir)}

    def start():
        if trial == "0005":
            raise OSError("engine refused")  # stands for an engine error on this one container
        started.append(trial)
    return types.SimpleNamespace(name=f"autotune-s-{trial}-abcdef", labels=labels, start=start,
                                 attrs={"State": {"Status": "exited", "ExitCode": 137, "OOMKilled": False}})


def test_one_bad_trial_folder_never_stops_the_health_pass_and_relaunches_stay_bounded(tmp_path):
    """Row 2: health.json {"relaunches": "0"} raised TypeError for the whole pass; -1000000 relaunched forever."""
    planted = {"0001": b'{"relaunches": -1000000}', "0002": None, "0003": b'{"relaunches": "0"}', "0004": b"[1]",
               "0006": b'{"relaunches": 1, "history": [{"at": 1.0, "why": "died"}]}'}
    for number in ("0000", "0001", "0002", "0003", "0004", "0005", "0006", "0007"):
        folder = tmp_path / "trials" / number
        folder.mkdir(parents=True)
        if number in planted and planted[number] is None:
            os.mkfifo(folder / trialdir.HEALTH)
        elif number in planted:
            (folder / trialdir.HEALTH).write_bytes(planted[number])
    (tmp_path / "trials" / "0007" / "health.json.tmp").mkdir()  # the record cannot be written: no relaunch either
    started = []
    containers = [_dead(tmp_path, t, started) for t in ("0000", "0001", "0002", "0003", "0004", "0005", "0006", "0007")]
    client = types.SimpleNamespace(containers=types.SimpleNamespace(list=lambda **_: containers))
    with open(tmp_path / trialdir.RUN_LOCK, "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the study's controller is alive
        actions = {a["trial"]: a for a in promptly(health.heal, client, 3)}
    assert sorted(started) == ["0000", "0006"]
    assert {t: a["action"] for t, a in actions.items()} == {
        0: "relaunched", 1: "bad_trial_file", 2: "bad_trial_file", 3: "bad_trial_file", 4: "bad_trial_file",
        5: "error", 6: "relaunched", 7: "error"}
    assert actions[1]["why"] == "health.json: relaunches is -1000000; expected an integer 0..100; not relaunched"
    assert actions[2]["why"].startswith("health.json: the file is a FIFO; expected a regular file")
    assert actions[3]["why"] == "health.json: relaunches is '0'; expected an integer 0..100; not relaunched"
    assert actions[5]["why"] == "OSError: engine refused"
    assert actions[6]["relaunches"] == 2
    assert json.loads((tmp_path / "trials" / "0005" / trialdir.HEALTH).read_text())["relaunches"] == 1  # counted
    assert all("\n" not in a["why"] for a in actions.values())


def test_the_relaunch_limit_is_bounded_too(tmp_path):
    folder = tmp_path / "trials" / "0000"
    folder.mkdir(parents=True)
    (folder / trialdir.HEALTH).write_text(json.dumps({"relaunches": trialdir.MAX_RELAUNCHES, "history": []}))
    started = []
    client = types.SimpleNamespace(containers=types.SimpleNamespace(list=lambda **_: [_dead(tmp_path, "0000", started)]))
    with open(tmp_path / trialdir.RUN_LOCK, "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (action,) = health.heal(client, relaunch_limit=10 ** 9)
    assert action["action"] == "gave_up" and not started


def test_the_docker_runner_replaces_a_fifo_log_instead_of_blocking_on_it(tmp_path):
    from ansible.module_utils.autotune.runners.docker import DockerProcess  # pylint: disable=import-outside-toplevel
    os.mkfifo(tmp_path / trialdir.LOG)
    removed = []
    container = types.SimpleNamespace(logs=lambda **_: b"epoch 1\n", remove=lambda force: removed.append(force))
    promptly(DockerProcess(container, str(tmp_path), relaunch_grace=1).cleanup)
    assert (tmp_path / trialdir.LOG).read_bytes() == b"epoch 1\n" and removed == [True]
    (tmp_path / trialdir.LOG).unlink()
    (tmp_path / trialdir.LOG).mkdir()  # cannot be replaced: the log is lost, the container still removed
    promptly(DockerProcess(container, str(tmp_path), relaunch_grace=1).cleanup)
    assert removed == [True, True]


def test_a_malformed_result_of_a_trial_that_finished_unwatched_fails_it_on_resume(tmp_path):
    from test_study_loop import _left_running, _setup  # pylint: disable=import-outside-toplevel
    config, plan, run_dir = _setup(tmp_path)
    _left_running(config, plan, run_dir, True)
    with open(f"{run_dir}/trials/0000/{trialdir.METRICS}", "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 1, "val_accuracy": "x"}\n')
    runner = FakeRunner(lambda params: [0.9])
    study, _, _ = StudyLoop(config, plan, {"path": "x.npz"}, runner, run_dir, default_storage(run_dir),
                            lambda line: None).run()
    resumed = study.trials[1]
    assert (resumed.state.name, resumed.user_attrs["outcome"]) == ("FAIL", "bad_trial_file")
    assert resumed.user_attrs["reason"] == "metrics.jsonl: line 2 'val_accuracy' is 'x'; expected a number"
    assert study.trials[-1].state.name == "COMPLETE"  # the study went on


def test_a_trial_the_controller_timed_out_keeps_that_outcome_whatever_its_files(tmp_path):
    """A trial that hangs after planting a link at result.json (integration test_links_...) times out, as before."""
    victim = tmp_path / "victim"  # a file of the host's, never a real one: a regression must not write to /etc
    victim.write_text("operator's file\n")

    def plant(params):
        if params["filters"] == 8:
            os.symlink(victim, tmp_path / "run" / "trials" / "0001" / trialdir.RESULT)
        return {}
    from test_study_loop import _setup  # pylint: disable=import-outside-toplevel
    config, plan, run_dir = _setup(tmp_path, budget={"max_trials": 2, "trial_timeout": 1}, target={"goal": 0.99})
    runner = PlantingRunner(lambda params: "hang" if params["filters"] == 8 else [0.5], plant)
    study, _, _ = StudyLoop(config, plan, {"path": "x"}, runner, run_dir, default_storage(run_dir), lambda line: None).run()
    attrs = study.trials[1].user_attrs
    assert attrs["outcome"] == "timed_out"
    assert attrs["bad_file"] == "result.json: the file is a link; expected a regular file"
    assert victim.read_text() == "operator's file\n", "nothing was written through the link"


def test_a_long_metrics_file_of_a_trial_that_finished_unwatched_is_replayed_whole(tmp_path):
    from ansible.module_utils.autotune import trialrun  # pylint: disable=import-outside-toplevel
    from ansible.module_utils.autotune.runners.base import FinishedTrial  # pylint: disable=import-outside-toplevel
    with open(tmp_path / trialdir.METRICS, "w", encoding="utf-8") as handle:
        for epoch in range(6000):  # about 1.6 MB: more than one chunk
            handle.write(json.dumps({"epoch": epoch, "val_accuracy": 0.5, "loss": 0.69314718, "accuracy": 0.5,
                                     "val_loss": 0.69314718, "seconds": 1.234, "time": 1764700000.123}) + "\n")
    reported = []
    trial = types.SimpleNamespace(report=lambda value, step: reported.append(step))
    seen = trialrun.Running(trial, {}, str(tmp_path), {}, FinishedTrial(str(tmp_path)), 60).replay("val_accuracy")
    assert len(seen.epochs) == 6000 and reported == list(range(6000)) and seen.bad_file is None
