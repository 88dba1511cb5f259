"""Gradient accumulation with the fine-tune schedule: 2 batches of 8 accumulated train exactly like 1 batch
of 16, with a per-step LR scheduler and an unfreeze warmup (steps and progress count optimizer steps)."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.data import ImageDataModule
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.finetune.strategies import build_phases
from ftlab.models.module import Classifier
from tests.helpers.trainers import quiet_cpu_trainer


def _train(batch_size: int, accumulate: int) -> dict[str, torch.Tensor]:
    L.seed_everything(0)
    module = Classifier(
        "resnet18",
        ["a", "b", "c"],
        weights=None,
        image_size=32,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        scheduler=functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.05),
        scheduler_interval="step",
    )
    # BatchNorm in eval mode everywhere (all_frozen): no batch statistics, so a batch's gradient is the
    # mean of its images' gradients, and halves of a batch add up to it
    phases = build_phases("freeze_unfreeze", module.trainable_stage_names, unfreeze_at_epoch=1)
    schedule = ScheduleCallback(phases, bn="all_frozen", warmup_epochs=0.5)
    data = ImageDataModule(
        SyntheticSource(train_size=32, val_size=8),
        module.preprocessing,
        batch_size=batch_size,
        augment="none",
    )
    trainer = quiet_cpu_trainer(
        max_epochs=2,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accumulate_grad_batches=accumulate,
        callbacks=[schedule],
    )
    trainer.fit(module, data)
    assert trainer.global_step == 4  # optimizer steps, the same in both runs
    return {k: v.detach().clone() for k, v in module.net.state_dict().items()}


@pytest.mark.slow  # two short ResNet-18 runs: ~20 s on the loaded 2-core machine
def test_two_accumulated_batches_of_8_equal_one_batch_of_16():
    accumulated, whole = _train(8, 2), _train(16, 1)
    initial = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=32).net.state_dict()
    moved = [k for k in whole if whole[k].is_floating_point() and not torch.equal(whole[k], initial[k])]
    assert any(k.startswith("layer1") for k in moved)  # the backbone trained after the unfreeze
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key], rtol=1e-4, atol=1e-5)
