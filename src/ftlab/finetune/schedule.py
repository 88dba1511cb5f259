"""Freeze the backbone for the first epochs, then unfreeze it: decided from the epoch alone."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

PHASE_HEAD, PHASE_FULL = "head", "full"


class FreezeUnfreeze(Callback):
    """Train the head alone until `unfreeze_at_epoch` (0-based), then the whole network.

    While frozen, the backbone's parameters have `requires_grad=False` and its modules stay in eval mode
    (BatchNorm statistics fixed, dropout off), so the frozen part is a pure function of the image. The
    optimizer holds every parameter group from the start; unfreezing never rebuilds it. `None` never
    unfreezes (a linear probe); 0 trains everything from the start.
    """

    def __init__(self, unfreeze_at_epoch: int | None = 1) -> None:
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def phase(self, epoch: int) -> str:
        """The phase of a 0-based epoch."""
        if self.unfreeze_at_epoch is not None and epoch >= self.unfreeze_at_epoch:
            return PHASE_FULL
        return PHASE_HEAD

    def apply(self, pl_module: L.LightningModule, epoch: int) -> None:
        """Set requires_grad and train/eval modes of the backbone for `epoch`."""
        frozen = self.phase(epoch) == PHASE_HEAD
        for param in pl_module.backbone_parameters():  # type: ignore[operator]
            param.requires_grad = not frozen
        for module in pl_module.backbone_modules():  # type: ignore[operator]
            module.train(not frozen and pl_module.training)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.apply(pl_module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.apply(pl_module, epoch)
        pl_module.log("finetune/phase", float(self.phase(epoch) == PHASE_FULL), on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"unfreeze_at_epoch": self.unfreeze_at_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.unfreeze_at_epoch = state_dict["unfreeze_at_epoch"]
