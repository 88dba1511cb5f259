"""The recipe options of a training config (`loss.*`, `ema.*`, `early_stopping.*`) turned into the
Classifier's loss arguments and the callbacks that implement them; all are off by default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from ftlab.callbacks.early_stopping import PhaseAwareEarlyStopping
from ftlab.callbacks.ema import EMA
from ftlab.callbacks.lr_finder import PhaseLRFinder
from ftlab.config.types import check_types
from ftlab.finetune.phases import Schedule

LOSS_HINTS = {"label_smoothing": float, "class_weights": str | list[float] | None}
EMA_HINTS = {"decay": float | None, "warmup": bool}
STOP_HINTS = {"patience": int | None, "monitor": str, "mode": str, "min_delta": float}


def _group(cfg: DictConfig, key: str, hints: dict[str, Any]) -> dict[str, Any]:
    node = cfg.get(key)
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    assert isinstance(values, dict)
    plain = {str(k): v for k, v in values.items()}
    check_types(plain, hints, prefix=key)
    return plain


def loss_options(cfg: DictConfig) -> dict[str, Any]:
    """Classifier keyword arguments from the `loss` group (absent group: plain cross-entropy)."""
    options = _group(cfg, "loss", LOSS_HINTS)
    weights = options.get("class_weights")
    return {
        "label_smoothing": float(options.get("label_smoothing", 0.0)),
        "class_weights": list(weights)
        if isinstance(weights, Sequence) and not isinstance(weights, str)
        else weights,
    }


def recipe_callbacks(cfg: DictConfig, schedule: Schedule) -> list[Callback]:
    """Early stopping, LR finder and EMA callbacks, when `early_stopping.patience` / `finetune.lr_find` /
    `ema.decay` are set (after the schedule callback, whose phases the LR finder edits)."""
    callbacks: list[Callback] = []
    stop = _group(cfg, "early_stopping", STOP_HINTS)
    if stop.get("patience") is not None:
        callbacks.append(
            PhaseAwareEarlyStopping(
                schedule,
                monitor=stop.get("monitor", "val/acc"),
                mode=stop.get("mode", "max"),
                patience=stop["patience"],
                min_delta=float(stop.get("min_delta", 0.0)),
            )
        )
    if cfg.get("finetune") is not None and cfg.finetune.get("lr_find"):
        callbacks.append(PhaseLRFinder(schedule))
    ema = _group(cfg, "ema", EMA_HINTS)
    if ema.get("decay") is not None:
        callbacks.append(EMA(decay=float(ema["decay"]), warmup=bool(ema.get("warmup", True))))
    return callbacks
