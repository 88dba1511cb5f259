"""The fine-tune schedule as a Lightning callback: applies each epoch's phase and the per-step LR factors."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ftlab.finetune.param_groups import HEAD
from ftlab.finetune.phases import Schedule


def _batches_per_epoch(trainer: L.Trainer) -> float:
    """Training batches per epoch; unknown-length loaders count as infinitely long (progress 0)."""
    count = float(trainer.num_training_batches)
    return max(1.0, count) if math.isfinite(count) else math.inf


class FinetuneSchedule(Schedule, Callback):
    """Applies the phase of each epoch (see `Schedule`) during training.

    Logs `finetune/phase`, `finetune/trainable_params` and `lr/<stage>`; its state (the phases) goes into
    checkpoints, and everything else is rebuilt from the epoch on resume.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.apply(pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.apply(pl_module, epoch)
        trainable_params = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        pl_module.log("finetune/phase", float(self.phase_index(epoch)), on_epoch=True, on_step=False)
        pl_module.log("finetune/trainable_params", float(trainable_params), on_epoch=True, on_step=False)
        if trainer.optimizers:
            first = 1.0 / _batches_per_epoch(trainer)
            seen: set[str] = set()
            for group in trainer.optimizers[0].param_groups:
                stage = group.get("stage")
                if stage is None or stage in seen:
                    continue
                seen.add(stage)
                lr = group["lr"] * self.lr_factor(stage, epoch, first)
                pl_module.log(f"lr/{stage}", lr, on_epoch=True, on_step=False)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        progress = (batch_idx + 1) / _batches_per_epoch(trainer)
        stages = list(pl_module.stages) + [HEAD]  # type: ignore[arg-type]
        factors = {s: self.lr_factor(s, trainer.current_epoch, progress) for s in stages}
        pl_module.lr_factors = factors  # type: ignore[assignment]
