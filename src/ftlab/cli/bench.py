"""`python -m ftlab.bench [--quick] [--json PATH]`: ftlab against a hand-written PyTorch loop, the feature
cache against no cache, and device-side against CPU-side preprocessing, measured in one process."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.flop_counter import FlopCounterMode

from ftlab.callbacks.schedule import FinetuneSchedule
from ftlab.config.schemas import CacheConfig
from ftlab.data import ImageDataModule
from ftlab.data import transforms as tf
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.features.cache import FeatureCache
from ftlab.finetune.phases import build_phases
from ftlab.models.backbones import build
from ftlab.models.module import Classifier

# Dense bf16 tensor-core peaks (TFLOP/s) used for model FLOP utilisation; the vendor's published figures.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


@dataclass
class Settings:
    """What one benchmark run uses; recorded in the JSON."""

    device: str
    precision: str
    channels_last: bool
    batch_size: int
    image_size: int
    steps: int
    warmup: int
    repeats: int
    models: list[str]
    cache_images: int
    cache_image_size: int
    schedule_images: int
    schedule_epochs: int


def settings_for(device: torch.device, quick: bool) -> Settings:
    """Sizes that finish in minutes on a 2-core CPU (quick) or fill an accelerator (full)."""
    if device.type == "cuda":
        return Settings(
            "cuda",
            "bf16-mixed",
            True,
            256,
            224,
            60 if not quick else 30,
            15 if not quick else 10,
            3,
            ["resnet18", "resnet50"],
            1000,
            224,
            1000,
            10,
        )
    if quick:
        return Settings("cpu", "32-true", False, 16, 64, 12, 3, 3, ["resnet18"], 256, 64, 256, 10)
    return Settings("cpu", "32-true", False, 32, 112, 12, 3, 3, ["resnet18"], 512, 112, 256, 10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(device: torch.device, batch: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped uint8 images and labels, already on the device."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, batch, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 3, (count, batch), generator=gen)
    return images.to(device), labels.to(device)


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
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = _batches(device, s.batch_size, s.steps)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision.startswith("bf16"))
    start = 0.0
    for step in range(s.steps):
        if step == s.warmup:
            _sync(device)
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
    _sync(device)
    return (s.steps - s.warmup) * s.batch_size / (time.perf_counter() - start)


class _DeviceBatches(IterableDataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(zip(self.images, self.labels, strict=True))


class _StepTimer(Callback):
    """Wall time from the start of step `warmup` to the end of training."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.start, self.stop = warmup, device, 0.0, 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if idx == self.warmup:
            _sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.device)
        self.stop = time.perf_counter()


def _trainer(s: Settings, callbacks: list[Callback], **kwargs: Any) -> L.Trainer:
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


def ftlab_loop(name: str, s: Settings, device: torch.device) -> float:
    """images/s of ftlab's LightningModule + DataModule hooks on the same data, model and optimizer."""
    torch.manual_seed(0)
    module = Classifier(
        name,
        ["a", "b", "c"],
        weights=None,
        image_size=s.image_size,
        backbone_lr_mult=1.0,
        channels_last=s.channels_last,
    )
    schedule = FinetuneSchedule(build_phases("full", module.trainable_stage_names))
    dm = ImageDataModule(SyntheticSource(train_size=8, val_size=8), module.preprocessing, augment="none")
    images, labels = _batches(device, s.batch_size, s.steps)
    dm.train_dataloader = lambda: DataLoader(_DeviceBatches(images, labels), batch_size=None)  # type: ignore[method-assign]
    timer = _StepTimer(s.warmup, device)
    trainer = _trainer(s, [schedule, timer], max_steps=s.steps, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    return (s.steps - s.warmup) * s.batch_size / (timer.stop - timer.start)


class _EpochTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)


def run_schedule(
    s: Settings, cache: str, strategy: str, images: int, epochs: int, augment: str, **phase_kwargs: Any
) -> tuple[float, list[float]]:
    """Total wall time and per-epoch times of a training run on generated CIFAR-shaped data."""
    torch.manual_seed(0)
    module = Classifier(
        "resnet18",
        ["cat", "dog", "automobile"],
        weights=None,
        image_size=s.cache_image_size,
        channels_last=s.channels_last,
    )
    schedule = FinetuneSchedule(build_phases(strategy, module.trainable_stage_names, **phase_kwargs))
    source = SyntheticSource(num_classes=3, train_size=images, val_size=max(8, images * 6 // 10), size=32)
    dm = ImageDataModule(
        source,
        module.preprocessing,
        batch_size=min(64, s.batch_size * 2),
        augment=augment,
        pin_memory=s.device == "cuda",
    )
    dm.attach_cache(FeatureCache(CacheConfig(cache=cache), module, schedule, "/tmp", augment))
    timer = _EpochTimer()
    trainer = _trainer(s, [schedule, timer], max_epochs=epochs, reload_dataloaders_every_n_epochs=1)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start, timer.times


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
    _sync(device)
    start = time.perf_counter()
    for chunk in on_device.split(64):
        tf.preprocess(chunk, prep)
    _sync(device)
    return {"cpu_per_image": cpu, "device_batched": len(images) / (time.perf_counter() - start)}


def train_flops_per_image(name: str, image_size: int) -> float:
    """Forward FLOPs x 3 (forward + backward), counted by torch's FlopCounterMode."""
    model = build(name, None, 3).model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, image_size, image_size))
    return 3.0 * counter.get_total_flops()


def _peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def run(quick: bool) -> dict[str, Any]:
    """All measurements; ratios come from runs alternated in this one process."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    s = settings_for(device, quick)
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"CPU ({platform.processor() or 'x86_64'}, "
    )
    if device.type == "cpu":
        name += f"{torch.get_num_threads()} threads)"
    torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"device": name, "settings": asdict(s), "torch": torch.__version__, "models": {}}
    for model in s.models:
        hand, ours = [], []
        for _ in range(s.repeats):  # alternate, so drift hits both alike
            hand.append(hand_loop(model, s, device))
            ours.append(ftlab_loop(model, s, device))
        flops = train_flops_per_image(model, s.image_size)
        entry = {"hand_img_s": statistics.median(hand), "ftlab_img_s": statistics.median(ours)}
        entry["ratio"] = entry["ftlab_img_s"] / entry["hand_img_s"]
        peak = _peak_tflops(name)
        if peak:
            entry["mfu_ftlab"] = entry["ftlab_img_s"] * flops / (peak * 1e12)
            entry["mfu_hand"] = entry["hand_img_s"] * flops / (peak * 1e12)
        result["models"][model] = entry
    first = s.models[0]
    result["ftlab_vs_hand"] = result["models"][first]["ratio"]

    frozen = {}
    for cache in ("off", "memory"):
        _, epochs = run_schedule(s, cache, "linear_probe", s.cache_images, 3, "hflip")
        frozen[cache] = statistics.mean(epochs[1:])  # epoch 1 builds the cache
    result["frozen_epoch_s"] = frozen
    result["cache_speedup"] = frozen["off"] / frozen["memory"]

    schedule = {}
    for cache in ("off", "auto"):
        total, _ = run_schedule(
            s,
            cache,
            "freeze_unfreeze",
            s.schedule_images,
            s.schedule_epochs,
            "hflip",
            unfreeze_at_epoch=max(1, s.schedule_epochs // 5),
        )
        schedule[cache] = total
    result["schedule_s"] = schedule
    result["schedule_speedup"] = schedule["off"] / schedule["auto"]
    result["pipeline_img_s"] = pipeline(s, device)
    return result


def render(result: dict[str, Any]) -> Table:
    """The measurements as a rich table."""
    table = Table(title=f"ftlab bench on {result['device']}")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for model, entry in result["models"].items():
        table.add_row(f"{model} hand loop img/s", f"{entry['hand_img_s']:.1f}")
        table.add_row(f"{model} ftlab img/s", f"{entry['ftlab_img_s']:.1f}")
        table.add_row(f"{model} ftlab / hand", f"{entry['ratio']:.3f}")
        if "mfu_ftlab" in entry:
            table.add_row(f"{model} MFU ftlab / hand", f"{entry['mfu_ftlab']:.1%} / {entry['mfu_hand']:.1%}")
    table.add_row(
        "frozen epoch s (no cache / cache)",
        f"{result['frozen_epoch_s']['off']:.2f} / {result['frozen_epoch_s']['memory']:.2f}",
    )
    table.add_row("cache_speedup (frozen epoch)", f"{result['cache_speedup']:.1f}x")
    table.add_row(
        "freeze-unfreeze schedule s (no cache / auto)",
        f"{result['schedule_s']['off']:.1f} / {result['schedule_s']['auto']:.1f}",
    )
    table.add_row("schedule speedup", f"{result['schedule_speedup']:.2f}x")
    pipe = result["pipeline_img_s"]
    table.add_row(
        "preprocess img/s (CPU per image / device batched)",
        f"{pipe['cpu_per_image']:.0f} / {pipe['device_batched']:.0f}",
    )
    return table


def main(argv: list[str] | None = None, report: Callable[[Table], None] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m ftlab.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: under 3 minutes on a 2-core CPU")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for noisy in ("lightning", "lightning.pytorch", "ftlab.features.cache"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args.quick)
    (report or Console().print)(render(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
