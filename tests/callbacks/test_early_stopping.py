"""Early stopping that knows the schedule: a plateau before the last phase does not stop the run."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ftlab.callbacks.early_stopping import PhaseAwareEarlyStopping
from ftlab.finetune.phases import Phase, Schedule
from tests.helpers.trainers import quiet_cpu_trainer


class _Plateau(L.LightningModule):
    """A toy model whose validation accuracy never improves after the first epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", 0.5)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(callback: EarlyStopping, epochs: int = 10) -> L.Trainer:
    data = TensorDataset(torch.randn(8, 2), torch.randint(0, 2, (8,)))
    trainer = quiet_cpu_trainer(
        max_epochs=epochs,
        num_sanity_val_steps=0,
        callbacks=[callback],
    )
    trainer.fit(_Plateau(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return trainer


HEAD_THEN_ALL = Schedule([Phase(0, frozenset()), Phase(4, frozenset({"layer"}))])


def test_plateau_in_the_head_phase_does_not_stop_the_run():
    plain = _fit(EarlyStopping(monitor="val/acc", mode="max", patience=2))
    assert plain.current_epoch < 4  # Lightning's own stops in the head-only phase (what we must avoid)
    aware = PhaseAwareEarlyStopping(HEAD_THEN_ALL, monitor="val/acc", mode="max", patience=2)
    trainer = _fit(aware)
    # patience restarts at the unfreeze (epoch 4): epochs 4 and 5 without improvement, stopped after 5
    assert aware.stopped_epoch == 5 and trainer.current_epoch == 6


def test_single_phase_schedule_stops_like_lightning():
    aware = PhaseAwareEarlyStopping(
        Schedule([Phase(0, frozenset())]), monitor="val/acc", mode="max", patience=2
    )
    plain = EarlyStopping(monitor="val/acc", mode="max", patience=2)
    _fit(aware)
    _fit(plain)
    assert aware.stopped_epoch == plain.stopped_epoch > 0
