"""Loss options (`loss.label_smoothing`, `loss.class_weights`) and accuracy on MixUp/CutMix soft targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ftlab.config.registry import register
from ftlab.errors import FtlabError


@register("loss", "settings")
@dataclass
class LossSettings:
    """`loss`: cross-entropy options (timm/fastai recipes); both off by default."""

    label_smoothing: float = 0.0  # share of each target spread evenly over all classes (e.g. 0.1)
    # null = unweighted | auto = inverse class frequency of the train split | [w0, ...]
    class_weights: Any = None

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
