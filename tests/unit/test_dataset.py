"""The data contract: class folders of PNG/JPEG images of any size, grey or colour, split reproducibly."""
import contextlib
import os

import numpy as np
import pytest
from PIL import Image

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune.errors import AutotuneError


@contextlib.contextmanager
def _packed(path):
    """The packed folder's arrays, as ``np.load`` of an .npz gave them before."""
    yield {name: np.load(os.path.join(path, f"{name}.npy")) for name in ("x_train", "y_train", "x_val", "y_val")}


def _mixed_folder(root):
    """Kaggle-like: JPEG and PNG, colour and grey, different sizes."""
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40 + i, 30, 3), dtype=np.uint8)).save(root / "cats" / f"cat.{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (20, 25 + i), dtype=np.uint8)).save(root / "dogs" / f"dog.{i}.png")
    (root / "dogs" / "notes.txt").write_text("not an image, ignored")
    return root


def _config(path, color="rgb", seed=1):
    return {"path": str(path), "image_size": [16, 12], "color": color, "validation_split": 0.2, "test_split": 0.15, "seed": seed}


def test_mixed_images_are_resized_and_split_stratified(tmp_path):
    data = _mixed_folder(tmp_path / "data")
    facts = tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    assert facts["classes"] == ["cats", "dogs"] and facts["counts"] == {"cats": 10, "dogs": 10}
    assert facts["input_shape"] == [16, 12, 3]
    with _packed(facts["path"]) as packed:
        assert packed["x_train"].shape == (12, 16, 12, 3) and packed["x_val"].shape == (4, 16, 12, 3)
        assert facts["n_test"] == 4 and np.load(os.path.join(facts["test_path"], "x_test.npy")).shape[0] == 4
        assert packed["x_train"].dtype == np.uint8 and packed["y_train"].dtype == np.int64
        assert sorted(np.bincount(packed["y_val"])) == [2, 2]  # stratified: two of each class


def test_split_is_reproducible_and_depends_on_seed(tmp_path):
    data = _mixed_folder(tmp_path / "data")
    first = tune_dataset.prepare(_config(data, "grayscale"), str(tmp_path / "a"))
    again = tune_dataset.prepare(_config(data, "grayscale"), str(tmp_path / "b"))
    other = tune_dataset.prepare(_config(data, "grayscale", seed=2), str(tmp_path / "c"))
    with _packed(first["path"]) as a, _packed(again["path"]) as b, _packed(other["path"]) as c:
        assert np.array_equal(a["x_val"], b["x_val"]) and np.array_equal(a["y_train"], b["y_train"])
        assert not np.array_equal(a["x_val"], c["x_val"])
        assert a["x_train"].shape[-1] == 1


def test_pack_is_cached_until_an_image_changes(tmp_path):
    data = _mixed_folder(tmp_path / "data")
    first = tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    assert tune_dataset.prepare(_config(data), str(tmp_path / "cache"))["path"] == first["path"]
    Image.new("RGB", (9, 9)).save(data / "cats" / "cat.new.png")
    changed = tune_dataset.prepare(_config(data), str(tmp_path / "cache"))
    assert changed["path"] != first["path"] and changed["counts"]["cats"] == 11


def test_sample_data_is_cats_and_dogs(sample_data):
    assert sorted(p.name for p in sample_data.iterdir()) == ["cat", "dog"]
    assert len(list((sample_data / "cat").glob("*.png"))) == 1000
    with Image.open(next((sample_data / "dog").glob("*.png"))) as image:
        assert image.size == (28, 28) and image.mode == "L"


def _two_classes(root, size=(20, 20), n=4):
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", size, color=40 * i).save(root / name / f"{name}.{i}.png")
    return root


def test_a_dataset_path_that_is_a_file_says_so(tmp_path):
    image = tmp_path / "cat.png"
    Image.new("L", (8, 8)).save(image)
    with pytest.raises(AutotuneError) as caught:
        tune_dataset.scan(str(image))
    assert str(caught.value) == f"dataset.path: '{image}' is a file; expected a folder of class sub-folders of images"


def test_files_that_are_not_images_are_one_warning_with_the_count_and_the_first_names(tmp_path):
    root = _two_classes(tmp_path / "data")
    (root / "cat" / "labels.csv").write_text("file,label\n")
    (root / "dog" / "README.txt").write_text("dogs\n")
    Image.new("L", (20, 20)).save(root / "dog" / "photo.txt", format="PNG")  # a PNG by its content
    (root / "dog" / "more").mkdir()
    (root / "dog" / ".DS_Store").write_text("")  # hidden: not a user's file
    warnings = []
    classes = tune_dataset.scan(str(root), warnings)
    assert [len(files) for files in classes.values()] == [4, 4]
    assert warnings == ["dataset.path: skipped 4 entries of the class folders that are not .png/.jpg/.jpeg files "
                        "('cat/labels.csv', 'dog/README.txt', 'dog/more', ...); 1 of them is PNG/JPEG by "
                        "content (first 'dog/photo.txt'): rename them to .png/.jpg to train on them"]
    assert tune_dataset.scan(str(root)) == classes, "without a list to fill, scan is as before"


def test_a_clean_data_set_gives_no_warning(tmp_path):
    warnings = []
    tune_dataset.scan(str(_two_classes(tmp_path / "data")), warnings)
    assert warnings == [] and tune_dataset.size_warnings(tune_dataset.scan(str(tmp_path / "data")), [28, 28]) == []


def test_images_far_smaller_than_image_size_are_one_warning(tmp_path, monkeypatch):
    classes = tune_dataset.scan(str(_two_classes(tmp_path / "data", size=(1, 1), n=20)))
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self))  # headers only, nothing decoded
    assert tune_dataset.size_warnings(classes, [28, 28]) == [
        "dataset.image_size: 16 of 16 sampled images are far smaller than 28x28 (the smallest 1x1): they are upscaled "
        "more than 4x; expected images about image_size or larger, or a smaller dataset.image_size"]
    assert decoded == []
    assert tune_dataset.size_warnings(classes, [4, 4]) == []
