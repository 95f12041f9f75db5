#!/usr/bin/env python3
"""Build the sample cats-vs-dogs data set as a folder of class sub-folders of PNGs.

The images come from the ``animal-mnist`` wheel (MIT): gzip'd pickles of a
uint8 array (10000, 28, 28) and int64 labels, label 2 = cat, 4 = dog.  Pickle
can run code, so they are read with an unpickler that admits only what numpy
needs to rebuild an array and nothing else.

    python tools/make_sample_data.py data/catsdogs
"""
import argparse
import gzip
import importlib.resources
import io
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = {2: "cat", 4: "dog"}
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def _load(resource):
    with gzip.open(io.BytesIO(resource.read_bytes())) as handle:
        array = _ArrayOnlyUnpickler(handle).load()
    if not isinstance(array, np.ndarray):
        raise pickle.UnpicklingError(f"{resource.name} holds {type(array).__name__}, expected a numpy array")
    return array


def build(out_dir):
    files = importlib.resources.files("animal_mnist") / "data" / "Animal_MNIST"
    images = _load(files / "animal_data_version_3.gz")
    labels = _load(files / "animal_label_version_3.gz")
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"unexpected animal-mnist layout: images {images.shape}, labels {labels.shape}")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    counts = {}
    for label, name in CLASSES.items():
        folder = tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        picked = np.flatnonzero(labels == label)
        for index in picked:
            Image.fromarray(images[index].astype(np.uint8), mode="L").save(folder / f"{name}.{index:05d}.png")
        counts[name] = len(picked)
    tmp.rename(out_dir)  # all or nothing: no half-built data set is ever left at out_dir
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to create (must not exist)")
    args = parser.parse_args(argv)
    if Path(args.out_dir).exists():
        print(f"make_sample_data: {args.out_dir} already exists; remove it or pick another folder", file=sys.stderr)
        return 2
    counts = build(args.out_dir)
    print(f"wrote {sum(counts.values())} images to {args.out_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
