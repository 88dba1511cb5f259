"""The fine-tune schedule as a Lightning callback: applies each epoch's phase; the module asks it for LRs."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from ftlab.errors import FtlabError
from ftlab.finetune.phases import Schedule
from ftlab.models.module import Classifier, batches_per_epoch


def _classifier(pl_module: L.LightningModule) -> Classifier:
    if not isinstance(pl_module, Classifier):
        raise FtlabError(
            f"ScheduleCallback drives an ftlab Classifier, got {type(pl_module).__name__}: build the model "
            "with ftlab.models.module.Classifier."
        )
    return pl_module


class ScheduleCallback(Schedule, Callback):
    """Applies the phase of each epoch (see `Schedule`) during training.

    At fit start it hands itself to the module (`Classifier.follow`), which asks it for each stage's LR
    factor at every optimizer step. Logs `finetune/phase`, `finetune/trainable_params` and `lr/<stage>`;
    its state (the phases) goes into checkpoints, and everything else is rebuilt from the epoch on resume.
    """

    @property
    def state_key(self) -> str:
        # Checkpoints keep this state under the class's former name, so checkpoints written before the
        # rename (tests/fixtures/before_layout_shufflenet.ckpt) and after it resume with their phases.
        return "FinetuneSchedule"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = _classifier(pl_module)
        module.follow(self)
        self.apply(module, trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.apply(pl_module, epoch)
        trainable_params = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        pl_module.log("finetune/phase", float(self.phase_index(epoch)), on_epoch=True, on_step=False)
        pl_module.log("finetune/trainable_params", float(trainable_params), on_epoch=True, on_step=False)
        if trainer.optimizers:
            first = 1.0 / batches_per_epoch(trainer)
            seen: set[str] = set()
            for group in trainer.optimizers[0].param_groups:
                stage = group.get("stage")
                if stage is None or stage in seen:
                    continue
                seen.add(stage)
                lr = group["lr"] * self.lr_factor(stage, epoch, first)
                pl_module.log(f"lr/{stage}", lr, on_epoch=True, on_step=False)
