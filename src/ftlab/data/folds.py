"""Stratified k-fold cross-validation (`data.folds=K data.fold=i`) for any file or in-memory source, and
proportion splits of multi-label data.

Single-label: each class's images are shuffled (seeded) and dealt round-robin to the folds, the dealing
continuing from fold to fold across classes, so every fold holds within one image of its ideal share of
each class and of the whole. Multi-label: iterative stratification (Sechidis, Tsoumakas and Vlahavas,
"On the stratification of multi-label data", ECML PKDD 2011): the label with the fewest images still to place
goes first, each of its images to the fold that most lacks that label (ties: the fold that most lacks
images, then a seeded draw). Both run on the images sorted by id, so the folds do not depend on the order a
source lists its files in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ftlab.data.datasets import FileImages, LabeledImages, TensorImages
from ftlab.data.exclude import image_ids
from ftlab.errors import FtlabError


def _order(ids: Sequence[str] | None, n: int) -> np.ndarray:
    """Positions sorted by image id (the listing order when there are no ids)."""
    if ids is None:
        return np.arange(n)
    return np.asarray(sorted(range(n), key=lambda i: ids[i]), dtype=np.int64)


def _single_label_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        folds[members] = (offset + np.arange(len(members))) % k
        offset = (offset + len(members)) % k
    return folds


def iterative_stratification(
    multi_hot: np.ndarray, proportions: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """The part (0..len(proportions)-1) of each row of a 0/1 (N, C) matrix, by iterative stratification."""
    y = np.asarray(multi_hot) > 0
    n = len(y)
    shares = np.asarray(proportions, dtype=np.float64)
    shares = shares / shares.sum()
    wanted = shares * n  # images each part still lacks
    wanted_label = np.outer(shares, y.sum(axis=0)).astype(np.float64)  # (parts, C) per-label lack
    part = np.full(n, -1, dtype=np.int64)
    left = y.copy()  # labels of the images not yet placed

    def best(scores: list[np.ndarray]) -> int:
        candidates = np.arange(len(shares))
        for score in scores:
            values = score[candidates]
            candidates = candidates[values == values.max()]
            if len(candidates) == 1:
                return int(candidates[0])
        return int(rng.choice(candidates))

    while left.any():
        per_label = left.sum(axis=0)
        present = np.flatnonzero(per_label > 0)
        fewest = present[per_label[present] == per_label[present].min()]
        label = int(rng.choice(fewest)) if len(fewest) > 1 else int(fewest[0])
        for i in rng.permutation(np.flatnonzero(left[:, label])):
            chosen = best([wanted_label[:, label], wanted])
            part[i] = chosen
            wanted_label[chosen, y[i]] -= 1
            wanted[chosen] -= 1
            left[i] = False
    for i in rng.permutation(np.flatnonzero(part < 0)):  # images without any label
        chosen = best([wanted])
        part[i] = chosen
        wanted[chosen] -= 1
    return part


def assign_folds(labels: np.ndarray, k: int, seed: int, ids: Sequence[str] | None = None) -> np.ndarray:
    """The fold (0..k-1) of every image: stratified by class (int labels (N,)) or by iterative
    stratification (multi-hot labels (N, C)); deterministic by `seed`, independent of the listing order
    when `ids` are given."""
    labels = np.asarray(labels)
    order = _order(ids, len(labels))
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        sorted_folds = iterative_stratification(labels[order], [1.0] * k, rng)
    else:
        sorted_folds = _single_label_folds(labels[order], k, rng)
    folds = np.empty(len(labels), dtype=np.int64)
    folds[order] = sorted_folds
    return folds


def multi_label_split(
    multi_hot: np.ndarray, fraction: float, seed: int, ids: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the rest and of a `fraction` share of multi-label images (iterative
    stratification): the multi-label counterpart of a stratified train/val split."""
    y = np.asarray(multi_hot)
    order = _order(ids, len(y))
    parts = np.empty(len(y), dtype=np.int64)
    parts[order] = iterative_stratification(y[order], [1.0 - fraction, fraction], np.random.default_rng(seed))
    return np.flatnonzero(parts == 0), np.flatnonzero(parts == 1)


def select(dataset: LabeledImages, indices: Sequence[int] | np.ndarray, ids: list[str]) -> LabeledImages:
    """The images at `indices` of a file or in-memory dataset, as the same kind, keeping their ids."""
    index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    labels = dataset.labels
    chosen: Any = labels[index] if isinstance(labels, torch.Tensor) else [labels[i] for i in index.tolist()]
    picked: LabeledImages
    if isinstance(dataset, FileImages):
        picked = FileImages([dataset.paths[i] for i in index.tolist()], chosen, dataset.transform)
    else:
        assert isinstance(dataset, TensorImages)
        picked = TensorImages(dataset.images[index], torch.as_tensor(chosen), dataset.transform)
    picked.ids = [ids[i] for i in index.tolist()]
    return picked


def _pool(train: LabeledImages, val: LabeledImages) -> tuple[LabeledImages, list[str]]:
    """train ∪ val as one dataset of the same kind, and every image's id, in that order."""
    ids = image_ids(train, "train") + image_ids(val, "val")
    if isinstance(train.labels, torch.Tensor) and train.labels.ndim == 2:
        labels: Any = torch.cat([train.labels, torch.as_tensor(val.labels)])
    else:
        labels = [int(v) for v in train.labels] + [int(v) for v in val.labels]
    if isinstance(train, FileImages) and isinstance(val, FileImages):
        return FileImages(train.paths + val.paths, labels), ids
    if isinstance(train, TensorImages) and isinstance(val, TensorImages):
        return TensorImages(torch.cat([train.images, val.images]), torch.as_tensor(labels)), ids
    raise FtlabError(
        f"data.folds: the {type(train).__name__} images of this source cannot be pooled into folds (file and "
        "in-memory sources can: data=csv, imagefolder, fashion_mnist, cifar10, synthetic). Build the folds "
        "from the source the chunks were written from, or drop data.folds."
    )


def _untrained(labels: np.ndarray, train_rows: np.ndarray) -> list[int]:
    """Classes that have images in the pool but none among `train_rows` (int or multi-hot labels)."""
    if labels.ndim == 2:
        has, trained = (labels > 0).any(axis=0), (labels[train_rows] > 0).any(axis=0)
    else:
        size = int(labels.max()) + 1 if len(labels) else 0
        has = np.bincount(labels.astype(np.int64), minlength=size) > 0
        trained = np.bincount(labels[train_rows].astype(np.int64), minlength=size) > 0
    return np.flatnonzero(has & ~trained).tolist()


@dataclass
class Folds:
    """The labelled pool (train ∪ val, sorted by image id) and the pool positions of one fold's splits."""

    pool: LabeledImages
    train: np.ndarray
    val: np.ndarray


def fold_split(
    train: LabeledImages,
    val: LabeledImages,
    folds: int,
    fold: int,
    seed: int,
    fixed: dict[str, int] | None = None,
    classes: Sequence[str] | None = None,
) -> Folds:
    """Fold `fold` of `folds` of the pool train ∪ val: stratified (`assign_folds`) or, when the source
    fixes them (`fixed`: image id -> fold, e.g. a CSV's fold column), the source's folds. With `classes`, a
    class that has images but none left to train on in this fold stops the run."""
    names = list(classes or [])
    merged, ids = _pool(train, val)
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    pool = select(merged, order, ids)
    pool_ids = pool.ids or []
    labels = np.asarray(pool.labels)
    if fixed is not None:
        missing = [i for i in pool_ids if i not in fixed]
        if missing:
            raise FtlabError(f"data.folds: image {missing[0]} has no fold in the source's fold column.")
        assigned = np.asarray([fixed[i] for i in pool_ids], dtype=np.int64)
        found = sorted(set(assigned.tolist()))
        if found != list(range(folds)):
            raise FtlabError(
                f"data.folds={folds}, but the source's fold column holds the folds {found}: give "
                f"data.folds={len(found)} with folds numbered 0..{len(found) - 1}, or drop the fold column."
            )
    else:
        if len(pool_ids) < folds:
            raise FtlabError(f"data.folds={folds}: only {len(pool_ids)} labelled images to split into folds.")
        assigned = assign_folds(labels, folds, seed, pool_ids)
    train_rows = np.flatnonzero(assigned != fold)
    missing = [names[c] for c in _untrained(labels, train_rows)] if classes else []
    if missing:
        raise FtlabError(
            f"data.folds={folds} data.fold={fold}: no training image of the class(es) {', '.join(missing)} "
            "in this fold (too few images to spread over the folds). Add images of them, or use fewer folds."
        )
    return Folds(pool, train_rows, np.flatnonzero(assigned == fold))
