"""Freeze-then-unfreeze: a frozen backbone is bit-identical after an epoch; unfreezing trains it."""

from __future__ import annotations

import lightning as L
import torch

from ftlab.data import ImageDataModule
from ftlab.data.sources import SyntheticSource
from ftlab.finetune.schedule import FreezeUnfreeze
from ftlab.models.module import Classifier


def _snapshot(module: Classifier) -> dict[str, torch.Tensor]:
    """Backbone parameters and buffers (BatchNorm statistics included)."""
    head = module.head_name
    return {k: v.detach().clone() for k, v in module.net.state_dict().items() if not k.startswith(head)}


def _fit(
    epochs: int, unfreeze_at: int | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Classifier]:
    L.seed_everything(0)
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=32)
    before = _snapshot(module)
    head_before = module.head.weight.detach().clone()
    dm = ImageDataModule(SyntheticSource(train_size=16, val_size=8), module.preprocessing, batch_size=8)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FreezeUnfreeze(unfreeze_at)],
    )
    trainer.fit(module, datamodule=dm)
    assert not torch.equal(module.head.weight, head_before)  # the head always trains
    return before, _snapshot(module), module


def test_frozen_backbone_is_bit_identical_after_an_epoch():
    before, after, _ = _fit(epochs=1, unfreeze_at=1)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []  # weights and BatchNorm running stats untouched


def test_unfreezing_trains_the_backbone_and_its_batchnorm():
    before, after, module = _fit(epochs=2, unfreeze_at=1)
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])
    assert all(p.requires_grad for p in module.parameters())


def test_phase_follows_the_epoch():
    schedule = FreezeUnfreeze(unfreeze_at_epoch=2)
    assert [schedule.phase(e) for e in range(4)] == ["head", "head", "full", "full"]
    assert FreezeUnfreeze(None).phase(100) == "head" and FreezeUnfreeze(0).phase(0) == "full"
