"""A callback that writes where a training run's wall time went (for `ftlab.bench --main-job`).

Added to the real command with `+callbacks.bench_timer._target_=ftlab.benchmark.timing.PhaseTimer
+callbacks.bench_timer.path=<file>`. It times the DataModule's loader calls (where the feature cache is
built), validation (sanity check included) and the training epochs, as wall-clock intervals; and the
floating-point operations of that work (torch's FlopCounterMode: matrix multiplies and convolutions,
forward and backward): every loader call counted whole, the first training and validation batch of every
epoch counted and scaled by the images of the epoch (each phase of a schedule is sampled; the other steps
run uncounted, at full speed).
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
from torch.utils.flop_counter import FlopCounterMode


def batch_size(batch: Any) -> int:
    """Images in a batch: (images, labels), a FeatureBatch, or anything whose first tensor is batched."""
    labels = getattr(batch, "labels", None)
    if isinstance(labels, torch.Tensor):
        return len(labels)
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, (tuple, list)) and batch:
        return batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return batch_size(next(iter(batch.values())))
    return 0


class FlopTally:
    """FLOPs per kind of work: whole calls counted, and batches scaled from a counted sample."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.per_image: dict[str, float] = {}
        self._counter: FlopCounterMode | None = None

    def begin(self) -> bool:
        """Start counting (False, and nothing started, while another count runs)."""
        if self._counter is not None:
            return False
        self._counter = FlopCounterMode(display=False)
        self._counter.__enter__()
        return True

    def end(self) -> float:
        """Stop counting: the FLOPs since `begin`."""
        counter, self._counter = self._counter, None
        if counter is None:
            return 0.0
        counter.__exit__(None, None, None)
        return float(counter.get_total_flops())

    def add(self, kind: str, flops: float) -> None:
        self.totals[kind] = self.totals.get(kind, 0.0) + flops

    def batch(self, kind: str, images: int, counted: float | None) -> None:
        """A batch of `images`; `counted`: its own FLOPs (the new sample for `kind`), None: not counted."""
        if counted is not None and images:
            self.per_image[kind] = counted / images
        self.add(kind, self.per_image.get(kind, 0.0) * images)


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
        self.flops = FlopTally()
        self._sampling: str | None = None

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
            counting = self.flops.begin()
            try:
                return fn()
            finally:
                if counting:
                    self.flops.add("cache_build", self.flops.end())
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

    def _batch_start(self, kind: str, batch_idx: int) -> None:
        if batch_idx == 0 and self.flops.begin():
            self._sampling = kind

    def _batch_end(self, kind: str, batch: Any) -> None:
        counted = self.flops.end() if self._sampling == kind else None
        if self._sampling == kind:
            self._sampling = None
        self.flops.batch(kind, batch_size(batch), counted)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_start("train", batch_idx)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch_end("train", batch)

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_start("val", batch_idx)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end("val", batch)

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
            "flops": dict(self.flops.totals),
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
