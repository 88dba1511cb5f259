"""`trainer.time_budget`: a budgeted tiny run re-plans its epochs after the first one, ends within the budget
plus one epoch, scales the phase boundaries, and finishes its LR schedule (checked against torch's own
scheduler over the re-planned length)."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.optim import lr_scheduler

from ftlab.callbacks.time_budget import TimeBudget, parse_duration, scale_phases
from ftlab.errors import FtlabError
from ftlab.finetune.phases import Phase
from ftlab.training.run import train

RUN = [
    "+experiment=smoke",
    "trainer=cpu",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=8",
    "trainer.num_sanity_val_steps=0",
    "callbacks=none",
    "~logger",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "+trainer.enable_checkpointing=false",
    "+callbacks.lrs._target_=tests.callbacks.test_time_budget.RecordEpochs",
]


class RecordEpochs(Callback):
    """Each epoch's wall-clock span and every group's LR at each training step; the LR after the fit."""

    def __init__(self) -> None:
        self.fit_s = 0.0
        self.lrs: list[list[float]] = []
        self.epoch_s: list[float] = []
        self.final: list[float] = []

    def setup(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.epoch_s.append(time.perf_counter() - self._start)

    def on_fit_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.fit_s = time.perf_counter() - self._fit_start
        self.final = [group["lr"] for group in trainer.optimizers[0].param_groups]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2.5s", 2.5), (45, 45)]
)
def test_durations_parse(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "m", "", "0s", "-5", True])
def test_bad_durations_are_one_paragraph(text: Any) -> None:
    with pytest.raises(FtlabError, match=r"trainer.time_budget="):
        parse_duration(text)


def test_phase_boundaries_scale_and_passed_ones_stay() -> None:
    phases = [Phase(0, frozenset()), Phase(1, frozenset({"a"})), Phase(3, frozenset({"a", "b"}))]
    scaled = scale_phases(phases, 2.5, done=1)
    assert [p.at_epoch for p in scaled] == [0, 2, 8]  # round(1 x 2.5) = 2, round(3 x 2.5) = 8
    assert [p.trainable for p in scaled] == [p.trainable for p in phases]
    assert [p.at_epoch for p in scale_phases(phases, 0.2, done=1)] == [0, 1, 1]  # never before epoch 1


def _budgeted(compose_cfg: Any, extra: list[str], caplog: pytest.LogCaptureFixture) -> tuple[Any, Any, str]:
    with caplog.at_level(logging.INFO, logger="ftlab.callbacks.time_budget"):
        _, objects = train(compose_cfg([*RUN, *extra]))
    callbacks = objects["trainer"].callbacks
    budget = next(c for c in callbacks if isinstance(c, TimeBudget))
    record = next(c for c in callbacks if isinstance(c, RecordEpochs))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("time budget"))
    assert len(record.epoch_s) == budget.plan.epochs == objects["trainer"].current_epoch
    assert record.fit_s <= budget.plan.budget_s + max(record.epoch_s), "within the budget plus one epoch"
    return budget, record, line


def _reference(peaks: list[float], make: Any, steps: int) -> tuple[list[list[float]], list[float]]:
    """The LR of each of `steps` steps, and after them, from a torch scheduler on a bare optimizer."""
    optimizer = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in peaks])
    scheduler = make(optimizer)
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen, [g["lr"] for g in optimizer.param_groups]


PHASES = "finetune.phases=[{at_epoch:0,trainable:all},{at_epoch:50,trainable:all,lr_mult:0.5}]"


@pytest.mark.slow  # wall-clock bound (a 4 s budget): failed once in a cold clean clone of main
def test_budgeted_run_ends_in_budget_with_cosine_finished_and_phases_scaled(
    compose_cfg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A schedule written for 100 epochs (a phase from epoch 50, a per-epoch cosine over trainer.max_epochs)
    in a 4-second budget: both are re-planned, and every epoch's LR is torch's CosineAnnealingLR over the
    planned epochs, finished at eta_min (a cut cosine would end far above it)."""
    extra = ["finetune=custom", PHASES, "trainer.max_epochs=100", "scheduler=cosine"]
    extra += ["trainer.time_budget=4s"]
    budget, record, line = _budgeted(compose_cfg, extra, caplog)
    epochs = budget.plan.epochs
    assert 1 <= epochs < 100
    assert [at for at, _, _ in budget.plan.phases] == [0, max(1, round(50 * epochs / 100))]
    assert [p.at_epoch for p in budget.schedule.phases] == [0, max(1, round(50 * epochs / 100))]
    per_epoch = record.lrs[::2]  # 2 steps per epoch, the scheduler steps per epoch
    make = lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0.0)  # noqa: E731
    expected, final = _reference(per_epoch[0], make, epochs)
    np.testing.assert_allclose(per_epoch, expected, rtol=1e-6, atol=1e-12)
    assert record.final == pytest.approx(final, abs=1e-12) and max(final) == pytest.approx(0.0, abs=1e-12)
    assert f"planned {epochs} epoch(s) (configured 100)" in line and "(were 0, 50)" in line


@pytest.mark.slow  # a budget long enough for the probes of a head-only then full schedule: about 40 s
def test_head_only_then_full_budget_probes_the_full_epochs_and_finishes_one_cycle(
    compose_cfg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """freeze_unfreeze (head only in epoch 0, everything from epoch 2 of 4) and a per-step OneCycle in a
    30-second budget: the full epochs are estimated from timed batches, the run ends inside the budget plus
    one epoch, and the LR of every step after the first epoch is torch's OneCycleLR over the planned steps."""
    extra = ["finetune=freeze_unfreeze", "finetune.unfreeze_at_epoch=2", "finetune.warmup_epochs=1.0"]
    extra += ["trainer.max_epochs=4", "scheduler=onecycle", "trainer.time_budget=30s"]
    budget, record, line = _budgeted(compose_cfg, extra, caplog)
    epochs = budget.plan.epochs
    assert [at for at, _, _ in budget.plan.phases] == [0, max(1, round(2 * epochs / 4))]
    assert budget.plan.warmup_epochs == pytest.approx(epochs / 4)
    steps = 2 * epochs
    peaks = [group_lr * 25.0 for group_lr in record.lrs[0]]  # OneCycle starts at peak / div_factor

    def make(opt: torch.optim.Optimizer) -> Any:
        return lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=steps, pct_start=0.3, div_factor=25.0)

    expected, final = _reference(peaks, make, steps)
    # epoch 0 ran before the plan (OneCycle over the configured 8 steps); from the re-plan on, the new one
    np.testing.assert_allclose(record.lrs[2:], expected[2:], rtol=1e-6)
    assert record.final == pytest.approx(final, rel=1e-6)
    assert f"planned {epochs} epoch(s) (configured 4)" in line
