"""The recipe options of a run (`early_stopping.*`, `finetune.lr_find`, `ema.*`, `trainer.time_budget`) as
the callbacks that implement them; all are off by default. (`loss.*` goes to the Classifier as
`LossSettings`.)"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from ftlab.callbacks.early_stopping import PhaseAwareEarlyStopping
from ftlab.callbacks.ema import EMA
from ftlab.callbacks.lr_finder import LRFinderCallback
from ftlab.callbacks.time_budget import TimeBudget
from ftlab.finetune.phases import Schedule
from ftlab.training.settings import TrainSettings


def recipe_callbacks(settings: TrainSettings, schedule: Schedule) -> list[Callback]:
    """Early stopping, LR finder, EMA and time budget callbacks, when `early_stopping.patience` /
    `finetune.lr_find` / `ema.decay` / `trainer.time_budget` are set (after the schedule callback, whose
    phases the LR finder and the time budget edit)."""
    callbacks: list[Callback] = []
    stop = settings.early_stopping
    if stop.patience is not None:
        callbacks.append(
            PhaseAwareEarlyStopping(
                schedule,
                monitor=stop.monitor,
                mode=stop.mode,
                patience=stop.patience,
                min_delta=stop.min_delta,
            )
        )
    if settings.finetune.lr_find:
        callbacks.append(LRFinderCallback(schedule, rule=settings.finetune.lr_find_rule))
    if settings.ema.decay is not None:
        callbacks.append(EMA(decay=settings.ema.decay, warmup=settings.ema.warmup))
    budget = settings.time_budget_s
    if budget is not None:
        callbacks.append(TimeBudget(budget, schedule))
    return callbacks
