"""Generated, learnable images for tests and smoke runs: no files, no downloads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ftlab.data.datasets import LabeledImages, TensorImages
from ftlab.data.sources.base import Asset


@dataclass
class SyntheticSource:
    """Generated, learnable images: each class has its own colour and stripe orientation, plus noise
    (`multi_label=true`: several classes per image, each a patch of its colour and stripes)."""

    num_classes: int = 3  # number of generated classes (class_0, class_1, ...)
    train_size: int = 96  # generated training images
    val_size: int = 48  # generated validation images
    size: int = 32  # stored side of the generated images
    noise: float = 0.25  # Gaussian noise level (0 = trivially separable)
    seed: int = 0
    classes: list[str] = field(default_factory=list)  # class names; empty = class_0, class_1, ...
    # true: several labels per image (each class a coloured striped patch, present or not)
    multi_label: bool = False
    fixed_size: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if not self.classes:
            self.classes = [f"class_{i}" for i in range(self.num_classes)]
        self.num_classes = len(self.classes)

    def assets(self) -> list[Asset]:
        return []

    def _generate(self, n: int, seed: int) -> TensorImages:
        gen = torch.Generator().manual_seed(seed)
        palette = torch.rand(self.num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(12345))
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        coords = torch.linspace(0, 6.2832, self.size)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        angles = labels.float() * (3.1416 / self.num_classes)
        stripes = torch.sin(
            xx * torch.cos(angles)[:, None, None] * 2 + yy * torch.sin(angles)[:, None, None] * 2
        )
        images = (
            0.6 * palette[labels]
            + 0.3 * stripes[:, None]
            + self.noise * torch.randn(n, 3, self.size, self.size, generator=gen)
        )
        return TensorImages((images.clamp(0, 1) * 255).to(torch.uint8), labels)

    def _generate_multi(self, n: int, seed: int) -> TensorImages:
        """Images holding a random set of the classes (each present with probability 0.4, at least one):
        class k paints a square patch of a third of the side, in its own colour and stripe orientation, at a
        random place; labels are the (n, classes) multi-hot rows."""
        gen = torch.Generator().manual_seed(seed)
        palette = torch.rand(self.num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(12345))
        labels = (torch.rand(n, self.num_classes, generator=gen) < 0.4).float()
        empty = labels.sum(dim=1) == 0
        labels[empty, torch.randint(self.num_classes, (int(empty.sum()),), generator=gen)] = 1.0
        side = max(4, self.size // 3)
        coords = torch.linspace(0, 6.2832, side)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        images = 0.05 + self.noise * torch.randn(n, 3, self.size, self.size, generator=gen)  # dark ground
        for k in range(self.num_classes):
            angle = k * 3.1416 / self.num_classes
            patch = 0.7 * palette[k] + 0.3 * torch.sin(xx * 2 * math.cos(angle) + yy * 2 * math.sin(angle))
            for i in torch.nonzero(labels[:, k]).flatten().tolist():
                y, x = torch.randint(self.size - side + 1, (2,), generator=gen).tolist()
                images[i, :, y : y + side, x : x + side] = patch + self.noise * torch.randn(
                    3, side, side, generator=gen
                )
        return TensorImages((images.clamp(0, 1) * 255).to(torch.uint8), labels)

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        make = self._generate_multi if self.multi_label else self._generate
        return make(self.train_size, self.seed), make(self.val_size, self.seed + 1)
