"""Per-step LR schedules that keep each stage group's own peak LR (so per-stage multipliers survive)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR

from ftlab.config.registry import register
from ftlab.errors import FtlabError

INTERVALS = ("epoch", "step")


@register("scheduler", "settings")
@dataclass
class SchedulerSettings:
    """`scheduler=<name>`: the torch LR scheduler (`factory`) and how Lightning steps it."""

    factory: Any = None  # a torch LR scheduler node (`_target_`, `_partial_: true`); null = constant LR
    interval: str = "epoch"  # when Lightning steps the scheduler: every `epoch` or every optimizer `step`
    monitor: str | None = None  # metric a ReduceLROnPlateau scheduler watches (e.g. val/loss)

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise FtlabError(
                f"scheduler.interval={self.interval!r}: Lightning steps a scheduler once per `epoch` or "
                "every optimizer `step`; give one of those."
            )
        factory = self.factory
        if factory is not None and not (isinstance(factory, dict) and "_target_" in factory):
            raise FtlabError(
                f"scheduler.factory={factory!r}: give a Hydra node with `_target_` (a torch LR scheduler, "
                "`_partial_: true`) or null for a constant LR (scheduler=none)."
            )


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup over `warmup_fraction` of the steps, then cosine decay to `min_lr_ratio` x group LR."""
    warmup = max(1, int(round(total_steps * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def one_cycle(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> OneCycleLR:
    """OneCycle whose peak for each group is that group's configured LR (head, stages, decay)."""
    peaks = [group["lr"] for group in optimizer.param_groups]
    return OneCycleLR(
        optimizer,
        max_lr=peaks,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
