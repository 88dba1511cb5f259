"""The feature cache against no cache over a whole frozen phase (a linear probe): the end-to-end ratio
(cache build included) and the steady-state per-epoch ratio, from the same runs, alternated."""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ftlab.benchmark.loops import quiet_trainer
from ftlab.benchmark.settings import LR, WEIGHT_DECAY, Settings, sync
from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.data import ImageDataModule
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.features.cache import FeatureCache
from ftlab.features.settings import CacheSettings
from ftlab.finetune.strategies import build_phases
from ftlab.models.module import Classifier

CacheFactory = Callable[..., Any]


def attach_cache(
    dm: ImageDataModule,
    module: Classifier,
    schedule: ScheduleCallback,
    mode: str,
    dtype: str,
    factory: CacheFactory = FeatureCache,
) -> dict[str, Any]:
    """The bench's feature cache, wired as training wires it; returns the Trainer options it needs.

    `factory` is `FeatureCache` or a subclass (tests use one to make the build visibly slow)."""
    config = CacheSettings(cache=mode, dtype=dtype)
    cache = factory(config, module, schedule, dm, tempfile.gettempdir())
    dm.attach_cache(cache)
    return dict(cache.trainer_options)


class EpochMarks(Callback):
    """Wall-clock marks: fit start, then the end of every epoch (after its validation).

    Epoch k's time is mark k+1 - mark k, so the first epoch holds everything between fit start and its
    end (building the train and val loaders, and with them the cache); the sum is the whole phase.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sync(self.device)
        self.marks = [time.perf_counter()]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sync(self.device)
        self.marks.append(time.perf_counter())

    @property
    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


@dataclass
class FrozenRun:
    """One linear-probe run: per-epoch wall times and the final weights."""

    epoch_s: list[float]
    state: dict[str, torch.Tensor]

    @property
    def total_s(self) -> float:
        """The whole frozen phase, cache build included."""
        return sum(self.epoch_s)

    @property
    def steady_epoch_s(self) -> float:
        """Mean epoch time once the cache is built (epochs after the first)."""
        return statistics.mean(self.epoch_s[1:])


def frozen_run(
    s: Settings, mode: str, device: torch.device, factory: CacheFactory = FeatureCache
) -> FrozenRun:
    """A linear probe on generated CIFAR-shaped data (hflip), with the cache in `mode` ("off" = none)."""
    torch.manual_seed(0)
    module = Classifier(
        "resnet18",
        ["cat", "dog", "automobile"],
        weights=None,
        image_size=s.cache_image_size,
        optimizer=functools.partial(torch.optim.AdamW, lr=LR, weight_decay=WEIGHT_DECAY),
        channels_last=s.channels_last,
    )
    schedule = ScheduleCallback(build_phases("linear_probe", module.trainable_stage_names))
    val = max(8, s.cache_images * 6 // 10)
    source = SyntheticSource(num_classes=3, train_size=s.cache_images, val_size=val, size=32)
    dm = ImageDataModule(
        source, module.preprocessing, batch_size=32, augment="hflip", pin_memory=s.device == "cuda"
    )
    options = attach_cache(dm, module, schedule, mode, s.cache_dtype, factory)
    options.setdefault("reload_dataloaders_every_n_epochs", 1)  # the same loader cadence in both arms
    marks = EpochMarks(device)
    trainer = quiet_trainer(s, [schedule, marks], max_epochs=s.cache_epochs, **options)
    trainer.fit(module, datamodule=dm)
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return FrozenRun(marks.epochs, state)


def max_weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts' floating-point tensors."""
    return max(
        (float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point()),
        default=0.0,
    )


def cache_benchmark(
    s: Settings, device: torch.device, factory: CacheFactory = FeatureCache
) -> dict[str, Any]:
    """Median end-to-end and steady-state ratios of alternated no-cache / memory-cache runs."""
    off: list[FrozenRun] = []
    on: list[FrozenRun] = []
    for _ in range(s.repeats):  # alternate, so drift hits both alike
        off.append(frozen_run(s, "off", device))
        on.append(frozen_run(s, "memory", device, factory))
    end_to_end = [a.total_s / b.total_s for a, b in zip(off, on, strict=True)]
    steady = [a.steady_epoch_s / b.steady_epoch_s for a, b in zip(off, on, strict=True)]
    return {
        "cache_speedup": statistics.median(end_to_end),
        "cache_speedup_steady": statistics.median(steady),
        "cache": {
            "strategy": "linear_probe",
            "epochs": s.cache_epochs,
            "images": s.cache_images,
            "image_size": s.cache_image_size,
            "dtype": s.cache_dtype,
            "end_to_end_s": {
                "off": statistics.median(r.total_s for r in off),
                "memory": statistics.median(r.total_s for r in on),
            },
            "steady_epoch_s": {
                "off": statistics.median(r.steady_epoch_s for r in off),
                "memory": statistics.median(r.steady_epoch_s for r in on),
            },
            "end_to_end_ratios": end_to_end,
            "steady_ratios": steady,
            "first_epoch_s": {"off": off[-1].epoch_s[0], "memory": on[-1].epoch_s[0]},
            "final_weight_max_diff": max_weight_diff(off[-1].state, on[-1].state),
        },
    }
