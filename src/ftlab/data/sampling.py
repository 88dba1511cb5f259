"""Seeded sampling: stratified subsets, and per-epoch order so that a resumed run draws what an
uninterrupted one would (data order, augmentation and dropout depend on (seed, epoch) only)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ftlab.errors import FtlabError


def stratified_subset(labels: np.ndarray, size: int | None, seed: int, what: str) -> np.ndarray:
    """Indices of a class-stratified, seeded sample of `size` items (all of them when size is None)."""
    indices = np.arange(len(labels))
    if size is None or size >= len(labels):
        return indices
    counts = np.bincount(labels)
    if size < len(counts[counts > 0]) or counts[counts > 0].min() < 2:
        raise FtlabError(
            f"{what}: cannot draw a stratified sample of {size} from class counts "
            f"{counts.tolist()}; every class needs at least 2 images and one place in the sample."
        )
    from sklearn.model_selection import train_test_split  # imported here: heavy, and only splits need it

    chosen, _ = train_test_split(indices, train_size=size, stratify=labels, random_state=seed)
    return np.sort(chosen)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a function of the run seed and the epoch only."""
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


def reseed(value: int) -> None:
    """Seed python, numpy and torch (the generators augmentation and dropout draw from)."""
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


class EpochSampler(Sampler[int]):
    """Random order from (seed, epoch); reseeds the global generators when the epoch's iteration begins.

    The epoch is read when iteration starts (not pushed by `set_epoch`): on resume, Lightning fetches the
    first batch before it announces the epoch.
    """

    def __init__(self, num_samples: int, seed: int, current_epoch: Callable[[], int]) -> None:
        self.num_samples, self.seed, self.current_epoch = num_samples, seed, current_epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        value = epoch_seed(self.seed, self.current_epoch())
        reseed(value)
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(value))
        yield from order.tolist()
