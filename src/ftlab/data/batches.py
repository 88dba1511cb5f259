"""The batch type that says "these are cached stage outputs", so no object has to remember it."""

from __future__ import annotations

from typing import NamedTuple

import torch


class FeatureBatch(NamedTuple):
    """Activations of stages[:start] for a batch of images, with their labels (see `ftlab.features`)."""

    features: torch.Tensor
    labels: torch.Tensor
    start: int


class CollateFeatures:
    """`collate_fn` of a loader over cached features: stacks (features, label) pairs into a FeatureBatch."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __call__(self, samples: list[tuple[torch.Tensor, int | torch.Tensor]]) -> FeatureBatch:
        features = torch.stack([s[0] for s in samples])
        if samples and isinstance(samples[0][1], torch.Tensor):  # multi-label: multi-hot rows
            labels = torch.stack([torch.as_tensor(s[1]) for s in samples])
        else:
            labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
        return FeatureBatch(features, labels, self.start)
