"""Test-time augmentation (`tta=hflip|five_crop` in ftlab.eval and ftlab.predict): the mean of the class
probabilities (multi-label: of each label's sigmoid probability) over views of each image, all views of a
batch in one forward pass."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms.v2 import functional as F

from ftlab.errors import FtlabError

TTA_MODES = ("none", "hflip", "five_crop")
FIVE_CROP_SCALE = 0.875  # side of each of the five crops, as a share of the image side


def tta_views(images: torch.Tensor, mode: str) -> torch.Tensor:
    """(V, N, C, H, W) views of a preprocessed batch: the images (none); and their mirror (hflip); or four
    corner crops and the centre crop of 0.875 of the side, each resized back to H x W (five_crop)."""
    if mode not in TTA_MODES:
        raise FtlabError(f"tta={mode!r}: use one of {', '.join(TTA_MODES)}.")
    if mode == "none":
        return images.unsqueeze(0)
    if mode == "hflip":
        return torch.stack([images, images.flip(-1)])
    height, width = images.shape[-2:]
    side = [max(1, round(height * FIVE_CROP_SCALE)), max(1, round(width * FIVE_CROP_SCALE))]
    crops = F.five_crop(images, side)
    return torch.stack([F.resize(c, [height, width], antialias=True) for c in crops])


def tta_mean(
    probs_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str = "none"
) -> torch.Tensor:
    """Class probabilities (N, classes): `probs_fn` averaged over the batch's TTA views, one forward pass."""
    views = tta_views(images, mode)
    count, batch = views.shape[:2]
    probs = probs_fn(views.reshape(count * batch, *views.shape[2:]))
    return probs.float().reshape(count, batch, -1).mean(dim=0)


def tta_probabilities(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str = "none"
) -> torch.Tensor:
    """Class probabilities (N, classes): softmax of `logits_fn` averaged over the batch's TTA views."""
    return tta_mean(lambda x: torch.softmax(logits_fn(x).float(), dim=1), images, mode)


def tta_logits(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str = "none"
) -> torch.Tensor:
    """Logits whose softmax is the TTA mean of probabilities (their log); plain logits without TTA."""
    if mode == "none":
        return logits_fn(images)
    return torch.log(tta_probabilities(logits_fn, images, mode).clamp_min(1e-12))


def tta_multilabel_logits(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str = "none"
) -> torch.Tensor:
    """Multi-label: logits whose sigmoid is the TTA mean of the per-label probabilities; plain logits
    without TTA."""
    if mode == "none":
        return logits_fn(images)
    mean = tta_mean(lambda x: torch.sigmoid(logits_fn(x).float()), images, mode)
    return torch.logit(mean.clamp(1e-7, 1 - 1e-7))
