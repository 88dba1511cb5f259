"""Datasets of (uint8 image, label) pairs: held in memory, or read from files on access.

A label is a class index, or for multi-label data (a source with `multi_label = True`) a float32 multi-hot
row: `labels` is then a (N, classes) tensor of 0/1 entries, columns in class order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from ftlab.data.images import load_rgb

Transform = Callable[[torch.Tensor], torch.Tensor]


class LabeledImages(Dataset):
    """A dataset of (uint8 image, label) pairs with a replaceable per-image `transform`."""

    transform: Transform | None
    labels: Any
    ids: list[str] | None = None  # original image ids once data.exclude thinned the split

    def __len__(self) -> int:
        return len(self.labels)


class TensorImages(LabeledImages):
    """Images held in memory as one uint8 (N, 3, H, W) tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        image = self.images[idx]
        label = self.labels[idx] if self.labels.ndim == 2 else int(self.labels[idx])  # multi-hot row or index
        return (self.transform(image) if self.transform else image), label


class FileImages(LabeledImages):
    """Images read from files on access."""

    def __init__(self, paths: list[str], labels: Any, transform: Transform | None = None):
        if isinstance(labels, list) and labels and isinstance(labels[0], torch.Tensor):
            labels = torch.stack(labels)  # multi-hot rows (e.g. kept by data.exclude) as one (N, C) tensor
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, Any]:
        image = load_rgb(self.paths[idx])
        return (self.transform(image) if self.transform else image), self.labels[idx]
