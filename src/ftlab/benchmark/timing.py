"""A callback that writes where a training run's wall time went (for `ftlab.bench --main-job`).

Added to the real command with `+callbacks.bench_timer._target_=ftlab.benchmark.timing.PhaseTimer
+callbacks.bench_timer.path=<file>`. It times the DataModule's loader calls (where the feature cache is
built), validation (sanity check included) and the training epochs, as wall-clock intervals.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class PhaseTimer(Callback):
    """Records (kind, start, end) wall-clock intervals and writes them, with totals, to `path` as JSON."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.intervals: list[tuple[str, float, float]] = []
        self.fit_start = 0.0
        self._open: dict[str, float] = {}

    def _begin(self, kind: str) -> None:
        _sync()
        self._open[kind] = time.time()

    def _end(self, kind: str) -> None:
        _sync()
        if kind in self._open:
            self.intervals.append((kind, self._open.pop(kind), time.time()))

    def _timed(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        @functools.wraps(fn)
        def wrapper() -> Any:
            self._begin("loaders")
            try:
                return fn()
            finally:
                self._end("loaders")

        return wrapper

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule  # type: ignore[attr-defined]
        if dm is not None:
            dm.train_dataloader = self._timed(dm.train_dataloader)
            dm.val_dataloader = self._timed(dm.val_dataloader)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.time()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin("train_epoch")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("train_epoch")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin("val")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("val")

    def summary(self, fit_end: float) -> dict[str, Any]:
        """Seconds per phase, each instant counted once: loader calls (the cache build) before
        validation (sanity check included) before training epochs."""
        priority = ("loaders", "val", "train_epoch")
        points = sorted({t for _, a, b in self.intervals for t in (a, b)})
        totals = dict.fromkeys(priority, 0.0)
        for a, b in zip(points, points[1:], strict=False):
            covering = {k for k, s, e in self.intervals if s <= a and e >= b}
            kind = next((k for k in priority if k in covering), None)
            if kind is not None:
                totals[kind] += b - a
        return {
            "fit_start": self.fit_start,
            "fit_end": fit_end,
            "cache_build_s": totals["loaders"],
            "val_epochs_s": totals["val"],
            "train_epochs_s": totals["train_epoch"],
            "epochs": sum(1 for k, _, _ in self.intervals if k == "train_epoch"),
            "intervals": self.intervals,
        }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            summary = self.summary(time.time())
            acc = trainer.callback_metrics.get("val/acc")
            summary["val_acc"] = float(acc) if acc is not None else None
            summary["precision"] = str(trainer.precision)  # what `trainer.precision=auto` resolved to
            with open(self.path, "w") as f:
                json.dump(summary, f)
