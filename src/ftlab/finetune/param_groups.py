"""Optimizer parameter groups: one per stage (and per head), with per-stage learning rates and no weight
decay on norm and bias parameters. Every group exists from the start, frozen or not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ftlab.config.registry import register
from ftlab.errors import FtlabError

HEAD = "head"
NO_DECAY_SUFFIX = "/no_decay"


@register("param_groups", "settings")
@dataclass
class ParamGroupsSettings:
    """`param_groups`: the optimizer's per-stage LR and weight-decay policy, the same for every strategy."""

    backbone_lr_mult: float = 0.1  # backbone LR = head LR x this (the top stage; see lr_decay)
    lr_decay: float = 1.0  # each stage further from the head gets this factor more (e.g. 0.7; 1 = same LR)
    no_decay_norm_bias: bool = True  # no weight decay on biases and norm weights

    def __post_init__(self) -> None:
        if self.backbone_lr_mult < 0 or self.lr_decay < 0:
            raise FtlabError(
                f"param_groups.backbone_lr_mult={self.backbone_lr_mult} and param_groups.lr_decay="
                f"{self.lr_decay} must be >= 0 (they multiply the head's learning rate)."
            )


def stage_lr_multipliers(
    stage_names: list[str], lr_decay: float, backbone_mult: float = 1.0
) -> dict[str, float]:
    """Head x1; backbone stages (with parameters, stem first) x backbone_mult, decaying geometrically by
    `lr_decay` per stage away from the head: top stage x backbone_mult, the next x backbone_mult*decay, ..."""
    mults = {HEAD: 1.0}
    for depth, name in enumerate(reversed(stage_names)):
        mults[name] = backbone_mult * lr_decay**depth
    return mults


def build_param_groups(
    parts: Mapping[str, nn.Module],
    base_lr: float,
    lr_mults: Mapping[str, float],
    weight_decay: float,
    no_decay_norm_bias: bool = True,
) -> list[dict[str, Any]]:
    """Groups named `<part>` (and `<part>/no_decay`) for every part that has parameters.

    `parts` maps stage names (and "head") to modules; biases and norm weights (1-d tensors) go to the
    no-decay group when `no_decay_norm_bias`.
    """
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for name, module in parts.items():
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for param in module.parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if no_decay_norm_bias and param.ndim <= 1 else decay).append(param)
        lr = base_lr * lr_mults.get(name, 1.0)
        if decay:
            groups.append(
                {"name": name, "stage": name, "params": decay, "lr": lr, "weight_decay": weight_decay}
            )
        if no_decay:
            groups.append(
                {
                    "name": name + NO_DECAY_SUFFIX,
                    "stage": name,
                    "params": no_decay,
                    "lr": lr,
                    "weight_decay": 0.0,
                }
            )
    return groups
