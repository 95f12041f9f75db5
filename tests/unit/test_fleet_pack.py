"""The fleet's data check and the paths it trusts (module_utils/autotune/fleet.py), without a database."""
import shutil
import tarfile

import numpy as np
import pytest

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune import fleet
from ansible.module_utils.autotune.errors import AutotuneError

DATASET = {"image_size": [28, 28], "color": "grayscale", "validation_split": 0.2, "test_split": 0.15, "seed": 1}


@pytest.fixture(scope="module")
def packed(sample_data, tmp_path_factory):
    return tune_dataset.prepare(dict(DATASET, path=str(sample_data)), str(tmp_path_factory.mktemp("pack")))["path"]


def test_the_fingerprint_follows_the_bytes_not_the_folder(packed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    assert fleet.pack_fingerprint(str(copy)) == fleet.pack_fingerprint(packed)
    labels = np.load(copy / "y_val.npy")
    labels[0] = 1 - labels[0]
    np.save(copy / "y_val.npy", labels)
    assert fleet.pack_fingerprint(str(copy)) != fleet.pack_fingerprint(packed)


def test_a_host_with_other_data_is_refused_in_one_line_naming_both(packed, tmp_path):
    copy = tmp_path / "other"
    shutil.copytree(packed, copy)
    (copy / "y_val.npy").write_bytes(b"not the same")
    with pytest.raises(AutotuneError) as caught:
        fleet.check_data(str(copy), fleet.pack_fingerprint(packed), "s", "postgresql://u:p@127.0.0.1:1/x", "h3")
    line = str(caught.value)
    assert "\n" not in line and "host h3" in line and fleet.pack_fingerprint(packed) in line
    assert fleet.pack_fingerprint(str(copy)) in line and "does not join" in line


def test_a_folder_that_is_no_pack_is_named(tmp_path):
    with pytest.raises(AutotuneError, match="is not a packed data set"):
        fleet.pack_fingerprint(str(tmp_path))


def test_a_file_storage_is_refused_for_a_fleet():
    with pytest.raises(AutotuneError, match="expected a database server URL"):
        fleet.create({}, {"api": "template"}, "/nonexistent", "sqlite:///x.db")


@pytest.mark.parametrize("relative, kept", [("trials/0003", "trials/0003"), ("../../etc", None), ("/etc", None),
                                            ("", None), ("trials/../../x", None)])
def test_artifacts_land_only_inside_the_run_folder(relative, kept):
    assert fleet._inside(relative) == kept  # pylint: disable=protected-access


def test_workers_draw_with_seeds_of_their_own():
    assert fleet.worker_seed("host-a") != fleet.worker_seed("host-b")
    assert fleet.worker_seed("host-a") == fleet.worker_seed("host-a")


def _script_folder(root):
    """A seed-shaped folder: train.py beside the images it reads, plus what is never shipped."""
    (root / "cnn_dataset" / "test_set" / "cats").mkdir(parents=True)
    (root / "cnn_dataset" / "test_set" / "cats" / "1.png").write_bytes(b"png")
    (root / "train.py").write_text("import keras\n")
    (root / ".env").write_text("TOKEN=secret\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "runs").mkdir()
    (root / "runs" / "big.bin").write_bytes(b"x" * 1000)
    (root / "link.py").symlink_to(root / "train.py")
    return root


def _script_plan(root):
    return {"api": "script", "file": str(root / "train.py")}


def test_a_script_folder_is_packed_without_links_hidden_or_run_files(tmp_path):
    folder = _script_folder(tmp_path / "model")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    staged = fleet.stage_model(_script_plan(folder), {"dataset": {"path": str(folder / "cnn_dataset/test_set")}},
                               str(run_dir))
    assert staged["file"] == "train.py" and staged["data"] == "cnn_dataset/test_set" and staged["files"] == 2
    with tarfile.open(staged["archive"]) as archive:
        assert sorted(archive.getnames()) == ["cnn_dataset/test_set/cats/1.png", "train.py"]
        archive.extractall(tmp_path / "host", filter="data")
    # The host's unpacked copy has the fingerprint the archive was made with (one read of each file for both).
    assert fleet.model_fingerprint(str(tmp_path / "host")) == staged["fingerprint"] == fleet.model_fingerprint(str(folder))
    override = fleet.shipped_model({"path": str(tmp_path / "host"), "file": "train.py", "data": staged["data"],
                                    "fingerprint": staged["fingerprint"]}, "h1")
    assert override == {"model": {"file": str(tmp_path / "host" / "train.py")},
                        "dataset": {"path": str(tmp_path / "host" / "cnn_dataset" / "test_set")}}


def test_a_host_whose_model_copy_differs_is_refused_in_one_line(tmp_path):
    folder = _script_folder(tmp_path / "model")
    shipped = fleet.model_fingerprint(str(folder))
    (folder / "train.py").write_text("import keras  # changed on the host\n")
    with pytest.raises(AutotuneError) as caught:
        fleet.shipped_model({"path": str(folder), "file": "train.py", "data": None, "fingerprint": shipped}, "h2")
    line = str(caught.value)
    assert "\n" not in line and "host h2" in line and shipped in line and fleet.model_fingerprint(str(folder)) in line
    assert "does not join" in line


def test_a_script_reading_images_outside_its_folder_is_refused_on_a_fleet(tmp_path):
    folder = _script_folder(tmp_path / "model")
    with pytest.raises(AutotuneError, match="is outside the script's folder"):
        fleet.stage_model(_script_plan(folder), {"dataset": {"path": str(tmp_path)}}, str(tmp_path))


def test_a_template_ships_no_model_folder(tmp_path):
    assert fleet.stage_model({"api": "template"}, {}, str(tmp_path)) is None


def test_an_oversized_model_folder_is_refused(tmp_path, monkeypatch):
    folder = _script_folder(tmp_path / "model")
    monkeypatch.setattr(fleet, "MAX_MODEL_FOLDER_FILES", 1)
    with pytest.raises(AutotuneError, match="expected a model's folder of ordinary size"):
        fleet.model_fingerprint(str(folder))
