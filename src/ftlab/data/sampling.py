"""Seeded sampling: stratified subsets, and per-epoch order so that a resumed run draws what an
uninterrupted one would (data order, augmentation and dropout depend on (seed, epoch) only)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

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


def class_counts(labels: torch.Tensor | np.ndarray, num_classes: int) -> list[int]:
    """Images per class index (0 for classes with none); multi-hot rows (N, C): images carrying each label."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 2:
        return [int(v) for v in (labels > 0.5).sum(dim=0).tolist()]
    return torch.bincount(labels.long(), minlength=num_classes).tolist()


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-image draw weights of `data.sampler=balanced` (float64, unnormalised).

    Class indices: 1 / (images of the image's class), so every class is equally likely. Multi-hot rows
    (N, C): labels co-occur, so no draw can make every label equally frequent; an image weighs
    1 / (images carrying its rarest label) (the rule of LVIS's repeat-factor sampling, without its square
    root), so images with a rare label are drawn as often as the rare label needs; images with no label at
    all count as one more group.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim == 1:
        labels = labels.long()
        return 1.0 / torch.bincount(labels)[labels].double()
    present = labels > 0.5
    counts = present.sum(dim=0).double()
    inverse = torch.where(present, 1.0 / counts.clamp(min=1)[None, :], 0.0).amax(dim=1)
    empty = ~present.any(dim=1)
    if empty.any():
        inverse[empty] = 1.0 / float(empty.sum())
    return inverse


class BalancedSampler(DistributedSampler):
    """`data.sampler=balanced`: every class equally likely, drawn with replacement from (seed, epoch)
    (multi-label data: see `balanced_weights`).

    One draw of `len(labels)` indices (rounded up to a multiple of the ranks) is made per epoch, the same on
    every rank; rank r takes positions r, r + R, r + 2R, ... of it, so the ranks' shares are disjoint and
    together make the whole draw. A DistributedSampler subclass, so Lightning does not wrap it under DDP.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        seed: int,
        current_epoch: Callable[[], int],
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(range(len(labels)), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)  # type: ignore[arg-type]
        self.weights = balanced_weights(labels)
        self.current_epoch = current_epoch
        self.total = math.ceil(len(labels) / num_replicas) * num_replicas

    def __len__(self) -> int:
        return self.total // self.num_replicas

    def draw(self, epoch: int) -> torch.Tensor:
        """The whole epoch's draw (all ranks' indices, interleaved)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.multinomial(self.weights, self.total, replacement=True, generator=generator)

    def __iter__(self) -> Iterator[int]:
        epoch = self.current_epoch()
        reseed(epoch_seed(self.seed, epoch))
        yield from self.draw(epoch)[self.rank :: self.num_replicas].tolist()
