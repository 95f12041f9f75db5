#!/usr/bin/env python3
"""Lay the sample data out as the original pipeline's Kaggle-style folders, beside train.py:

    cnn_dataset/training_set/{cats,dogs}/   80 % of each class
    cnn_dataset/test_set/{cats,dogs}/       every fifth image of each class (20 %)

    python examples/original_pipeline/make_layout.py [--source data/catsdogs]

The images are copied (a few MB), not linked, so a trial container that sees this folder
read-only reads them without needing the source folder too. Running it again changes nothing.
"""
import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = {"cat": "cats", "dog": "dogs"}


def lay_out(source, target):
    """Copy ``source/<cat|dog>/*`` into ``target/{training_set,test_set}/<cats|dogs>/``; returns image counts."""
    counts = {}
    for name, folder in CLASSES.items():
        images = sorted(p for p in (source / name).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not images:
            raise SystemExit(f"make_layout: {source / name} holds no PNG/JPEG images; expected the sample data "
                             "(python tools/make_sample_data.py data/catsdogs)")
        for index, image in enumerate(images):
            part = "test_set" if index % 5 == 4 else "training_set"
            destination = target / part / folder / image.name
            if not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image, destination)
            counts[f"{part}/{folder}"] = counts.get(f"{part}/{folder}", 0) + 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parent.parent / "data" / "catsdogs")
    parser.add_argument("--target", type=Path, default=HERE / "cnn_dataset")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"make_layout: {args.source} is not a folder; expected the sample data with cat/ and dog/",
              file=sys.stderr)
        return 2
    for part, count in sorted(lay_out(args.source, args.target).items()):
        print(f"{args.target / part}: {count} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
