"""Early stopping that knows the fine-tune schedule: patience counts within a phase and restarts at each
unfreeze, and running out of patience stops the run only in the schedule's last phase."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from ftlab.config.registry import register
from ftlab.errors import FtlabError
from ftlab.finetune.phases import Schedule

MODES = ("max", "min")


@register("early_stopping", "settings")
@dataclass
class EarlyStoppingSettings:
    """`early_stopping`: patience restarts at each unfreeze; the run stops only in the last phase."""

    patience: int | None = None  # null = off; validation epochs without improvement before stopping
    monitor: str = "val/acc"  # metric to watch
    mode: str = "max"  # max: higher is better; min: lower is better
    min_delta: float = 0.0  # smallest change that counts as an improvement

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise FtlabError(f"early_stopping.mode={self.mode!r} is not one of {', '.join(MODES)}.")
        if self.patience is not None and self.patience < 1:
            raise FtlabError(f"early_stopping.patience={self.patience} must be >= 1, or null (off).")


class PhaseAwareEarlyStopping(EarlyStopping):
    """Lightning's EarlyStopping, with the schedule's phases (`early_stopping.patience`).

    At the first epoch of a new phase the wait count restarts (the best score is kept). A plateau before the
    last phase cannot stop the run, since the stages still to unfreeze have not trained yet; non-finite values
    and thresholds stop in any phase, as in Lightning.
    """

    def __init__(self, schedule: Schedule | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schedule = schedule
        self.phase = 0

    def _phase_of(self, trainer: L.Trainer) -> int:
        if self.schedule is None:
            from ftlab.callbacks.schedule import ScheduleCallback  # the run's schedule callback

            found = [c for c in trainer.callbacks if isinstance(c, ScheduleCallback)]  # type: ignore[attr-defined]
            self.schedule = found[0] if found else Schedule([])
        if not self.schedule.phases:
            return 0
        return self.schedule.phase_index(trainer.current_epoch)

    def _in_last_phase(self) -> bool:
        return self.schedule is None or self.phase >= len(self.schedule.phases) - 1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        phase = self._phase_of(trainer)
        if phase != self.phase:
            self.wait_count = 0
        self.phase = phase

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        patience_out = should_stop and self.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
        if patience_out and not self._in_last_phase():
            self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
            return False, f"{reason} Not stopping: phase {self.phase} is not the schedule's last."
        return should_stop, reason

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"phase": self.phase}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.phase = state_dict.get("phase", 0)
