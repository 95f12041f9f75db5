"""The input contract: a folder of class sub-folders of images (PNG/JPEG, any size, grey or colour).

``prepare`` checks the folder, resizes every image to the configured size,
splits it reproducibly (seeded, stratified) and packs it into one .npz that
each trial reads (a local process, or a container with it mounted read-only).
The pack is cached under its fingerprint, so a re-run or a resumed study does
not decode the images again.
"""
import hashlib
import json
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ansible.module_utils.autotune.errors import AutotuneError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _inside(path, root):
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


def scan(path):
    """Return {class name: [image paths]} or raise AutotuneError naming what is wrong.

    A link that leads out of the data set is refused: a pushed configuration must not turn
    another folder of the host into training data. Error messages give counts, never the
    names found in a folder that may not be a data set at all.
    """
    if not os.path.isdir(path):
        raise AutotuneError(f"dataset.path: {path!r} does not exist; expected a folder of class sub-folders of images")
    classes = {}
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            if not _inside(entry.path, path):
                raise AutotuneError(f"dataset.path: class folder {entry.name!r} is a link out of {path!r}; "
                                    "expected the data set's own folders")
            files = [os.path.join(entry.path, f.name) for f in os.scandir(entry.path)
                     if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES)]
            outside = [f for f in files if not _inside(f, path)]
            if outside:
                raise AutotuneError(f"dataset.path: {len(outside)} image(s) of class {entry.name!r} link out of "
                                    f"{path!r}; expected the data set's own files")
            classes[entry.name] = sorted(files)
    if len(classes) < 2:
        raise AutotuneError(f"dataset.path: {path!r} has {len(classes)} class folder(s); "
                            "expected at least 2 sub-folders, one per class")
    empty = sum(1 for files in classes.values() if not files)
    if empty:
        raise AutotuneError(f"dataset.path: {empty} of {len(classes)} class folders in {path!r} hold no PNG/JPEG "
                            "images; expected at least one image in each")
    return classes


def fingerprint(classes, image_size, color, validation_split, seed):
    digest = hashlib.sha256(json.dumps([image_size, color, validation_split, seed]).encode())
    for name, files in classes.items():
        for file_path in files:
            stat = os.stat(file_path)
            digest.update(f"{name}/{os.path.basename(file_path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _load_image(file_path, image_size, mode):
    try:
        with Image.open(file_path) as image:
            image = image.convert(mode).resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise AutotuneError(f"dataset.path: image {file_path!r} decodes to more than {Image.MAX_IMAGE_PIXELS} pixels "
                            "(a decompression bomb?); expected an ordinary photo")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise AutotuneError(f"dataset.path: image {file_path!r} cannot be read ({exc}); expected a valid PNG or JPEG")
    return array[..., np.newaxis] if array.ndim == 2 else array


def _split(labels, validation_split, seed):
    """Stratified, seeded: the same folder and seed always give the same split."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = max(1, int(round(len(members) * validation_split))) if len(members) > 1 else 0
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return rng.permutation(train), rng.permutation(val)


def validation_files(dataset_config):
    """The validation split as files: {classes, files, labels} — the same split ``prepare`` packs."""
    classes = scan(dataset_config["path"])
    names = list(classes)
    files = [f for name in names for f in classes[name]]
    labels = np.asarray([label for label, name in enumerate(names) for _ in classes[name]], dtype=np.int64)
    _, val = _split(labels, dataset_config["validation_split"], dataset_config["seed"])
    return {"classes": names, "files": [files[i] for i in val], "labels": [int(labels[i]) for i in val]}


def prepare(dataset_config, cache_dir):
    """Validate and pack the data set; return facts about it, including the .npz path."""
    classes = scan(dataset_config["path"])
    size, color = dataset_config["image_size"], dataset_config["color"]
    split, seed = dataset_config["validation_split"], dataset_config["seed"]
    key = fingerprint(classes, size, color, split, seed)
    packed = os.path.join(cache_dir, f"dataset-{key}.npz")
    names = list(classes)
    counts = {name: len(files) for name, files in classes.items()}
    if not os.path.exists(packed):
        mode = "L" if color == "grayscale" else "RGB"
        images, labels = [], []
        for label, name in enumerate(names):
            for file_path in classes[name]:
                images.append(_load_image(file_path, size, mode))
                labels.append(label)
        x, y = np.stack(images), np.asarray(labels, dtype=np.int64)
        train, val = _split(y, split, seed)
        if len(val) == 0 or len(train) == 0:
            raise AutotuneError(f"dataset.path: {dataset_config['path']!r} is too small to split; expected at least 2 images per class")
        os.makedirs(cache_dir, exist_ok=True)
        tmp = packed + ".partial.npz"
        np.savez(tmp, x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val], class_names=np.asarray(names))
        os.replace(tmp, packed)
    with np.load(packed, allow_pickle=False) as data:
        n_train, n_val, shape = len(data["y_train"]), len(data["y_val"]), list(data["x_train"].shape[1:])
    return {"path": packed, "classes": names, "counts": counts, "n_train": n_train, "n_val": n_val,
            "input_shape": shape, "fingerprint": key, "source": dataset_config["path"]}
