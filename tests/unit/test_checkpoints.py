"""A running trial's checkpoint to the artifact store and back into a retry's folder (module_utils/autotune/checkpoints.py),
and the artifact store's location (artifacts.py): a real Optuna FileSystemArtifactStore and in-memory study, the trial
folder's files written as the trainer's Keras BackupAndRestore leaves them. The real trainer resuming from a shipped
checkpoint on another host is tests/integration/test_fleet.py."""
import hashlib
import io
import json
import os
import tarfile
import time
from types import SimpleNamespace

import optuna
import pytest

from ansible.module_utils.autotune import artifacts, checkpoints, trialdir
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.storage import default_storage, open_study
from ansible.module_utils.autotune.study import StudyLoop
from fakes import FakeRunner

CAP = 1 << 20


def _trial_folder(folder, epochs, weights=b"\x89HDF weights"):
    """A trial folder as the trainer leaves it after ``epochs`` epochs (the state saved before the metrics line)."""
    checkpoint = folder / trialdir.CHECKPOINT
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / checkpoints.WEIGHTS).write_bytes(weights)
    time.sleep(0.01)  # the epoch count is written after the weights, as Keras does
    (checkpoint / checkpoints.STATE).write_text(json.dumps({"epoch": epochs, "batch": 0}))
    return [{"epoch": n, "val_accuracy": 0.5 + n / 100} for n in range(epochs)]


@pytest.fixture
def store(tmp_path):
    (tmp_path / "store").mkdir()
    return artifacts.make_store(str(tmp_path / "store"))


@pytest.fixture
def trial():
    study = optuna.create_study()
    return study, study.ask()


def _ship(tmp_path, store, trial, epochs, records=None, weights=b"\x89HDF weights"):
    shipper = checkpoints.Shipper(store, str(tmp_path / "run"), {"max_trial_bytes": CAP}, lambda line: None)
    folder = tmp_path / "run" / "trials" / f"{trial.number:04d}"
    written = _trial_folder(folder, epochs, weights)
    shipper.watch(SimpleNamespace(number=trial.number, trial=trial, trial_dir=str(folder), code=None,
                                  epochs=written if records is None else records))
    return shipper


def test_a_shipped_checkpoint_comes_back_whole_into_a_fresh_folder(tmp_path, store, trial):
    study, running = trial
    shipper = _ship(tmp_path, store, running, 2, weights=b"w" * 5000)
    shipper.close()
    pointer = study.trials[0].user_attrs[checkpoints.POINTER]
    assert pointer["epoch"] == 2 and pointer["bytes"] > 5000 and len(pointer["sha256"]) == 64
    assert os.listdir(tmp_path / "store") == [pointer["id"]]
    retry = tmp_path / "elsewhere" / "trials" / "0001"
    retry.mkdir(parents=True)
    epochs = checkpoints.restore(store, pointer, str(retry), str(tmp_path / "elsewhere" / ".staging"), CAP)
    assert epochs == 2
    assert (retry / "checkpoint" / checkpoints.WEIGHTS).read_bytes() == b"w" * 5000
    assert json.loads((retry / "checkpoint" / checkpoints.STATE).read_text())["epoch"] == 2
    assert [r["epoch"] for r in trialdir.read_metrics(str(retry / trialdir.METRICS))] == [0, 1]


def test_only_the_newest_checkpoint_is_kept_and_a_told_trial_leaves_none(tmp_path, store, trial):
    study, running = trial
    shipper = _ship(tmp_path, store, running, 1)
    folder = tmp_path / "run" / "trials" / "0000"
    for _ in range(50):  # the thread uploads; the next epoch is shipped once it is done
        if checkpoints.POINTER in study.trials[0].user_attrs:
            break
        time.sleep(0.05)
    first = study.trials[0].user_attrs[checkpoints.POINTER]["id"]
    assert study.trials[0].user_attrs[checkpoints.UPLOADING] == [first], "named in the trial before its upload"
    records = _trial_folder(folder, 2)
    for _ in range(50):
        shipper.watch(SimpleNamespace(number=0, trial=running, trial_dir=str(folder), code=None, epochs=records))
        if study.trials[0].user_attrs[checkpoints.POINTER]["epoch"] == 2:
            break
        time.sleep(0.05)
    newest = study.trials[0].user_attrs[checkpoints.POINTER]["id"]
    assert newest != first
    assert study.trials[0].user_attrs[checkpoints.UPLOADING] == [first, newest], "the previous object's id too"
    for _ in range(50):
        if os.listdir(tmp_path / "store") == [newest]:
            break
        time.sleep(0.05)
    assert os.listdir(tmp_path / "store") == [newest], "the earlier epoch's object is removed"
    attrs = {}
    shipper.ended(running, attrs)
    shipper.close()
    assert attrs["checkpoint_uploads"]["count"] == 2 and attrs["checkpoint_uploads"]["seconds"] >= 0
    assert os.listdir(tmp_path / "store") == [] and not (tmp_path / "run" / checkpoints.STAGING).exists()


def test_no_snapshot_while_keras_writes_the_next_epoch_or_before_its_line_is_read(tmp_path):
    folder = tmp_path / "trial"
    records = _trial_folder(folder, 3)
    target = str(tmp_path / "s.tar")
    assert checkpoints.snapshot(str(folder), records[:2], target, CAP) is None, "its third line is not read yet"
    assert checkpoints.snapshot(str(folder), records, target, 10) is None, "over the trial folder's cap"
    time.sleep(0.01)
    (folder / "checkpoint" / checkpoints.WEIGHTS).write_bytes(b"next epoch, half written")
    assert checkpoints.snapshot(str(folder), records, target, CAP) is None, "weights newer than the epoch count"
    (folder / "checkpoint" / checkpoints.STATE).write_text(json.dumps({"epoch": 3}))
    assert checkpoints.snapshot(str(folder), records, target, CAP) == 3


def test_a_link_or_a_fifo_in_the_checkpoint_is_never_read(tmp_path):
    folder = tmp_path / "trial"
    records = _trial_folder(folder, 1)
    weights = folder / "checkpoint" / checkpoints.WEIGHTS
    weights.unlink()
    os.symlink("/etc/passwd", weights)
    assert checkpoints.snapshot(str(folder), records, str(tmp_path / "s.tar"), CAP) is None
    weights.unlink()
    os.mkfifo(weights)
    assert checkpoints.snapshot(str(folder), records, str(tmp_path / "s.tar"), CAP) is None


def _plant(store, members, epoch=1):
    """An object in the store with a pointer whose size and digest match it: only its content can be refused."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    ident = "checkpoint-" + "a" * 32
    store.write(ident, io.BytesIO(raw))
    return {"id": ident, "epoch": epoch, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


GOOD = {checkpoints.WEIGHTS: b"w", checkpoints.STATE: b'{"epoch": 1}', trialdir.METRICS: b'{"epoch": 0, "loss": 1}\n'}


@pytest.mark.parametrize("members, why", [
    (dict(GOOD, **{"../../escape": b"x"}), "other files than"),
    ({k: v for k, v in GOOD.items() if k != trialdir.METRICS}, "other files than"),
    (dict(GOOD, **{checkpoints.STATE: b'{"epoch": 2}'}), "does not say epoch 1"),
    (dict(GOOD, **{trialdir.METRICS: b'{"epoch": 0, "loss": 1}\n{"epoch": 0, "loss": 1}\n'}), "once each"),
    (dict(GOOD, **{trialdir.METRICS: b'{"epoch": 0, "loss": "1"}\n'}), "a number"),
    (dict(GOOD, **{checkpoints.STATE: b"[[[["}), "malformed"),
])
def test_a_checkpoint_that_is_not_ours_is_refused_and_leaves_nothing(tmp_path, store, members, why):
    pointer = _plant(store, members)
    folder = tmp_path / "retry"
    folder.mkdir()
    with pytest.raises(checkpoints.CheckpointError, match=why.replace(".", r"\.")):
        checkpoints.restore(store, pointer, str(folder), str(tmp_path / "staging"), CAP)
    assert os.listdir(folder) == [] and os.listdir(tmp_path / "staging") == []


@pytest.mark.parametrize("change, why", [
    ({"id": "../../etc/passwd"}, "id is not one"),
    ({"epoch": True}, "epoch is not an integer"),
    ({"bytes": CAP + 1}, "the trial folder's cap"),
    ({"sha256": "0" * 64}, "does not match the size and SHA-256"),
    ({"bytes": 10}, "larger than the 10 bytes recorded"),
])
def test_a_pointer_that_does_not_match_its_object_is_refused(tmp_path, store, change, why):
    pointer = dict(_plant(store, GOOD), **change)
    with pytest.raises(checkpoints.CheckpointError, match=why):
        checkpoints.restore(store, pointer, str(tmp_path), str(tmp_path / "staging"), CAP)
    assert not (tmp_path / trialdir.CHECKPOINT).exists()


def test_the_shipper_says_why_a_retry_trains_from_epoch_0(tmp_path, store):
    shipper = checkpoints.Shipper(store, str(tmp_path), {"max_trial_bytes": CAP}, lambda line: None)
    none = SimpleNamespace(number=3, user_attrs={})
    assert shipper.restore(none, str(tmp_path)) == (None, "no checkpoint of it reached the artifact store")
    gone = SimpleNamespace(number=3, user_attrs={checkpoints.POINTER: dict(_plant(store, GOOD), id="checkpoint-" + "b" * 32)})
    epochs, why = shipper.restore(gone, str(tmp_path))
    assert epochs is None and why == "its checkpoint could not be read (ArtifactNotFound)"


def test_what_a_dead_host_left_half_done_is_removed_when_its_retry_starts(tmp_path, store):
    # CI, 2026-12-07, twice: a host killed mid-upload, then one killed after pointing its trial at the new object but
    # before removing the previous one, each left one object in the bucket. Both ids are named in the trial before
    # the upload; the retry inherits them and removes the ones its pointer does not name.
    kept = _plant(store, GOOD)
    cut_short, previous = "checkpoint-" + "c" * 32, "checkpoint-" + "d" * 32
    for orphan in (cut_short, previous):
        store.write(orphan, io.BytesIO(b"left"))
    shipper = checkpoints.Shipper(store, str(tmp_path), {"max_trial_bytes": CAP}, lambda line: None)
    died_writing = SimpleNamespace(number=4, user_attrs={checkpoints.POINTER: kept,
                                                         checkpoints.UPLOADING: [kept["id"], cut_short]})
    (tmp_path / "trials" / "0004").mkdir(parents=True)
    assert shipper.restore(died_writing, str(tmp_path / "trials" / "0004"))[0] == kept["epoch"]
    died_after_pointing = SimpleNamespace(number=5, user_attrs={checkpoints.POINTER: kept,
                                                                checkpoints.UPLOADING: [previous, kept["id"]]})
    shipper.forget_unfinished_upload(died_after_pointing)
    hostile = SimpleNamespace(number=6, user_attrs={checkpoints.UPLOADING: ["../" + kept["id"], kept["id"][:-1]]})
    shipper.forget_unfinished_upload(hostile)  # a name that is not one of ours is never removed
    shipper.close()
    assert sorted(os.listdir(tmp_path / "store")) == [kept["id"]], "the pointed-to checkpoint stays, the others go"


@pytest.mark.parametrize("location, s3, expected", [
    ("s3://ak:sk@bucket", None, "never in the URL"),
    ("s3://Bucket_Name", None, "s3://BUCKET or s3://BUCKET/PREFIX"),
    ("s3://bucket/a b", None, "prefix 'a b' of s3://bucket is invalid"),
    ("s3://bucket", {"endpoint_url": "ftp://host"}, "s3.endpoint_url is invalid"),
    ("s3://bucket", {"endpoint_url": "http://user:pw@host:9000"}, "without credentials in it"),
    ("s3://bucket", {"access_key": "AKIA"}, "only one of s3.access_key and s3.secret_key"),
    ("/no/such/folder", None, "is not a folder on this host"),
])
def test_a_wrong_store_location_is_refused_in_one_line(location, s3, expected):
    with pytest.raises(AutotuneError, match=expected.replace("(", r"\(").replace(")", r"\)")) as caught:
        artifacts.make_store(location, s3)
    assert "\n" not in str(caught.value) and "pw" not in str(caught.value) and "sk@" not in str(caught.value)


def test_a_prefix_keeps_every_object_under_it(tmp_path):
    inner = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    (tmp_path / "fleet").mkdir()
    store = artifacts.PrefixedStore(inner, "fleet/")
    store.write("x", io.BytesIO(b"1"))
    assert (tmp_path / "fleet" / "x").read_bytes() == b"1" and store.open_reader("x").read() == b"1"
    store.remove("x")
    assert os.listdir(tmp_path / "fleet") == []


def test_a_dead_hosts_trial_is_retried_here_from_its_shipped_checkpoint(tmp_path, store):
    """The study loop's hook: a trial another host left RUNNING, failed and retried as Optuna's heartbeat callback does,
    starts here in a fresh folder holding the checkpoint that host shipped; the inherited object is removed once the
    retry is told."""
    from test_study_loop import _setup, by_filters  # pylint: disable=import-outside-toplevel

    config, plan, run_dir = _setup(tmp_path)
    study = open_study(config, plan, default_storage(run_dir))
    study.enqueue_trial({"filters": 4})
    dead = study.ask()
    params = dict(plan["baseline"], filters=dead.suggest_int("filters", 4, 32, log=True))
    for name, value in {"run_dir": str(tmp_path / "host-a"), "params": params, "trial_dir": "trials/0000"}.items():
        dead.set_user_attr(name, value)
    _ship(tmp_path / "host-a", store, dead, 2, weights=b"epoch 2 weights").close()
    study.tell(dead.number, state=optuna.trial.TrialState.FAIL)
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.get_trials()[0])
    lines, runner = [], FakeRunner(by_filters({4: [0.9]}))
    loop = StudyLoop(config, plan, {"path": "x.npz"}, runner, run_dir, default_storage(run_dir), lines.append)
    loop.checkpoints = checkpoints.Shipper(store, run_dir, config["runner"], lines.append)
    folder, laid = tmp_path / "run" / "trials" / "0001", []
    start = runner.start
    runner.start = lambda *args: laid.append((folder / "checkpoint" / checkpoints.WEIGHTS).read_bytes()) or start(*args)
    study, reason, _ = loop.run()
    assert reason == "goal reached" and [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert [f for f, _ in runner.started] == [str(folder)]
    assert laid == [b"epoch 2 weights"], "the retry started with the shipped checkpoint in its folder"
    assert not (folder / "checkpoint").exists(), "a told trial that is not continued keeps no checkpoint"
    assert "trial   1  retrying trial 0 of a host that stopped, from its checkpoint after epoch 2" in lines
    assert os.listdir(tmp_path / "store") == [], "the inherited checkpoint is removed once the retry is told"
