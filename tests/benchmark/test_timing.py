"""PhaseTimer counts every instant once: loader calls before validation before training epochs."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ftlab.benchmark.timing import PhaseTimer


def test_nested_intervals_are_counted_once(tmp_path):
    timer = PhaseTimer(str(tmp_path / "t.json"))
    timer.intervals = [
        ("loaders", 0.0, 2.0),  # train loader (cache build) before the first epoch
        ("train_epoch", 2.0, 10.0),
        ("val", 7.0, 10.0),  # validation inside the epoch ...
        ("loaders", 7.0, 8.0),  # ... whose loader call builds the val cache
        ("train_epoch", 10.0, 13.0),
        ("val", 12.0, 13.0),
    ]
    out = timer.summary(fit_end=14.0)
    assert out["cache_build_s"] == pytest.approx(3.0)
    assert out["val_epochs_s"] == pytest.approx(3.0)
    assert out["train_epochs_s"] == pytest.approx(5.0 + 2.0)
    assert out["epochs"] == 2


class _ConvNet(L.LightningModule):
    """A convolution (3 -> 4 channels, 3x3, padding 1) on 5x5 images, then a linear layer to 2 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 5 * 5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Data(L.LightningDataModule):
    """10 training and 6 validation images in batches of 4; the train loader call multiplies two 8x8
    matrices first (what a cache build does, counted whole)."""

    def _loader(self, n: int) -> DataLoader:
        data = TensorDataset(torch.randn(n, 3, 5, 5), torch.randint(0, 2, (n,)))
        return DataLoader(data, batch_size=4)

    def train_dataloader(self) -> DataLoader:
        torch.randn(8, 8) @ torch.randn(8, 8)
        return self._loader(10)

    def val_dataloader(self) -> DataLoader:
        return self._loader(6)


def test_flops_of_a_fit_against_a_hand_count(tmp_path):
    """Per image, forward: the conv 2 x (4 x 5 x 5 outputs) x (3 x 3 x 3 inputs each), the linear
    2 x 100 x 2. Backward: the conv's weight gradient (its input needs none) as much as its forward; the
    linear's weight and input gradients twice its forward. So a training image costs 2 conv + 3 linear, a
    validation image 1 conv + 1 linear."""
    conv, linear = 2 * (4 * 5 * 5) * (3 * 3 * 3), 2 * 100 * 2
    path = tmp_path / "t.json"
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[PhaseTimer(str(path))],
    )
    trainer.fit(_ConvNet(), datamodule=_Data())
    flops = json.loads(path.read_text())["flops"]
    assert flops["train"] == pytest.approx(2 * 10 * (2 * conv + 3 * linear))
    assert flops["val"] == pytest.approx(2 * 6 * (conv + linear))
    assert flops["cache_build"] == pytest.approx(2 * 8**3)  # one train loader call (loaders are not reloaded)
