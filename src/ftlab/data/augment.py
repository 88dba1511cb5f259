"""Training augmentation presets (`data.augment`) and batch mixing (`data.mixup_alpha`, `data.cutmix_alpha`).

Presets are torchvision.transforms.v2 ops on uint8 images. `hflip` stays in the loader (the feature cache
replays its coin flip); the others run per image on the device after transfer (or in the loader with
`data.preprocess_on=cpu`). MixUp/CutMix run on the normalised device batch and turn labels into soft targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from ftlab.errors import FtlabError, did_you_mean

PRESETS = ("none", "hflip", "randaugment", "trivialaugment", "random_resized_crop", "color_jitter")
FINITE = ("none", "hflip")  # presets with finitely many outcomes: the feature cache can hold them as views


def parse_augment(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """`data.augment` (a preset, a list of presets, or `a+b`) as an ordered tuple without `none`."""
    if value is None:
        return ()
    items = value.split("+") if isinstance(value, str) else [str(v) for v in value]
    names: list[str] = []
    for item in (i.strip() for i in items):
        if item not in PRESETS:
            raise FtlabError(
                f"data.augment: unknown preset {item!r}.{did_you_mean(item, PRESETS)} "
                f"Use one of {', '.join(PRESETS)}, or a list of them, e.g. data.augment=[hflip,randaugment]."
            )
        if item != "none" and item not in names:
            names.append(item)
    return tuple(names)


def augment_key(names: Sequence[str], mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> str:
    """The random steps of the training pipeline joined by `+` (`none` when there are none).

    The feature cache keys on this: only `none` and `hflip` have finitely many outcomes and can be cached.
    """
    parts = list(names) + (["mixup"] if mixup_alpha > 0 else []) + (["cutmix"] if cutmix_alpha > 0 else [])
    return "+".join(parts) or "none"


def _op(name: str, size: tuple[int, int]) -> v2.Transform:
    if name == "randaugment":
        return v2.RandAugment()
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    if name == "random_resized_crop":  # output keeps the input size: the resize to the crop comes later
        return v2.RandomResizedCrop(list(size), scale=(0.35, 1.0), antialias=True)
    if name == "color_jitter":
        return v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
    raise AssertionError(name)


class ImageAugment:
    """The non-flip presets on uint8 images: each image of a (N, C, H, W) batch draws its own parameters.

    v2 ops given a batch would draw one set of parameters for all of it, so a batch is augmented image by
    image (on whatever device it lives on). Random numbers come from torch's global generator, which the
    epoch sampler reseeds per epoch.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(n for n in names if n not in FINITE)
        self._compose: dict[tuple[int, int], v2.Compose] = {}

    def __bool__(self) -> bool:
        return bool(self.names)

    def _for(self, size: tuple[int, int]) -> v2.Compose:
        if size not in self._compose:
            self._compose[size] = v2.Compose([_op(n, size) for n in self.names])
        return self._compose[size]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self.names:
            return images
        compose = self._for((int(images.shape[-2]), int(images.shape[-1])))
        if images.ndim == 3:
            return compose(images)
        return torch.stack([compose(image) for image in images])


class BatchMix:
    """MixUp and/or CutMix from torchvision v2 (one of them per batch, at random, when both are on).

    Returns the mixed images and soft targets (N, num_classes) whose rows sum to 1.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise FtlabError(
                f"data.mixup_alpha={mixup_alpha} / data.cutmix_alpha={cutmix_alpha}: Beta parameters must be "
                "> 0 to turn the mixing on, or 0 to leave it off."
            )
        mixers: list[Any] = []
        if mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.transform: Any = (
            None if not mixers else mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
        )

    def __bool__(self) -> bool:
        return self.transform is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            return images, labels
        mixed, soft = self.transform(images, labels)
        return mixed, soft
