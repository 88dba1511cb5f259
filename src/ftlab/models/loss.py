"""Loss options (`loss.label_smoothing`, `loss.class_weights`, `loss.pos_weight`), accuracy on MixUp/CutMix
soft targets, and the multi-label loss (binary cross-entropy on a sigmoid head)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ftlab.config.registry import register
from ftlab.errors import FtlabError


@register("loss", "settings")
@dataclass
class LossSettings:
    """`loss`: cross-entropy options (timm/fastai recipes), all off by default; multi-label data trains
    with binary cross-entropy, where `label_smoothing` moves 0/1 targets towards 0.5 and `pos_weight`
    applies."""

    # share of each target spread evenly over all classes (e.g. 0.1); multi-label: target t -> t(1-e) + e/2
    label_smoothing: float = 0.0
    # null = unweighted | auto = inverse class frequency of the train split | [w0, ...]
    class_weights: Any = None
    # multi-label only: weight of positive targets per label; null | auto = negatives/positives of the
    # train split per label | [w0, ...]
    pos_weight: Any = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise FtlabError(f"loss.label_smoothing={self.label_smoothing} must be in [0, 1) (e.g. 0.1).")
        weights = self.class_weights
        if isinstance(weights, Sequence) and not isinstance(weights, str):
            try:
                self.class_weights = [float(w) for w in weights]
            except (TypeError, ValueError) as err:
                raise FtlabError(
                    f"loss.class_weights={list(weights)!r}: every weight must be a number, one per class."
                ) from err
        elif weights not in (None, "auto"):
            raise FtlabError(
                f"loss.class_weights={weights!r}: give null, auto or a list of one weight per class."
            )
        pos = self.pos_weight
        if isinstance(pos, Sequence) and not isinstance(pos, str):
            try:
                self.pos_weight = [float(w) for w in pos]
            except (TypeError, ValueError) as err:
                raise FtlabError(
                    f"loss.pos_weight={list(pos)!r}: every weight must be a number, one per label."
                ) from err
        elif pos not in (None, "auto"):
            raise FtlabError(
                f"loss.pos_weight={pos!r}: give null, auto (negatives / positives per label, from the "
                "training split) or a list of one weight per label."
            )


def loss_weights(
    spec: str | list[float] | None, labels: torch.Tensor | None, num_classes: int
) -> torch.Tensor | None:
    """Per-class cross-entropy weights: None (off), a list (one per class), or `auto`.

    `auto` is scikit-learn's "balanced" rule, n_images / (n_classes * n_images_of_class), from the
    training labels (None until they are known); a class without training images gets weight 0.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "auto":
            raise FtlabError(
                f"loss.class_weights={spec!r}: use `auto` (inverse class frequency of the training split), "
                "a list of one weight per class, or null."
            )
        if labels is None:
            return None
        counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes).double()
        weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), 0.0)
        return weights.float()
    values = [float(v) for v in spec]
    if len(values) != num_classes or any(v < 0 for v in values):
        raise FtlabError(
            f"loss.class_weights={values}: give {num_classes} non-negative weights (one per class, in the "
            "order of data.classes), or `auto`."
        )
    return torch.tensor(values)


def dominant_label(targets: torch.Tensor) -> torch.Tensor:
    """Class indices as they are; soft targets (N, K) as their largest entry: the label MixUp/CutMix kept most
    of (ties go to the lower class index), which is what train accuracy is measured against."""
    return targets.argmax(dim=1) if targets.ndim == 2 else targets


def positive_weights(
    spec: str | list[float] | None, labels: torch.Tensor | None, num_classes: int
) -> torch.Tensor | None:
    """`loss.pos_weight` as a (classes,) tensor: None (off), a list (one per label), or `auto`.

    `auto` is negatives / positives of each label column of the training multi-hot rows (None until they
    are known); a label with no positive training image gets 1 (it has no positive target to weigh).
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if labels is None:
            return None
        present = torch.as_tensor(labels).double() > 0.5
        positives = present.sum(dim=0).double()
        negatives = len(present) - positives
        return torch.where(positives > 0, negatives / positives.clamp(min=1), 1.0).float()
    values = [float(v) for v in spec]
    if len(values) != num_classes or any(v < 0 for v in values):
        raise FtlabError(
            f"loss.pos_weight={values}: give {num_classes} non-negative weights (one per label, in the "
            "order of data.classes), or `auto`."
        )
    return torch.tensor(values)


def smooth_binary(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Binary targets moved towards 0.5: t (1 - e) + e / 2 (each label's two outcomes share e)."""
    return targets * (1.0 - smoothing) + 0.5 * smoothing if smoothing else targets


class MultiLabelLoss(nn.Module):
    """Binary cross-entropy with logits over every label (mean over images and labels), with optional
    per-label `weight` (loss.class_weights), `pos_weight` and binary label smoothing.

    Targets are multi-hot rows, or mixed rows in [0, 1] under MixUp/CutMix.
    """

    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", None, persistent=False)
        self.register_buffer("pos_weight", None, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = smooth_binary(targets.to(logits.dtype), self.label_smoothing)
        return F.binary_cross_entropy_with_logits(
            logits, targets, weight=self.weight, pos_weight=self.pos_weight
        )
