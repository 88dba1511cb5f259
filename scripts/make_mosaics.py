#!/usr/bin/env python
"""Offline CSV tasks from Fashion-MNIST (Debian's dataset-fashion-mnist files), for data=csv.

mosaic (multi-label): 2x2 mosaics of Fashion-MNIST items (56x56 grayscale PNGs); each mosaic draws 1-4
distinct classes and fills its four tiles with items of them (each drawn class at least once), so its label
set, the `labels` column (classes separated by a space), is the set of item classes it shows. Train mosaics
use items of Fashion-MNIST's training images; val and test mosaics use disjoint halves of its test images.
The `split` column says train / val / test.

single (single-label): Fashion-MNIST training images as 28x28 PNGs, a stratified sample, with a `label`
column and no split (data=csv draws val, or data.folds=K cuts folds).

Deterministic by --seed: the same arguments write the same files.

    python scripts/make_mosaics.py mosaic --out /tmp/mosaics --train 1000 --val 300 --test 300
    python scripts/make_mosaics.py single --out /tmp/fmnist_csv --count 500
    python -m ftlab.train data=csv data.csv=/tmp/mosaics/labels.csv ...
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ftlab.data.sources.fashion_mnist import DEBIAN_DIR, FASHION_MNIST_CLASSES, FashionMnistSource

TILE = 28


def fashion_items(
    root: str,
    classes: Sequence[str],
    train_size: int | None,
    test_size: int | None,
    seed: int,
    system_dir: str,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]:
    """(images uint8 (N, 28, 28), labels) of a stratified sample of Fashion-MNIST's train and test images,
    read by ftlab's fashion_mnist source, and the class names the labels index."""
    source = FashionMnistSource(
        root=root, classes=list(classes), train_size=train_size, val_size=test_size, seed=seed,
        download=False, system_dir=system_dir,
    )  # fmt: skip
    train, test = source.load()
    tr, te = ((ds.images[:, 0].numpy(), torch.as_tensor(ds.labels).numpy()) for ds in (train, test))  # type: ignore[attr-defined]
    return tr, te, list(source.classes)


def mosaic(
    images: np.ndarray, labels: np.ndarray, classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[int]]:
    """One 2x2 mosaic (56x56) and its sorted label set: 1-4 distinct classes, each in at least one tile."""
    chosen = rng.choice(classes, size=int(rng.integers(1, 5)), replace=False)
    tiles = np.concatenate([chosen, rng.choice(chosen, size=4 - len(chosen))])
    rng.shuffle(tiles)
    picks = [int(rng.choice(np.flatnonzero(labels == c))) for c in tiles]
    grid = images[picks].reshape(2, 2, TILE, TILE).transpose(0, 2, 1, 3).reshape(2 * TILE, 2 * TILE)
    return grid, sorted({int(c) for c in chosen})


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_mosaics(
    out: Path,
    train: int,
    val: int,
    test: int,
    seed: int = 0,
    classes: Sequence[str] = FASHION_MNIST_CLASSES,
    fashion_root: str | None = None,
    system_dir: str = DEBIAN_DIR,
    pool: int = 2000,
) -> Path:
    """Write train/val/test mosaics under `out/images/` and `out/labels.csv`; returns the CSV's path.
    Items come from `pool` training and `pool` test images of Fashion-MNIST (stratified samples)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        (tr_x, tr_y), (te_x, te_y), classes = fashion_items(
            fashion_root or scratch, classes, pool, pool, seed, system_dir
        )
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(te_y))
    pools = {
        "train": (tr_x, tr_y),
        "val": (te_x[half[::2]], te_y[half[::2]]),
        "test": (te_x[half[1::2]], te_y[half[1::2]]),
    }
    (out / "images").mkdir(exist_ok=True)
    rows = []
    for split, count in (("train", train), ("val", val), ("test", test)):
        for i in range(count):
            grid, label_set = mosaic(*pools[split], len(classes), rng)
            name = f"images/{split}_{i:05d}.png"
            Image.fromarray(grid, mode="L").save(out / name)
            rows.append({"path": name, "labels": " ".join(classes[c] for c in label_set), "split": split})
    write_csv(out / "labels.csv", rows)
    return out / "labels.csv"


def make_single(
    out: Path,
    count: int,
    seed: int = 0,
    classes: Sequence[str] = FASHION_MNIST_CLASSES,
    fashion_root: str | None = None,
    system_dir: str = DEBIAN_DIR,
) -> Path:
    """Write a stratified sample of `count` Fashion-MNIST training images under `out/images/` and
    `out/labels.csv` (path, label); returns the CSV's path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        (x, y), _, classes = fashion_items(
            fashion_root or scratch, classes, count, 2 * len(classes), seed, system_dir
        )
    (out / "images").mkdir(exist_ok=True)
    rows = []
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        name = f"images/{i:05d}.png"
        Image.fromarray(image, mode="L").save(out / name)
        rows.append({"path": name, "label": classes[int(label)]})
    write_csv(out / "labels.csv", rows)
    return out / "labels.csv"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("mosaic", "single"))
    parser.add_argument("--out", type=Path, required=True, help="folder for images/ and labels.csv")
    parser.add_argument("--train", type=int, default=1000, help="mosaic: train mosaics")
    parser.add_argument("--val", type=int, default=300, help="mosaic: val mosaics")
    parser.add_argument("--test", type=int, default=300, help="mosaic: test mosaics")
    parser.add_argument(
        "--pool", type=int, default=2000, help="mosaic: Fashion-MNIST items drawn from, per side"
    )
    parser.add_argument("--count", type=int, default=500, help="single: images")
    parser.add_argument("--classes", default=",".join(FASHION_MNIST_CLASSES), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fashion-root", default=None, help="where to decompress Fashion-MNIST (default: temp)"
    )
    parser.add_argument("--system-dir", default=DEBIAN_DIR, help="folder of the four .gz files")
    args = parser.parse_args(argv)
    classes = [c for c in args.classes.split(",") if c]
    common = {
        "seed": args.seed,
        "classes": classes,
        "fashion_root": args.fashion_root,
        "system_dir": args.system_dir,
    }
    if args.mode == "mosaic":
        table = make_mosaics(args.out, args.train, args.val, args.test, pool=args.pool, **common)
    else:
        table = make_single(args.out, args.count, **common)
    print(f"wrote {table}")


if __name__ == "__main__":
    main()
