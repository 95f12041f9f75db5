"""The input contract: a folder of class sub-folders of images (PNG/JPEG, any size, grey or colour).

``prepare`` checks the folder, splits it reproducibly (seeded, stratified),
resizes every image to the configured size and packs it into one folder of
uint8 .npy arrays (``x_train``, ``y_train``, ``x_val``, ``y_val``) and a
``dataset.json``, which each trial reads a batch at a time (a local process, or
a container with the folder mounted read-only): trials never hold the set in
memory, and all trials of a host share it through the page cache
(docs/data.md).

The split is three-way. The test split (``dataset.test_split`` of every class, or
the whole ``dataset.test`` folder when one is given) is packed into a folder of
its own beside the trials' pack, readable by the controller alone (0700): no
trial's process or container ever holds it, only the controller's verifier,
which judges the goal on it (study.py). So the number reported is measured on
images the search never saw. Packing streams: the split is known before any image is
decoded, so worker processes decode straight into pre-allocated files, in
constant memory. The pack is cached under its fingerprint, so a re-run or a
resumed study does not decode the images again.
"""
import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.trialdir import open_regular

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The packed folder's contract, shared with trainer/autotune_trainer/data.py (a unit test pins the two).
PACK_FORMAT = 2
PACK_META = "dataset.json"
PACK_PARTS = ("train", "val")
TEST_PARTS = ("test",)  # the held-out pack: the verifier's only (never mounted into a trial)
# The held-out packs live in a 0700 folder of the cache: a local trainer running as another user cannot
# reach them, and a container is only ever given the trials' pack (the verifier's gets the test pack alone).
HELD_OUT = "held-out"
CHUNK = 256  # images per decode job: one progress step, one short-lived mapping in a worker
PARALLEL_FROM = 1000  # fewer images decode faster in this process than a pool starts
PROGRESS_FROM = 5000  # larger sets report progress about every PROGRESS_SECONDS
PROGRESS_SECONDS = 10.0
DISK_RESERVE = 64 * 2**20  # left free after packing: the study and its trials write to the same disk


def _inside(path, root):
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


# What a PNG or a JPEG file starts with: a file of a class folder is told an image by its first bytes.
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
SHOWN_NAMES = 3  # names a warning shows, after the count
SIZE_SAMPLE = 16  # image headers read for the size check (never decoded)
FAR_SMALLER = 4  # an image more than this many times smaller than image_size in a side is "far smaller"


def _content_kind(file_path):
    """"PNG" or "JPEG" by the file's first bytes; None for anything else (or a file that cannot be read)."""
    try:
        with open(file_path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def _class_files(path, entry, skipped):
    """The images of one class folder (by suffix); every other file goes to ``skipped`` as 'class/name'."""
    files = []
    for item in os.scandir(entry.path):
        if item.is_file() and item.name.lower().endswith(IMAGE_SUFFIXES):
            files.append(os.path.join(entry.path, item.name))
        elif not item.name.startswith("."):
            skipped.append(os.path.join(entry.name, item.name))
    outside = [f for f in files if not _inside(f, path)]
    if outside:
        raise AutotuneError(f"dataset.path: {len(outside)} image(s) of class {entry.name!r} link out of "
                            f"{path!r}; expected the data set's own files")
    return sorted(files)


def skipped_warning(path, skipped):
    """One line for the entries of class folders that are not PNG/JPEG files (None when there are none):
    the count, the first names, and how many of them are images by their content under another name."""
    if not skipped:
        return None
    skipped = sorted(skipped)
    disguised = [name for name in skipped if _content_kind(os.path.join(path, name))]
    names = ", ".join(repr(name) for name in skipped[:SHOWN_NAMES]) + (", ..." if len(skipped) > SHOWN_NAMES else "")
    renamed = (f"; {len(disguised)} of them {'is' if len(disguised) == 1 else 'are'} PNG/JPEG by content "
               f"(first {disguised[0]!r}): rename them to .png/.jpg to train on them" if disguised else "")
    one = len(skipped) == 1
    return (f"dataset.path: skipped {len(skipped)} entr{'y' if one else 'ies'} of the class folders that "
            f"{'is' if one else 'are'} not .png/.jpg/.jpeg files ({names}){renamed}")


def scan(path, warnings=None):
    """Return {class name: [image paths]} or raise AutotuneError naming what is wrong.

    A link that leads out of the data set is refused: a pushed configuration must not turn
    another folder of the host into training data. Error messages give counts, never the
    names found in a folder that may not be a data set at all. Given a list, ``warnings`` gets
    one line for the files of class folders that are skipped (named only once the folder is a data set).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise AutotuneError(f"dataset.path: {path!r} is a file; expected a folder of class sub-folders of images")
    if not os.path.isdir(path):
        raise AutotuneError(f"dataset.path: {path!r} does not exist; expected a folder of class sub-folders of images")
    classes, skipped = {}, []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            if not _inside(entry.path, path):
                raise AutotuneError(f"dataset.path: class folder {entry.name!r} is a link out of {path!r}; "
                                    "expected the data set's own folders")
            classes[entry.name] = _class_files(path, entry, skipped)
    if len(classes) < 2:
        raise AutotuneError(f"dataset.path: {path!r} has {len(classes)} class folder(s); "
                            "expected at least 2 sub-folders, one per class")
    empty = sum(1 for files in classes.values() if not files)
    if empty:
        raise AutotuneError(f"dataset.path: {empty} of {len(classes)} class folders in {path!r} hold no PNG/JPEG "
                            "images; expected at least one image in each")
    line = skipped_warning(path, skipped) if warnings is not None else None
    if line:
        warnings.append(line)
    return classes


def size_warnings(classes, image_size):
    """[one line] when at least half the sampled images are far smaller than image_size (upscaled more than
    FAR_SMALLER times in a side: 1x1 images become flat squares), else []. Reads a few headers, decodes nothing."""
    files = [f for name in classes for f in classes[name]]
    step = max(1, len(files) // SIZE_SAMPLE)
    sizes = []
    for file_path in files[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(file_path) as image:  # reads the header only
                sizes.append(image.size)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            continue  # packing names the file in one line
    height, width = image_size
    small = [(w, h) for w, h in sizes if w * FAR_SMALLER < width or h * FAR_SMALLER < height]
    if not small or len(small) * 2 < len(sizes):
        return []
    smallest = min(small, key=lambda s: s[0] * s[1])
    return [f"dataset.image_size: {len(small)} of {len(sizes)} sampled images are far smaller than {height}x{width} "
            f"(the smallest {smallest[1]}x{smallest[0]}): they are upscaled more than {FAR_SMALLER}x; expected images "
            "about image_size or larger, or a smaller dataset.image_size"]


def fingerprint(classes, image_size, color, validation_split, seed, test_split=0.0):
    digest = hashlib.sha256(json.dumps([image_size, color, validation_split, seed, PACK_FORMAT, test_split]).encode())
    for name, files in classes.items():
        for file_path in files:
            stat = os.stat(file_path)
            digest.update(f"{name}/{os.path.basename(file_path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def pack_fingerprint(packed):
    """The packed data set's identity: a digest of its bytes (names and contents of its files)."""
    if not os.path.isfile(os.path.join(packed, PACK_META)):
        raise AutotuneError(f"dataset: {packed!r} is not a packed data set (no {PACK_META}); "
                            "expected a folder the controller packed (a fleet's shipped one, a run's data/dataset-*)")
    digest = hashlib.sha256()
    for name in sorted(os.listdir(packed)):
        path = os.path.join(packed, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        digest.update(name.encode() + b"\0")
        with open_regular(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
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


def _split(labels, validation_split, seed, test_split=0.0):
    """Stratified, seeded: the same folder and seed always give the same (train, val, test) split.
    Each class keeps at least one training image, then gives one to validation, then one to test, when it can."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = min(len(members) - 1, max(1, int(round(len(members) * validation_split))))
        spare = len(members) - 1 - n_val
        n_test = min(spare, max(1, int(round(len(members) * test_split)))) if test_split and spare > 0 else 0
        val.extend(members[:n_val])
        test.extend(members[n_val:n_val + n_test])
        train.extend(members[n_val + n_test:])
    return rng.permutation(train), rng.permutation(val), rng.permutation(test)


def constant_answer_accuracy(packed):
    """The validation accuracy of a model that answers the largest class for every image of the pack's validation
    split: what learning nothing scores. None when the pack has no validation labels."""
    try:
        labels = np.load(os.path.join(packed, "y_val.npy"), allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError):
        return None
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    if labels.size == 0 or labels.min() < 0:
        return None
    return float(np.bincount(labels).max() / labels.size)


def held_out_share(dataset_config):
    """The fraction carved out of ``dataset.path`` for the test split: none when ``dataset.test`` is its own folder."""
    return 0.0 if dataset_config.get("test") else dataset_config["test_split"]


def _indexed(classes):
    names = list(classes)
    files = [f for name in names for f in classes[name]]
    labels = np.asarray([label for label, name in enumerate(names) for _ in classes[name]], dtype=np.int64)
    return names, files, labels


def held_out_classes(dataset_config, classes):
    """``dataset.test``'s images by class, in ``dataset.path``'s class order (the model's label order)."""
    try:
        found = scan(dataset_config["test"])
    except AutotuneError as exc:  # scan's lines name dataset.path: this folder is dataset.test
        raise AutotuneError(str(exc).replace("dataset.path", "dataset.test", 1)) from None
    if list(found) != list(classes):
        raise AutotuneError(f"dataset.test: classes {sorted(found)} differ from dataset.path's {sorted(classes)}; "
                            "expected the same class sub-folders")
    return found


def split_files(dataset_config, part):
    """One split (``val`` or ``test``) as files: {classes, files, labels} — the same split ``prepare`` packs."""
    classes = scan(dataset_config["path"])
    if part == "test" and dataset_config.get("test"):
        names, files, labels = _indexed(held_out_classes(dataset_config, classes))
        return {"classes": names, "files": files, "labels": [int(label) for label in labels]}
    names, files, labels = _indexed(classes)
    _, val, test = _split(labels, dataset_config["validation_split"], dataset_config["seed"],
                          held_out_share(dataset_config))
    chosen = val if part == "val" else test
    return {"classes": names, "files": [files[i] for i in chosen], "labels": [int(labels[i]) for i in chosen]}


def _free_bytes(folder):
    while not os.path.exists(folder):
        folder = os.path.dirname(folder) or "."
    return shutil.disk_usage(folder).free


def _check_disk(cache_dir, n_images, image_bytes):
    """Fail in one line, before anything is written, when the packed set cannot fit the disk."""
    needed = n_images * (image_bytes + 8) + 4 * 4096  # images, int64 labels, the .npy headers
    free = _free_bytes(cache_dir)
    if needed + DISK_RESERVE > free:
        raise AutotuneError(f"dataset: packing {n_images} images needs {needed / 2**20:.0f} MiB in {cache_dir!r} "
                            f"(plus {DISK_RESERVE // 2**20} MiB to spare) but only {free / 2**20:.0f} MiB are free; "
                            "expected enough free disk space, or a smaller dataset.image_size")
    return needed


def _reserve(target, size):
    """Allocate the file's blocks now: a disk that fills meanwhile fails here, never as SIGBUS in a worker."""
    try:
        with open(target, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as exc:
        raise AutotuneError(f"dataset: cannot reserve {size / 2**20:.0f} MiB for {target!r} ({exc.strerror}); "
                            "expected enough free disk space for the packed data set")


def _decode_chunk(job):
    """Decode some images straight into rows of a packed .npy file (in a worker process); return how many."""
    target, start, paths, size, mode = job
    images = np.load(target, mmap_mode="r+")
    for offset, path in enumerate(paths):
        images[start + offset] = _load_image(path, size, mode)
    images.flush()
    del images  # unmap: a worker's memory does not grow with the set
    return len(paths)


def _workers(n_images):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1 if n_images < PARALLEL_FROM else cores


def _decode_all(jobs, n_images, progress):
    """Run the decode jobs, in parallel on the host's cores for larger sets; progress lines for large ones."""
    workers, started, reported, done = _workers(n_images), time.monotonic(), time.monotonic(), 0
    # fork: the workers inherit this module as imported (inside an Ansible module there is no file to re-import).
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) if workers > 1 else None)
    try:
        for count in (pool.map(_decode_chunk, jobs) if pool else map(_decode_chunk, jobs)):
            done += count
            now = time.monotonic()
            if progress and n_images >= PROGRESS_FROM and (now - reported >= PROGRESS_SECONDS or done == n_images):
                reported = now
                progress(f"dataset: packed {done}/{n_images} images ({100 * done // n_images} %), "
                         f"{now - started:.0f} s, {workers} worker(s)")
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)


def _pack(packed, files, labels, parts, names, shape, progress):
    """Write the packed folder under a temporary name, then rename it into place (readers never see half a pack)."""
    n_images = sum(len(order) for order in parts.values())
    _check_disk(os.path.dirname(packed), n_images, int(np.prod(shape)))
    for stale in glob.glob(glob.escape(packed) + ".partial-*"):  # a packer killed earlier (the run folder is locked)
        shutil.rmtree(stale, ignore_errors=True)
    tmp, mode = f"{packed}.partial-{os.getpid()}", "L" if shape[2] == 1 else "RGB"
    os.makedirs(tmp)  # the cache folder too: the first thing written
    try:
        jobs = []
        for part, order in parts.items():
            np.save(os.path.join(tmp, f"y_{part}.npy"), labels[order])
            target = os.path.join(tmp, f"x_{part}.npy")
            images = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(len(order), *shape))
            _reserve(target, images.offset + images.nbytes)
            del images
            jobs += [(target, start, [files[i] for i in order[start:start + CHUNK]], shape[:2], mode)
                     for start in range(0, len(order), CHUNK)]
        _decode_all(jobs, n_images, progress)
        with open(os.path.join(tmp, PACK_META), "w", encoding="utf-8") as handle:
            json.dump({"format": PACK_FORMAT, "classes": names, "input_shape": list(shape),
                       **{f"n_{p}": len(order) for p, order in parts.items()}}, handle)
        os.rename(tmp, packed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def packed_path(dataset_config, cache_dir, classes):
    """Where the trials' pack of these images goes (known before it is written: warm trainers wait for it there)."""
    key = fingerprint(classes, dataset_config["image_size"], dataset_config["color"],
                      dataset_config["validation_split"], dataset_config["seed"], held_out_share(dataset_config))
    return os.path.join(cache_dir, f"dataset-{key}"), key


def held_out_path(dataset_config, cache_dir, classes, held_out_found=None):
    """Where the held-out test pack goes: beside the trials' pack, never inside the folder a trial mounts."""
    _, key = packed_path(dataset_config, cache_dir, classes)
    if held_out_found:
        key = fingerprint(held_out_found, dataset_config["image_size"], dataset_config["color"], 0, 0)
    return os.path.join(cache_dir, HELD_OUT, f"testset-{key}")


def standard_error(accuracy, n):
    """The binomial standard error of an accuracy measured on ``n`` images (None when it cannot be told)."""
    if accuracy is None or not n:
        return None
    return round(float(np.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)), 4)


def prepare(dataset_config, cache_dir, progress=None, classes=None):
    """Validate and pack the data set; return facts about it, including the packed folders' paths.

    ``progress`` (a callable taking one line) hears how packing a large set goes; ``classes`` is what
    scan() found, when the caller has scanned already."""
    classes = classes or scan(dataset_config["path"])
    size, color = dataset_config["image_size"], dataset_config["color"]
    packed, key = packed_path(dataset_config, cache_dir, classes)
    names, files, labels = _indexed(classes)
    train, val, test = _split(labels, dataset_config["validation_split"], dataset_config["seed"],
                              held_out_share(dataset_config))
    if len(val) == 0 or len(train) == 0 or (held_out_share(dataset_config) and len(test) == 0):
        raise AutotuneError(f"dataset.path: {dataset_config['path']!r} is too small to split; expected at least "
                            f"{3 if held_out_share(dataset_config) else 2} images per class")
    shape = (size[0], size[1], 1 if color == "grayscale" else 3)
    fresh = not os.path.isdir(packed)
    if fresh:  # both packs, before either is written
        _check_disk(cache_dir, len(files) if not dataset_config.get("test") else len(train) + len(val),
                    int(np.prod(shape)))
    try:
        if fresh:
            _pack(packed, files, labels, {"train": train, "val": val}, names, shape, progress)
        test_facts = _prepare_test(dataset_config, cache_dir, classes, (files, labels, test), shape, progress)
    except BaseException:
        if fresh:  # a bad image in the test split: no half of the data set stays behind either
            shutil.rmtree(packed, ignore_errors=True)
        _remove_if_empty(os.path.join(cache_dir, HELD_OUT))
        raise
    return {"path": packed, "classes": names, "counts": {name: len(f) for name, f in classes.items()},
            "n_train": len(train), "n_val": len(val), "input_shape": list(shape), "fingerprint": key,
            "source": dataset_config["path"], **test_facts}


def _remove_if_empty(folder):
    try:
        os.rmdir(folder)
    except OSError:
        pass


def _prepare_test(dataset_config, cache_dir, classes, carved, shape, progress):
    """Pack the held-out test split (carved from dataset.path, or dataset.test whole) in the 0700 held-out folder."""
    found = held_out_classes(dataset_config, classes) if dataset_config.get("test") else None
    files, labels, order = carved
    if found:
        _, files, labels = _indexed(found)
        order = np.arange(len(files))
    path = held_out_path(dataset_config, cache_dir, classes, found)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)  # also when an earlier run made it with looser modes
    if not os.path.isdir(path):
        _pack(path, files, labels, {"test": order}, list(classes), shape, progress)
    return {"test_path": path, "n_test": int(len(order)),
            "test_source": dataset_config["test"] if found else f"{dataset_config['test_split']:g} of dataset.path"}
