"""Each `scheduler=` preset, run through `train(cfg)`, moves every group's LR exactly as the same torch
scheduler does on a bare optimizer (per step or per epoch, as docs/guide/finetune.md says)."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.optim import lr_scheduler

from ftlab.training.run import train

EPOCHS, STEPS = 3, 2  # 16 training images in batches of 8
RUN = [
    "+experiment=smoke",
    "trainer=cpu",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=8",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.num_sanity_val_steps=0",
    "callbacks=none",
    "~logger",  # no files: the LRs are read from the optimizer
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "+trainer.enable_checkpointing=false",
    "+callbacks.lrs._target_=tests.training.test_schedulers.RecordLRs",
]
EXTRA = {  # make each schedule show its shape within 6 steps
    "cosine_warmup": ["scheduler.factory.warmup_fraction=0.34"],  # 2 warmup steps of 6
    "plateau": ["scheduler.factory.patience=0", "+scheduler.factory.threshold=0.5"],  # reduce unless halved
}


class RecordLRs(Callback):
    """Every group's LR at each training step (the scheduler's own value) and val/loss after each epoch."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.val_losses: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.val_losses.append(float(trainer.callback_metrics["val/loss"]))


def _reference(name: str, peaks: list[float], val_losses: list[float]) -> list[list[float]]:
    """The same schedule from torch.optim.lr_scheduler on a bare SGD with one group per ftlab group."""
    optimizer = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in peaks])
    total = EPOCHS * STEPS
    per_step: Any = None
    per_epoch: Any = None
    if name == "cosine":
        per_epoch = lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS, eta_min=0.0)
    elif name == "cosine_warmup":
        warmup = 2
        per_step = lr_scheduler.SequentialLR(
            optimizer,
            [
                lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup - 1),
                lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup),
            ],
            milestones=[warmup],
        )
    elif name == "onecycle":
        per_step = lr_scheduler.OneCycleLR(
            optimizer, max_lr=peaks, total_steps=total, pct_start=0.3, div_factor=25.0, final_div_factor=1e4
        )
    elif name == "plateau":
        per_epoch = lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=0, threshold=0.5
        )
    lrs = []
    for epoch in range(EPOCHS):
        for _ in range(STEPS):
            lrs.append([group["lr"] for group in optimizer.param_groups])
            optimizer.step()
            if per_step is not None:
                per_step.step()
        if isinstance(per_epoch, lr_scheduler.ReduceLROnPlateau):
            per_epoch.step(val_losses[epoch])
        elif per_epoch is not None:
            per_epoch.step()
    return lrs


@pytest.mark.parametrize("name", ["cosine", "cosine_warmup", "onecycle", "plateau", "none"])
def test_lr_trajectory_matches_plain_pytorch(compose_cfg, name):
    cfg = compose_cfg([*RUN, f"scheduler={name}", *EXTRA.get(name, [])])
    _, objects = train(cfg)
    (record,) = [c for c in objects["trainer"].callbacks if isinstance(c, RecordLRs)]
    module = objects["module"]
    peaks = [group["lr"] for group in module.param_groups(cfg.optimizer.lr, cfg.optimizer.weight_decay)]
    assert len(set(peaks)) > 1  # head and backbone groups differ (param_groups.backbone_lr_mult)
    expected = _reference(name, peaks, record.val_losses)
    assert len(record.lrs) == EPOCHS * STEPS
    for step, (seen, want) in enumerate(zip(record.lrs, expected, strict=True)):
        assert seen == pytest.approx(want, rel=1e-6), (name, step, seen, want)
    head = [lrs[-1] for lrs in record.lrs]
    changes = sum(a != b for a, b in zip(head, head[1:], strict=False))
    if name == "plateau":
        assert changes >= 1  # the plateau rule fired at least once in this run
    else:  # per epoch: changes only between epochs; per step: every step (warmup ends at its peak)
        assert changes == {"none": 0, "cosine": EPOCHS - 1, "cosine_warmup": 4, "onecycle": 5}[name]
