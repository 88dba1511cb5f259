"""ftlab's training step against a hand-written PyTorch loop: same model, data, optimizer settings
(AdamW, weight decay off for norm weights and biases, same LR) and the same timing window."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.flop_counter import FlopCounterMode

from ftlab.benchmark.settings import LR, WEIGHT_DECAY, Settings, sync
from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.data import ImageDataModule
from ftlab.data import transforms as tf
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.finetune.strategies import build_phases
from ftlab.models.backbones import build
from ftlab.models.module import Classifier


def batches(device: torch.device, batch: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped uint8 images and labels, already on the device."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, batch, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 3, (count, batch), generator=gen)
    return images.to(device), labels.to(device)


def hand_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Plain AdamW groups: weight decay on matrices and kernels, none on biases and norm weights."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]


def hand_loop(name: str, s: Settings, device: torch.device) -> float:
    """images/s of a plain PyTorch training loop: device-side resize+normalise, autocast, AdamW."""
    torch.manual_seed(0)
    backbone = build(name, None, 3)
    model = backbone.model.to(device)
    prep = backbone.preprocessing.at_size(s.image_size)
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(hand_param_groups(model, LR, WEIGHT_DECAY))
    images, labels = batches(device, s.batch_size, s.steps)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision.startswith("bf16"))
    start = 0.0
    for step in range(s.steps):
        if step == s.warmup:
            sync(device)
            start = time.perf_counter()
        x = nn.functional.interpolate(
            images[step].float() / 255, size=(s.image_size, s.image_size), mode="bilinear", antialias=True
        )
        x = (x - mean) / std
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = nn.functional.cross_entropy(model(x), labels[step])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return (s.steps - s.warmup) * s.batch_size / (time.perf_counter() - start)


class _DeviceBatches(IterableDataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(zip(self.images, self.labels, strict=True))


class StepTimer(Callback):
    """The hand loop's window in ftlab: from the end of step `warmup - 1` (so fetching and preprocessing
    step `warmup` count) to the end of step `steps - 1` (its optimizer step done)."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device, self.start, self.stop = warmup, steps, device, 0.0, 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if idx == self.warmup - 1:
            sync(self.device)
            self.start = time.perf_counter()
        elif idx == self.steps - 1:
            sync(self.device)
            self.stop = time.perf_counter()


def quiet_trainer(s: Settings, callbacks: list[Callback], **kwargs: Any) -> L.Trainer:
    """A Trainer without logging, checkpoints or progress output: only the work being timed."""
    return L.Trainer(
        accelerator=s.device,
        devices=1,
        precision=s.precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        **kwargs,
    )


def ftlab_module(name: str, s: Settings) -> Classifier:
    """ftlab's Classifier as the comparison uses it: every stage at the head's LR, AdamW as the hand loop."""
    torch.manual_seed(0)
    return Classifier(
        name,
        ["a", "b", "c"],
        weights=None,
        image_size=s.image_size,
        backbone_lr_mult=1.0,
        optimizer=functools.partial(torch.optim.AdamW, lr=LR, weight_decay=WEIGHT_DECAY),
        channels_last=s.channels_last,
    )


def ftlab_loop(name: str, s: Settings, device: torch.device) -> float:
    """images/s of ftlab's LightningModule + DataModule hooks on the same data, model and optimizer."""
    module = ftlab_module(name, s)
    schedule = ScheduleCallback(build_phases("full", module.trainable_stage_names))
    dm = ImageDataModule(SyntheticSource(train_size=8, val_size=8), module.preprocessing, augment="none")
    images, labels = batches(device, s.batch_size, s.steps)
    dm.train_dataloader = lambda: DataLoader(_DeviceBatches(images, labels), batch_size=None)  # type: ignore[method-assign]
    timer = StepTimer(s.warmup, s.steps, device)
    trainer = quiet_trainer(s, [schedule, timer], max_steps=s.steps, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    return (s.steps - s.warmup) * s.batch_size / (timer.stop - timer.start)


def train_flops_per_image(name: str, image_size: int) -> float:
    """Forward FLOPs x 3 (forward + backward), counted by torch's FlopCounterMode."""
    model = build(name, None, 3).model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, image_size, image_size))
    return 3.0 * counter.get_total_flops()


def pipeline(s: Settings, device: torch.device) -> dict[str, float]:
    """images/s of resize+normalise: per image on the CPU (the loader's way) vs batched on the device."""
    prep = build("resnet18", None, 3).preprocessing.at_size(s.image_size)
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    start = time.perf_counter()
    for image in images:
        tf.preprocess(image, prep)
    cpu = len(images) / (time.perf_counter() - start)
    on_device = images.to(device)
    tf.preprocess(on_device[:8], prep)
    sync(device)
    start = time.perf_counter()
    for chunk in on_device.split(64):
        tf.preprocess(chunk, prep)
    sync(device)
    return {"cpu_per_image": cpu, "device_batched": len(images) / (time.perf_counter() - start)}
