"""The data sets the benchmarks run on, by name: what each one's ``dataset:`` section is, and how it is built.

  catsdogs      the sample (2,000 grey 28x28 silhouettes, cats and dogs; ``make sample-data``)
  animals-rgb64 10,000 RGB 64x64 images in 10 classes: every image of the animal-mnist wheel the sample comes
                from (Bear ... Zebra, 1,000 each), upscaled, and drawn in a random colour on a random noisy
                background, shifted and flipped (seeded per image): colour carries no class, so the model must
                learn shapes from three channels at 64x64 (issue 21 item 4)

Built sets are kept under ``data/`` (ignored by git) with a marker file, so a second benchmark reuses them.
"""
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")  # label order


@dataclass(frozen=True)
class Workload:
    name: str
    path: Path
    image_size: tuple
    color: str
    max_epochs: int  # the epochs range's top: Keras Tuner Hyperband's max_epochs, our space's epochs.high

    def space(self):
        """The search space every system searches: examples/catsdogs's, epochs up to max_epochs."""
        space = yaml.safe_load((REPO / "examples" / "catsdogs" / "autotune.yml").read_text())["search"]["space"]
        space["epochs"] = dict(space["epochs"], high=self.max_epochs)
        return space

    def dataset(self):
        """The ``dataset:`` section of autotune.yml (and of the peers' ``dataset.prepare``) for this workload."""
        return {"path": str(self.path), "image_size": list(self.image_size), "color": self.color,
                "validation_split": 0.2, "test_split": 0.15, "seed": 1}


def _recoloured(args):
    """Write the images start..stop: each grey silhouette as a 64x64 RGB PNG with its own seeded variation."""
    images, labels, root, start, stop, size = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        alpha = np.asarray(Image.fromarray(images[i]).resize((size, size), Image.Resampling.BILINEAR),
                           dtype=np.float32)[..., None] / 255.0
        background = rng.uniform(0, 110, 3) + rng.normal(0, 12, (size, size, 3))
        foreground = rng.uniform(120, 255, 3)
        rgb = background * (1 - alpha) + foreground * alpha
        rgb = np.roll(rgb, tuple(rng.integers(-size // 10, size // 10 + 1, 2)), axis=(0, 1))
        rgb = rgb[:, ::-1] if rng.random() < 0.5 else rgb
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(root / ANIMALS[labels[i]] / f"{i:05d}.png")
    return stop - start


def build_animals(root, size=64):
    """ROOT/{bear,...,zebra}/NNNNN.png from the animal-mnist wheel, built once (all or nothing)."""
    if (root / ".complete").exists():
        return root
    sys.path.insert(0, str(REPO / "tools"))
    import make_sample_data  # pylint: disable=import-outside-toplevel  # its safe unpickler and the wheel's files
    import importlib.resources  # pylint: disable=import-outside-toplevel
    files = importlib.resources.files("animal_mnist") / "data" / "Animal_MNIST"
    images = make_sample_data._load(files / "animal_data_version_3.gz")  # pylint: disable=protected-access
    labels = make_sample_data._load(files / "animal_label_version_3.gz")  # pylint: disable=protected-access
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name in ANIMALS:
        (partial / name).mkdir(parents=True)
    started = time.time()
    jobs = [(images, labels, partial, s, min(s + 1000, len(images)), size) for s in range(0, len(images), 1000)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        written = sum(pool.map(_recoloured, jobs))
    (partial / ".complete").write_text(str(written))
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    print(f"built {written} images in {root} in {time.time() - started:.0f} s", flush=True)
    return root


def workload(name):
    """The named workload, its images built when missing."""
    if name == "catsdogs":
        return Workload(name, REPO / "data" / "catsdogs", (28, 28), "grayscale", 6)
    if name == "animals-rgb64":
        # Larger images in more classes learn over more epochs: at 6, Keras Tuner's whole Hyperband run (2 min)
        # ended at 0.84 (seed 1).
        return Workload(name, build_animals(REPO / "data" / "animals-rgb64"), (64, 64), "rgb", 12)
    raise ValueError(f"workload {name!r}: expected catsdogs or animals-rgb64")


NAMES = ("catsdogs", "animals-rgb64")
