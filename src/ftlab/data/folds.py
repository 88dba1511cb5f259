"""Stratified k-fold assignment (`data.folds=K data.fold=i`) for any source, and proportion splits of
multi-label data.

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

import numpy as np


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
