"""Per-epoch seeding, so that a run resumed at any epoch draws the same random numbers as an uninterrupted
one: data order, augmentation and dropout depend on (seed, epoch) only."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


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
