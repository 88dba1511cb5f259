"""EMA of the weights (`ema.decay`) on Lightning's EMAWeightAveraging: validation and the saved checkpoints
use the averaged weights, and the decay warms up so that early, poor weights fade out quickly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from ftlab.config.registry import register
from ftlab.errors import FtlabError


@register("ema", "settings")
@dataclass
class EmaSettings:
    """`ema`: exponential moving average of the weights; validation and checkpoints use the average."""

    decay: float | None = None  # null = off; e.g. 0.999 (per optimizer step)
    warmup: bool = True  # decay min(decay, (1+n)/(10+n)) over the first updates, so early weights fade fast

    def __post_init__(self) -> None:
        if self.decay is not None and not 0.0 < self.decay < 1.0:
            raise FtlabError(f"ema.decay={self.decay} must be between 0 and 1 (e.g. 0.999), or null (off).")


def warmup_decay(decay: float, updates: int, warmup: bool = True) -> float:
    """Decay of the `updates`-th average (1 = the first after the initial copy): min(decay, (1+n)/(10+n))
    with warmup, as in TensorFlow's ExponentialMovingAverage with num_updates; `decay` without."""
    return min(decay, (1.0 + updates) / (10.0 + updates)) if warmup else decay


class EMA(EMAWeightAveraging):
    """Exponential moving average of parameters and buffers, updated after every optimizer step.

    The average is Lightning's `AveragedModel` with a lerp update (`torch._foreach_lerp_`, as torch's own
    EMA function), so a stage that is frozen keeps bit-identical weights in the average: frozen stages do
    not change and are not moved. BatchNorm statistics are averaged like any buffer (Lightning's
    `use_buffers=True`); integer buffers (`num_batches_tracked`) are copied.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, **kwargs: Any) -> None:
        if not 0.0 < decay < 1.0:
            raise FtlabError(f"ema.decay={decay}: use a value in (0, 1), e.g. 0.999, or null for no EMA.")
        super().__init__(decay=decay, **kwargs)
        self.decay, self.warmup = decay, warmup
        self._kwargs["avg_fn"] = None
        self._kwargs["multi_avg_fn"] = self._update

    def _update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
        decay = warmup_decay(self.decay, int(count), self.warmup)
        with torch.no_grad():
            if torch.is_floating_point(averaged[0]):
                torch._foreach_lerp_(averaged, current, 1.0 - decay)
            else:
                for avg, cur in zip(averaged, current, strict=True):
                    avg.copy_(cur)
