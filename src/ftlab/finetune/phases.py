"""Fine-tuning schedules: which stages train in each epoch, their LR multipliers and BatchNorm modes.

Every strategy compiles to a list of phases `{at_epoch, trainable, lr_mult}`, and everything follows from
the epoch alone: a resume at any epoch rebuilds the same state. Unfreezing only flips `requires_grad` (and
module modes); the optimizer already holds every stage's parameter group, so it is never rebuilt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ftlab.errors import FtlabError, did_you_mean
from ftlab.finetune.param_groups import HEAD

STRATEGIES = ("linear_probe", "full", "freeze_unfreeze", "gradual", "top_k", "custom")
BN_POLICIES = ("frozen", "train", "all_frozen")
BN_CHOICES = ("auto", *BN_POLICIES)  # what `finetune.bn` accepts; `auto` is resolved by `resolve_bn`
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class Phase:
    """From `at_epoch` on (until the next phase), these stages train with LRs scaled by `lr_mult`."""

    at_epoch: int
    trainable: frozenset[str]
    lr_mult: float = 1.0


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


def resolve_bn(policy: str, pretrained: bool) -> tuple[str, str]:
    """The BatchNorm policy to run (`auto` resolved) and why, for the start-of-run log line.

    `auto`: with pretrained weights every BatchNorm keeps its pretrained statistics (`all_frozen`): on the
    offline proxy, letting trained stages update them (`frozen`) dragged val accuracy below the head-only
    epoch (README, "Defaults that do not make the model worse"); a random init must learn its statistics
    (`frozen`: the stages that train update theirs).
    """
    if policy not in BN_CHOICES:
        raise FtlabError(f"finetune.bn={policy!r} is not one of {', '.join(BN_CHOICES)}.")
    if policy != "auto":
        return policy, "finetune.bn"
    if pretrained:
        return "all_frozen", "auto: pretrained weights keep their BatchNorm statistics"
    return "frozen", "auto: random init, the training stages learn their BatchNorm statistics"


def build_phases(
    strategy: str,
    stage_names: Sequence[str],
    *,
    unfreeze_at_epoch: int | None = 1,
    every: int = 1,
    milestones: Sequence[int] | None = None,
    min_stage: str | None = None,
    phases: Sequence[Any] | None = None,
    top_k: int = 1,
) -> list[Phase]:
    """Compile a strategy into phases over the backbone's trainable stages (those with parameters)."""
    names = list(stage_names)
    if strategy == "linear_probe":
        return [Phase(0, frozenset())]
    if strategy == "full":
        return [Phase(0, frozenset(names))]
    if strategy == "freeze_unfreeze":
        if unfreeze_at_epoch is None:
            return [Phase(0, frozenset())]
        if unfreeze_at_epoch <= 0:
            return [Phase(0, frozenset(names))]
        return [Phase(0, frozenset()), Phase(unfreeze_at_epoch, frozenset(names))]
    if strategy == "top_k":  # the k stages nearest the head, after `unfreeze_at_epoch` head-only epochs
        if not 0 <= top_k <= len(names):
            raise FtlabError(
                f"finetune.top_k={top_k} must be between 0 and the backbone's {len(names)} trainable stages "
                f"({', '.join(names)})."
            )
        top = frozenset(names[len(names) - top_k :] if top_k else [])
        if not unfreeze_at_epoch or unfreeze_at_epoch <= 0:
            return [Phase(0, top)]
        return [Phase(0, frozenset()), Phase(unfreeze_at_epoch, top)]
    if strategy == "gradual":
        lowest = names.index(min_stage) if min_stage else 0
        if min_stage and min_stage not in names:
            raise FtlabError(
                f"finetune.min_stage={min_stage!r} is not a stage.{did_you_mean(min_stage, names)}"
            )
        steps = len(names) - lowest
        epochs = list(milestones) if milestones else [every * (k + 1) for k in range(steps)]
        if len(epochs) < steps:
            steps = len(epochs)
        out = [Phase(0, frozenset())]
        for k in range(1, steps + 1):
            out.append(Phase(int(epochs[k - 1]), frozenset(names[len(names) - k :])))
        return out
    if strategy == "custom":
        if not phases:
            raise FtlabError(
                "finetune.strategy=custom needs finetune.phases: a list of {at_epoch, trainable, lr_mult}."
            )
        out = [
            Phase(
                int(p["at_epoch"]),
                resolve_trainable(p.get("trainable", []), names),
                float(p.get("lr_mult", 1.0)),
            )
            for p in phases
        ]
        out.sort(key=lambda p: p.at_epoch)
        if out[0].at_epoch != 0:
            out.insert(0, Phase(0, frozenset()))
        return out
    raise FtlabError(
        f"finetune.strategy={strategy!r} is unknown.{did_you_mean(strategy, STRATEGIES)} "
        f"Choose one of {', '.join(STRATEGIES)}."
    )


class Schedule:
    """The phases of a run and what follows from the epoch alone: `requires_grad`, modes, LR factors.

    BatchNorm policy `frozen`: frozen stages run in eval mode (fixed statistics, no dropout), so a frozen
    stage is a pure function of its input; `train`: frozen stages keep updating statistics; `all_frozen`:
    every norm layer in eval mode, for tiny batches. A stage unfrozen after epoch 0 warms its LR up
    linearly over `warmup_epochs`.
    """

    def __init__(self, phases: Sequence[Phase], bn: str = "frozen", warmup_epochs: float = 0.0) -> None:
        if bn not in BN_POLICIES:
            raise FtlabError(f"finetune.bn={bn!r} is not one of {', '.join(BN_POLICIES)}.")
        self.phases = sorted(phases, key=lambda p: p.at_epoch)
        self.bn, self.warmup_epochs = bn, warmup_epochs

    def phase_index(self, epoch: int) -> int:
        """Index of the phase in force at a 0-based epoch."""
        return max(i for i, p in enumerate(self.phases) if p.at_epoch <= epoch)

    def trainable(self, epoch: int) -> frozenset[str]:
        return self.phases[self.phase_index(epoch)].trainable

    def unreached(self, max_epochs: int | None) -> list[Phase]:
        """The phases that start at or after `max_epochs` (their stages never train); none when unbounded."""
        if max_epochs is None or max_epochs < 0:
            return []
        return [phase for phase in self.phases if phase.at_epoch >= max_epochs]

    def unfrozen_since(self, stage: str, epoch: int) -> int:
        """First epoch of the stage's current unbroken run of trainable phases."""
        since = epoch
        for phase in reversed(self.phases[: self.phase_index(epoch) + 1]):
            if stage != HEAD and stage not in phase.trainable:
                break
            since = phase.at_epoch
        return since

    def lr_factor(self, stage: str, epoch: int, progress: float) -> float:
        """LR multiplier of a stage at `epoch` + `progress` (fraction of the epoch done after this step)."""
        phase = self.phases[self.phase_index(epoch)]
        if stage != HEAD and stage not in phase.trainable:
            return 0.0
        factor = phase.lr_mult
        since = self.unfrozen_since(stage, epoch)
        if self.warmup_epochs > 0 and since > 0:
            factor *= min(1.0, (epoch - since + progress) / self.warmup_epochs)
        return factor

    def apply(self, pl_module: Any, epoch: int) -> None:
        """Set requires_grad and modes of every stage for `epoch`."""
        trainable = self.trainable(epoch)
        previous_mode = False
        for name, stage in pl_module.stages.items():
            params = list(stage.parameters())
            if params:
                on = name in trainable
                for param in params:
                    param.requires_grad = on
                mode = on or self.bn == "train"
            else:  # parameter-free glue follows the stage that feeds it
                mode = previous_mode
            stage.train(mode)
            previous_mode = mode
        pl_module.head.train(True)
        for param in pl_module.head.parameters():
            param.requires_grad = True
        if self.bn == "all_frozen":
            for module in pl_module.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def state_dict(self) -> dict[str, Any]:
        return {
            "phases": [(p.at_epoch, sorted(p.trainable), p.lr_mult) for p in self.phases],
            "bn": self.bn,
            "warmup_epochs": self.warmup_epochs,
        }
