"""Fine-tune strategies: each is one settings dataclass (its keys, defaults and comments) whose `phases`
method compiles it to phases, registered under the name that `finetune=<name>` selects.

Adding a strategy: a subclass of `FinetuneSettings` here with `strategy: str = "<name>"`, its own fields and
`to_phases()`, decorated with `@strategy`; and `conf/finetune/<name>.yaml` extending its schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ftlab.config.registry import register, registered, registered_name
from ftlab.errors import FtlabError, did_you_mean
from ftlab.finetune.lr_suggestion import DEFAULT_RULE, RULES
from ftlab.finetune.param_groups import HEAD
from ftlab.finetune.phases import BN_CHOICES, Phase

T = TypeVar("T", bound="FinetuneSettings")


@dataclass
class FinetuneSettings:
    """`finetune=`: the keys every strategy has (which stages train when; BatchNorm of frozen stages)."""

    strategy: str = "???"  # the schedule: set by each strategy (finetune=<name> picks one with its keys)
    bn: str = "auto"  # auto (pretrained: all_frozen, random init: frozen) | frozen | train | all_frozen
    lr_find: bool = False  # LR range test at epoch 0 and each unfreeze; its suggestion sets the phase lr_mult
    lr_find_rule: str = DEFAULT_RULE  # how lr_find picks from the curve: steepest | valley | min_div10

    def __post_init__(self) -> None:
        own = registered_name(type(self))
        if own is not None and self.strategy != own[1]:
            raise FtlabError(
                f"finetune.strategy={self.strategy!r} does not match the chosen finetune={own[1]}: a "
                "strategy "
                f"comes with its own keys, so pick it as a group, e.g. finetune={self.strategy} "
                f"(strategies: {', '.join(registered('finetune'))})."
            )
        if self.bn not in BN_CHOICES:
            raise FtlabError(
                f"finetune.bn={self.bn!r} is not a BatchNorm policy.{did_you_mean(self.bn, BN_CHOICES)} "
                f"Choose one of {', '.join(BN_CHOICES)}."
            )
        if self.lr_find_rule not in RULES:
            raise FtlabError(
                f"finetune.lr_find_rule={self.lr_find_rule!r} is not an LR finder rule."
                f"{did_you_mean(self.lr_find_rule, RULES)} Choose one of {', '.join(RULES)} (docs/recipes.md "
                "compares them)."
            )
        warmup = getattr(self, "warmup_epochs", 0.0)
        if warmup < 0:
            raise FtlabError(f"finetune.warmup_epochs={warmup} must be >= 0 (0 = no warmup).")

    @property
    def warmup(self) -> float:
        """Linear LR warmup (epochs) of a stage after it unfreezes; 0 for strategies without the key."""
        return float(getattr(self, "warmup_epochs", 0.0))

    def to_phases(self, stage_names: Sequence[str]) -> list[Phase]:
        """The phases over the backbone's trainable stages (those with parameters), stem first."""
        raise NotImplementedError(f"{type(self).__name__} does not define to_phases()")


def strategy(cls: type[T]) -> type[T]:
    """Register a strategy under the default of its `strategy` field."""
    return register("finetune", cls.strategy)(cls)


@strategy
@dataclass
class LinearProbe(FinetuneSettings):
    """Backbone frozen throughout; only the head trains (features stay a pure function of the image)."""

    strategy: str = "linear_probe"  # the schedule

    def to_phases(self, stage_names: Sequence[str]) -> list[Phase]:
        return [Phase(0, frozenset())]


@strategy
@dataclass
class Full(FinetuneSettings):
    """Everything trains from the first epoch (per-stage LRs: param_groups.backbone_lr_mult and lr_decay)."""

    strategy: str = "full"  # the schedule

    def to_phases(self, stage_names: Sequence[str]) -> list[Phase]:
        return [Phase(0, frozenset(stage_names))]


@strategy
@dataclass
class FreezeUnfreeze(FinetuneSettings):
    """Head only first, then the whole backbone at `unfreeze_at_epoch`."""

    strategy: str = "freeze_unfreeze"  # the schedule
    # 0-based epoch at which the whole backbone starts training (null: never)
    unfreeze_at_epoch: int | None = 1
    warmup_epochs: float = 0.5  # linear LR warmup for stages when they unfreeze (0 = none)

    def to_phases(self, stage_names: Sequence[str]) -> list[Phase]:
        if self.unfreeze_at_epoch is None:
            return [Phase(0, frozenset())]
        if self.unfreeze_at_epoch <= 0:
            return [Phase(0, frozenset(stage_names))]
        return [Phase(0, frozenset()), Phase(self.unfreeze_at_epoch, frozenset(stage_names))]


@strategy
@dataclass
class LastStages(FinetuneSettings):
    """The `top_k` stages nearest the head train after `unfreeze_at_epoch` head-only epochs; the stages
    below never train, so they run once per image (feature cache) in every epoch."""

    strategy: str = "last_stages"  # the schedule
    top_k: int = 1  # how many stages nearest the head train (1: the last stage, e.g. layer4)
    unfreeze_at_epoch: int = 1  # head-only epochs before the top_k stages train (1: the head settles first)
    warmup_epochs: float = 0.0  # linear LR warmup of the stages after they start training

    def to_phases(self, stage_names: Sequence[str]) -> list[Phase]:
        names = list(stage_names)
        if not 0 <= self.top_k <= len(names):
            raise FtlabError(
                f"finetune.top_k={self.top_k} must be between 0 and the backbone's {len(names)} trainable "
                f"stages ({', '.join(names)})."
            )
        top = frozenset(names[len(names) - self.top_k :] if self.top_k else [])
        if self.unfreeze_at_epoch <= 0:
            return [Phase(0, top)]
        return [Phase(0, frozenset()), Phase(self.unfreeze_at_epoch, top)]


@strategy
@dataclass
class Gradual(FinetuneSettings):
    """Unfreeze one more stage from the top every `every` epochs (or at `milestones`), down to `min_stage`
    (per-stage LRs: param_groups.backbone_lr_mult and lr_decay, e.g. lr_decay=0.7 for ULMFiT-style decay)."""

    strategy: str = "gradual"  # the schedule
    every: int = 1  # epochs between unfreezes (ignored when milestones is set)
    milestones: list[int] | None = None  # explicit epochs, e.g. [1, 3, 5]: the k-th entry unfreezes the top k
    min_stage: str | None = None  # deepest stage to unfreeze (e.g. layer2); null = all of them, stem included
    warmup_epochs: float = 0.5  # linear LR warmup of a stage after it unfreezes

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.every < 1:
            raise FtlabError(f"finetune.every={self.every} must be >= 1 (epochs between unfreezes).")

    def to_phases(self, stage_names: Sequence[str]) -> list[Phase]:
        names = list(stage_names)
        if self.min_stage and self.min_stage not in names:
            raise FtlabError(
                f"finetune.min_stage={self.min_stage!r} is not a stage.{did_you_mean(self.min_stage, names)}"
            )
        lowest = names.index(self.min_stage) if self.min_stage else 0
        steps = len(names) - lowest
        epochs = list(self.milestones) if self.milestones else [self.every * (k + 1) for k in range(steps)]
        steps = min(steps, len(epochs))
        out = [Phase(0, frozenset())]
        for k in range(1, steps + 1):
            out.append(Phase(int(epochs[k - 1]), frozenset(names[len(names) - k :])))
        return out


@strategy
@dataclass
class Custom(FinetuneSettings):
    """Your own phases: each {at_epoch, trainable: [stage names | top-k | all | none], lr_mult}."""

    strategy: str = "custom"  # the schedule
    # sorted by at_epoch; the head always trains; e.g. [{at_epoch: 0, trainable: none}]
    phases: list[Any] | None = None
    warmup_epochs: float = 0.0  # linear LR warmup of a stage after it unfreezes

    def to_phases(self, stage_names: Sequence[str]) -> list[Phase]:
        if not self.phases:
            raise FtlabError(
                "finetune.strategy=custom needs finetune.phases: a list of {at_epoch, trainable, lr_mult}."
            )
        out = [
            Phase(
                int(p["at_epoch"]),
                resolve_trainable(p.get("trainable", []), stage_names),
                float(p.get("lr_mult", 1.0)),
            )
            for p in self.phases
        ]
        out.sort(key=lambda p: p.at_epoch)
        if out[0].at_epoch != 0:
            out.insert(0, Phase(0, frozenset()))
        return out


def resolve_trainable(spec: str | Iterable[str], stage_names: Sequence[str]) -> frozenset[str]:
    """Stage names from a list of names, `top-k` (the k stages nearest the head), `all` or `none`."""
    items = [spec] if isinstance(spec, str) else list(spec)
    chosen: set[str] = set()
    for item in items:
        item = str(item)
        match = re.fullmatch(r"top-(\d+)", item)
        if item == "all":
            chosen.update(stage_names)
        elif item in ("none", HEAD):
            continue
        elif match:
            k = int(match.group(1))
            chosen.update(stage_names[len(stage_names) - k :] if k else [])
        elif item in stage_names:
            chosen.add(item)
        else:
            raise FtlabError(
                f"finetune: unknown stage {item!r}.{did_you_mean(item, stage_names)} Stages of this "
                f"backbone: {', '.join(stage_names)}; also `top-k`, `all`, `none`."
            )
    return frozenset(chosen)


def build_phases(strategy: str, stage_names: Sequence[str], **options: Any) -> list[Phase]:
    """The phases of strategy `strategy` with `options` (its keys) over `stage_names`."""
    strategies = registered("finetune")
    if strategy not in strategies:
        raise FtlabError(
            f"finetune.strategy={strategy!r} is unknown.{did_you_mean(strategy, strategies)} "
            f"Choose one of {', '.join(strategies)}."
        )
    settings: FinetuneSettings = strategies[strategy](**options)
    return settings.to_phases(stage_names)
