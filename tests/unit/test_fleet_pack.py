"""The fleet's data check and the paths it trusts (module_utils/autotune/fleet.py), without a database."""
import shutil

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
