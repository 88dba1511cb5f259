"""The recipe options of a training config (`loss.*`, `ema.*`, `early_stopping.*`) turned into the
Classifier's loss arguments and the callbacks that implement them; all are off by default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from ftlab.callbacks.early_stopping import PhaseAwareEarlyStopping
from ftlab.callbacks.ema import EMA
from ftlab.callbacks.lr_finder import LRFinderCallback
from ftlab.config.schemas import checked
from ftlab.errors import FtlabError
from ftlab.finetune.phases import Schedule


def loss_options(cfg: DictConfig) -> dict[str, Any]:
    """Classifier keyword arguments from the checked `loss` group (absent group: plain cross-entropy)."""
    options = checked(cfg, "loss")
    weights = options.class_weights
    if isinstance(weights, Sequence) and not isinstance(weights, str):
        weights = [float(w) for w in weights]
    elif weights not in (None, "auto"):
        raise FtlabError(
            f"loss.class_weights={weights!r}: give null, auto or a list of one weight per class."
        )
    return {"label_smoothing": float(options.label_smoothing), "class_weights": weights}


def recipe_callbacks(cfg: DictConfig, schedule: Schedule) -> list[Callback]:
    """Early stopping, LR finder and EMA callbacks, when `early_stopping.patience` / `finetune.lr_find` /
    `ema.decay` are set (after the schedule callback, whose phases the LR finder edits)."""
    callbacks: list[Callback] = []
    stop = checked(cfg, "early_stopping")
    if stop.patience is not None:
        callbacks.append(
            PhaseAwareEarlyStopping(
                schedule,
                monitor=stop.monitor,
                mode=stop.mode,
                patience=stop.patience,
                min_delta=float(stop.min_delta),
            )
        )
    if cfg.get("finetune") is not None and cfg.finetune.get("lr_find"):
        callbacks.append(LRFinderCallback(schedule))
    ema = checked(cfg, "ema")
    if ema.decay is not None:
        callbacks.append(EMA(decay=float(ema.decay), warmup=ema.warmup))
    return callbacks
