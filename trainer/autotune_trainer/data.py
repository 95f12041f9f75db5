"""Reads the packed, already split data set the controller wrote: a folder of uint8 .npy arrays.

Images are never loaded whole: each batch's rows are read (``os.preadv``) from the
packed file through the page cache, which every trial and slot of the host
shares, and turned into float32 pixels 0..255 (as ``keras.utils.image_dataset_from_directory``
gives them: the model scales its own input) inside the ``tf.data`` pipeline that
feeds ``fit``, ``evaluate`` and ``predict``. A trial's memory and start-up do not
grow with the data set (docs/data.md). Reading batches rather than memory-mapping
the arrays keeps the pages out of the trial's own resident memory too.

The folder's contract (names, format) is module_utils/autotune/dataset.py's;
a unit test pins the two.
"""
import json
import os

import numpy as np

PACK_FORMAT = 2
PACK_META = "dataset.json"
PACK_PARTS = ("train", "val")
TEST_PARTS = ("test",)  # the held-out pack, opened by the verifier alone


class PackedImages:
    """One packed (n, height, width, channels) uint8 .npy file, read some rows at a time."""

    def __init__(self, path):
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # parses and checks the header; reads no pixel
        if mapped.dtype != np.uint8 or mapped.ndim != 4 or not mapped.flags.c_contiguous:
            raise ValueError(f"{path}: holds {mapped.dtype} {mapped.shape}; expected C-ordered uint8 images "
                             "(n, height, width, channels)")
        self.path, self.shape, self.offset = path, mapped.shape, mapped.offset
        self.row_bytes = int(np.prod(self.shape[1:]))
        del mapped
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self):
        return self.shape[0]

    def take(self, index):
        """The rows ``index`` (any order) as one uint8 array: one positional read per row, no shared state."""
        out = np.empty((len(index), *self.shape[1:]), dtype=np.uint8)
        rows = out.reshape(len(index), self.row_bytes)
        for row, i in zip(rows, np.asarray(index, dtype=np.int64)):
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"{self.path}: row {i} of {self.shape[0]}")
            if os.preadv(self.fd, [row], self.offset + int(i) * self.row_bytes) != self.row_bytes:
                raise OSError(f"{self.path}: short read at row {i}; expected {self.row_bytes} bytes (truncated pack?)")
        return out

    def close(self):
        os.close(self.fd)


class PackedData:
    """The packed folder: images per split (read per batch), labels (small, in memory), class names."""

    def __init__(self, path, parts=PACK_PARTS):
        with open(os.path.join(path, PACK_META), encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta.get("format") != PACK_FORMAT:
            raise ValueError(f"{path}: packed format {meta.get('format')!r}; expected {PACK_FORMAT} (pack it again)")
        self.class_names = [str(c) for c in meta["classes"]]
        self.images = {p: PackedImages(os.path.join(path, f"x_{p}.npy")) for p in parts}
        self.labels = {p: np.load(os.path.join(path, f"y_{p}.npy"), allow_pickle=False) for p in parts}
        for part in parts:
            if len(self.images[part]) != len(self.labels[part]):
                raise ValueError(f"{path}: {len(self.images[part])} {part} images but {len(self.labels[part])} "
                                 "labels; expected one label per image")
        self.input_shape = tuple(self.images[parts[0]].shape[1:])

    def batches(self, part, batch_size, shuffle=False, seed=None, labels="int", scale=1.0):
        """A tf.data pipeline of (float32 pixels 0..255 times ``scale``, labels) batches of one split;
        ``labels``: "int" (int64), "one_hot" (float32, one column per class) or "binary" (float32, one column)."""
        return batches(self.images[part], self.labels[part], batch_size, shuffle, seed,
                       labels_as=labels, classes=len(self.class_names), scale=scale)


def _labels_as(y, form, classes):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if form == "one_hot":
        return tf.one_hot(y, classes, dtype=tf.float32)
    if form == "binary":
        return tf.reshape(tf.cast(y, tf.float32), (-1, 1))
    return y


def batches(images, labels, batch_size, shuffle=False, seed=None, labels_as="int", classes=None, scale=1.0):
    """Batches of ``images.take(index)`` as float32 per batch, reshuffled every epoch when ``shuffle``, prefetched."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    shape = tuple(images.shape[1:])

    def take(index):
        index = np.sort(index)  # ascending reads; the batch's order does not matter to its gradient
        return images.take(index), labels[index]

    # Not converted by AutoGraph: its only branches are on Python values, and converting it (parsing and
    # rewriting this source) took 0.45 s of every trial's start-up in a fresh process, for both pipelines.
    @tf.autograph.experimental.do_not_convert
    def load(index):
        x, y = tf.numpy_function(take, [index], (tf.uint8, tf.int64), stateful=False)
        x.set_shape((None, *shape))
        y.set_shape((None,))
        x = tf.cast(x, tf.float32)
        return (x if scale == 1.0 else x * scale), _labels_as(y, labels_as, classes)

    order = tf.data.Dataset.range(len(images))
    if shuffle:
        order = order.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return order.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def load_dataset(path, parts=PACK_PARTS):
    """The packed data set at ``path`` (its folder), opened: nothing is read until a batch is asked for."""
    return PackedData(str(path), parts)
