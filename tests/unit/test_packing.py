"""Packing streams into uint8 files (in parallel, with progress, never past a full disk); trials read them per batch."""
import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune.errors import AutotuneError
from autotune_trainer import data as trainer_data

Usage = namedtuple("Usage", "total used free")


def _folder(root, per_class=12):
    rng = np.random.default_rng(3)
    for name in ("cats", "dogs", "owls"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20 + i, 18, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _config(path, color="rgb"):
    return {"path": str(path), "image_size": [10, 8], "color": color, "validation_split": 0.25, "test_split": 0.15, "seed": 5}


def _arrays(path):
    return {name: np.load(os.path.join(path, f"{name}.npy")) for name in ("x_train", "y_train", "x_val", "y_val")}


def test_each_packed_row_is_its_image_in_the_seeded_split_order(tmp_path):
    """Same split as the in-memory packer had (``_split`` of the labels in class-folder order), row for row."""
    data = _folder(tmp_path / "data")
    facts = tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    classes = tune_dataset.scan(str(data))
    files = [f for name in classes for f in classes[name]]
    labels = np.repeat(np.arange(3), 12)
    train, val, test = tune_dataset._split(labels, 0.25, 5, 0.15)
    packed = _arrays(facts["path"])
    packed.update({name: np.load(os.path.join(facts["test_path"], f"{name}.npy")) for name in ("x_test", "y_test")})
    for part, order in (("train", train), ("val", val), ("test", test)):
        expected = np.stack([tune_dataset._load_image(files[i], [10, 8], "RGB") for i in order])
        assert np.array_equal(packed[f"x_{part}"], expected) and np.array_equal(packed[f"y_{part}"], labels[order])
    meta = json.loads((Path(facts["path"]) / tune_dataset.PACK_META).read_text())
    assert meta == {"format": 2, "classes": ["cats", "dogs", "owls"], "input_shape": [10, 8, 3], "n_train": 21, "n_val": 9}
    assert sorted(np.bincount(labels[test])) == [2, 2, 2] and facts["n_test"] == 6, "stratified test split"
    assert not set(test) & (set(train) | set(val)), "the test split shares no image with what trials hold"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([Path(facts["path"]).name, "held-out"]), \
        "no partial folder is left"
    assert os.stat(tmp_path / "cache" / "held-out").st_mode & 0o777 == 0o700, "the held-out pack is the controller's"


def test_parallel_decode_packs_the_same_bytes_and_reports_progress(tmp_path, monkeypatch):
    data = _folder(tmp_path / "data")
    serial = tune_dataset.prepare(_config(data, "grayscale"), str(tmp_path / "serial"))
    monkeypatch.setattr(tune_dataset, "PARALLEL_FROM", 1)
    monkeypatch.setattr(tune_dataset, "PROGRESS_FROM", 1)
    monkeypatch.setattr(tune_dataset, "CHUNK", 5)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    lines = []
    parallel = tune_dataset.prepare(_config(data, "grayscale"), str(tmp_path / "parallel"), progress=lines.append)
    a, b = _arrays(serial["path"]), _arrays(parallel["path"])
    assert all(np.array_equal(a[k], b[k]) for k in a) and a["x_train"].shape == (21, 10, 8, 1)
    assert [line.split(" (")[0] for line in lines if "100 %" in line] == ["dataset: packed 30/30 images",
                                                                         "dataset: packed 6/6 images"]
    assert "2 worker(s)" in lines[-1], "the trials' pack, then the held-out pack"


def test_a_set_that_does_not_fit_the_disk_fails_in_one_line_before_writing(tmp_path, monkeypatch):
    data = _folder(tmp_path / "data")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: Usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(AutotuneError) as error:
        tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    message = str(error.value)
    assert "\n" not in message and "packing 36 images needs" in message and "only 1 MiB are free" in message
    assert "expected enough free disk space" in message
    assert not (tmp_path / "cache").exists(), "nothing written, not even the cache folder"


def test_a_broken_image_in_a_worker_fails_in_one_line_and_leaves_no_pack(tmp_path, monkeypatch):
    data = _folder(tmp_path / "data")
    (data / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")
    monkeypatch.setattr(tune_dataset, "PARALLEL_FROM", 1)
    monkeypatch.setattr(tune_dataset, "CHUNK", 4)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    with pytest.raises(AutotuneError, match=r"broken\.jpg.* cannot be read .*expected a valid PNG or JPEG") as error:
        tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    assert "\n" not in str(error.value)
    assert list((tmp_path / "cache").iterdir()) == [], "neither a pack nor a partial folder is left"


def test_a_stale_partial_pack_is_removed_and_the_cache_is_reused(tmp_path):
    data = _folder(tmp_path / "data")
    first = tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    shutil.rmtree(first["path"])
    (tmp_path / "cache" / (Path(first["path"]).name + ".partial-99999")).mkdir()  # a packer killed midway
    again = tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    assert again == first and sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [Path(first["path"]).name, "held-out"])
    stamp = os.stat(Path(first["path"]) / "x_train.npy").st_mtime_ns
    assert tune_dataset.prepare(_config(data), str(tmp_path / "cache")) == first
    assert os.stat(Path(first["path"]) / "x_train.npy").st_mtime_ns == stamp, "cached: not decoded again"


def test_the_trainer_reads_the_controllers_pack_format():
    for name in ("PACK_FORMAT", "PACK_META", "PACK_PARTS", "TEST_PARTS"):
        assert getattr(trainer_data, name) == getattr(tune_dataset, name), f"{name} differs between packer and reader"


def test_the_reader_takes_rows_without_loading_the_set(tmp_path):
    data = _folder(tmp_path / "data")
    facts = tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    packed, expected = trainer_data.load_dataset(facts["path"]), _arrays(facts["path"])
    assert packed.class_names == ["cats", "dogs", "owls"] and packed.input_shape == (10, 8, 3)
    assert np.array_equal(packed.images["train"].take([5, 0, 20]), expected["x_train"][[5, 0, 20]])
    assert np.array_equal(packed.labels["val"], expected["y_val"])
    with pytest.raises(IndexError):
        packed.images["val"].take([9])
    meta = Path(facts["path"]) / trainer_data.PACK_META
    meta.write_text(json.dumps(dict(json.loads(meta.read_text()), format=0)))
    with pytest.raises(ValueError, match="packed format 0; expected 2"):
        trainer_data.load_dataset(facts["path"])


def test_batches_are_pixels_0_to_255_shuffled_per_epoch_and_validation_keeps_its_order(tmp_path):
    data = _folder(tmp_path / "data")
    facts = tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    packed, expected = trainer_data.load_dataset(facts["path"]), _arrays(facts["path"])
    train = packed.batches("train", 8, shuffle=True, seed=1)
    epochs = [[(x.numpy(), y.numpy()) for x, y in train] for _ in range(2)]
    for batches in epochs:
        assert [len(y) for _, y in batches] == [8, 8, 5]
        x = np.concatenate([x for x, _ in batches])
        # As keras.utils.image_dataset_from_directory gives them: the model scales its own input.
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 255.0 and x.max() > 1.0
        rows = {tuple(r.astype(np.uint8).ravel()): y for r, y in
                zip(x, np.concatenate([y for _, y in batches]))}
        truth = {tuple(r.ravel()): y for r, y in zip(expected["x_train"], expected["y_train"])}
        assert rows == truth, "every training image once per epoch, with its own label"
    assert not np.array_equal(epochs[0][0][1], epochs[1][0][1]) or not np.array_equal(epochs[0][0][0], epochs[1][0][0])
    val = [(x.numpy(), y.numpy()) for x, y in packed.batches("val", 4)]
    assert np.array_equal(np.concatenate([y for _, y in val]), expected["y_val"])
    assert np.array_equal(np.concatenate([x for x, _ in val]), expected["x_val"].astype(np.float32))


def test_labels_come_in_the_form_the_loss_wants(tmp_path):
    data = _folder(tmp_path / "data")
    packed = trainer_data.load_dataset(tune_dataset.prepare(_config(data), str(tmp_path / "cache"))["path"])
    truth = np.concatenate([y.numpy() for _, y in packed.batches("val", 4)])
    one_hot = np.concatenate([y.numpy() for _, y in packed.batches("val", 4, labels="one_hot")])
    binary = np.concatenate([y.numpy() for _, y in packed.batches("val", 4, labels="binary")])
    assert one_hot.shape == (len(truth), len(packed.class_names)) and np.array_equal(one_hot.argmax(axis=1), truth)
    assert binary.shape == (len(truth), 1) and binary.dtype == np.float32 and np.array_equal(binary[:, 0], truth)
    scaled = next(iter(packed.batches("val", 4, scale=1 / 255)))[0].numpy()
    assert scaled.max() <= 1.0
