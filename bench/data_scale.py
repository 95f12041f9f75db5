#!/usr/bin/env python3
"""Benchmark: does a trial's memory and start-up grow with the data set?

Builds sets of 2,000, 20,000 and 50,000 images at 128x128 RGB JPEG from the sample
cats-vs-dogs data (augmented copies: upscaled, tinted, flipped, shifted), then for
each: packs it with ``dataset.prepare`` (in a child process: wall time, peak RSS,
packed size on disk) and trains the ``cnn`` template's baseline trial once through
the trainer CLI, as the local runner does (peak RSS of that child from wait4, its
start-up = launch to the first epoch, and its fit time from result.json).

It measures whatever code the checkout holds, so run it once before a change and
once after, with the same --work folder to reuse the built images:

    .venv/bin/python bench/data_scale.py --label before --sizes 2000,20000 --work /tmp/data-scale
    .venv/bin/python bench/data_scale.py --label after --work /tmp/data-scale

Figures are appended as JSON lines to --out (default: WORK/results.jsonl).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ansible.module_utils
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(REPO / "module_utils"))

from ansible.module_utils.autotune.kinds import template as template_kind  # noqa: E402

SAMPLE = REPO / "data" / "catsdogs"
SIZE = 128
PACK_CHILD = """
import inspect, json, sys, time, ansible.module_utils
ansible.module_utils.__path__.append(sys.argv[1])
from ansible.module_utils.autotune import dataset
said = {"progress": lambda line: print(line, file=sys.stderr, flush=True)}
started = time.time()
facts = dataset.prepare(json.loads(sys.argv[2]), sys.argv[3],
                        **(said if "progress" in inspect.signature(dataset.prepare).parameters else {}))
print(json.dumps({"path": facts["path"], "seconds": round(time.time() - started, 2)}))
"""
OPEN_CHILD = """
import sys, time
import tensorflow  # noqa: F401 - imported before the clock starts, as in every trial
from autotune_trainer.data import load_dataset
started = time.time()
data = load_dataset(sys.argv[1])
if hasattr(data, "batches"):  # the streaming reader: the first training batch is part of opening it
    next(iter(data.batches("train", 64, shuffle=True, seed=1)))
print(round(time.time() - started, 3))
"""


def _augmented(args):
    """Write images start..stop of one class folder: sample image i % n, changed by a seeded variation."""
    sources, folder, start, stop = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        with Image.open(sources[i % len(sources)]) as image:
            grey = np.asarray(image.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
        rgb = np.clip(grey[..., None] * rng.uniform(0.6, 1.0, 3) + rng.uniform(0, 60, 3), 0, 255)
        rgb = np.roll(rgb, tuple(rng.integers(-8, 9, 2)), axis=(0, 1))
        rgb = rgb[:, ::-1] if rng.random() < 0.5 else rgb
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return stop - start


def build_set(work, n):
    """DIR/images-N/{cat,dog}/: n images in all, built once (a marker file says the set is complete)."""
    root = work / f"images-{n}"
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for name in ("cat", "dog"):
        sources = sorted((SAMPLE / name).glob("*.png"))
        (root / name).mkdir(parents=True)
        jobs += [(sources, root / name, s, min(s + 1000, n // 2)) for s in range(0, n // 2, 1000)]
    started = time.time()
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_augmented, jobs))
    (root / ".complete").write_text(str(n))
    print(f"built {n} images in {time.time() - started:.0f} s", flush=True)
    return root


def _disk_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _child(command, env=None):
    """Run a child; return (stdout, wall seconds, peak RSS in MB) from wait4."""
    started = time.time()
    with subprocess.Popen(command, stdout=subprocess.PIPE, env=env) as child:
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[:3]} failed with exit status {child.returncode}")
    return out.decode(), time.time() - started, usage.ru_maxrss / 1024


def pack(images, cache):
    config = {"path": str(images), "image_size": [SIZE, SIZE], "color": "rgb", "validation_split": 0.2, "test_split": 0.15, "seed": 1}
    shutil.rmtree(cache, ignore_errors=True)
    out, wall, rss = _child([sys.executable, "-c", PACK_CHILD, str(REPO / "module_utils"), json.dumps(config), str(cache)])
    facts = json.loads(out.strip().splitlines()[-1])
    return facts["path"], {"pack_seconds": round(wall, 1), "pack_rss_mb": round(rss),
                           "packed_mb": round(_disk_size(facts["path"]) / 2**20)}


def data_open(packed):
    """The data set's share of a trial's start-up and memory: from opening it to the first batch."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "trainer"), TF_CPP_MIN_LOG_LEVEL="2")
    out, _, rss = _child([sys.executable, "-c", OPEN_CHILD, packed], env)
    return {"data_open_seconds": float(out.strip().splitlines()[-1]), "data_open_rss_mb": round(rss)}


def trial(packed, folder):
    """The cnn template's baseline (1 epoch, batch 64), trained once as the local runner would."""
    template = str(REPO / "model_templates" / "cnn.py.j2")
    params = {n: s["default"] for n, s in template_kind.template_meta(template)["hyperparameters"].items()}
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(template_kind.render(template, params, 1))
    (folder / "trial.json").write_text(json.dumps({"number": 0, "params": params, "model_api": "template",
                                                   "metric": "val_accuracy", "goal": None, "seed": 1}))
    env = dict(os.environ, PYTHONPATH=str(REPO / "trainer"), TF_CPP_MIN_LOG_LEVEL="2",
               AUTOTUNE_LAUNCH_TIME=repr(time.time()))
    _, wall, rss = _child([sys.executable, "-m", "autotune_trainer", str(folder), "--data", packed], env)
    result = json.loads((folder / "result.json").read_text())
    return {"trial_rss_mb": round(rss), "startup_seconds": result["startup_seconds"],
            "fit_seconds": result["fit_seconds"], "trial_wall_seconds": round(wall, 1),
            "val_accuracy": round(result["value"], 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000,50000")
    parser.add_argument("--label", default="after", help="before / after: recorded with each figure")
    parser.add_argument("--work", type=Path, help="folder for images and packs (kept); default a temporary one")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep-packs", action="store_true", help="keep WORK/pack-LABEL-N after measuring")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="data-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or work / "results.jsonl"
    for n in (int(s) for s in args.sizes.split(",")):
        images = build_set(work, n)
        packed, figures = pack(images, work / f"pack-{args.label}-{n}")
        shutil.rmtree(work / f"trial-{args.label}-{n}", ignore_errors=True)
        figures.update(data_open(packed))
        figures.update(trial(packed, work / f"trial-{args.label}-{n}"))
        record = {"label": args.label, "images": n, "load": os.getloadavg()[0], **figures}
        print(json.dumps(record), flush=True)
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if not args.keep_packs:
            shutil.rmtree(work / f"pack-{args.label}-{n}", ignore_errors=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
