"""Building a feature cache from images: stages[:boundary] run once per image (and view) of a split, in eval
mode and under the run's precision context, so the cached activations equal what training would compute.

The result goes to memory or to a shared file (`store.FeatureStore`), or is loaded from that file when a
run with the same inputs built it before.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ftlab.data.datamodule import ImageDataModule
from ftlab.features.planner import Segment
from ftlab.features.settings import CacheSettings
from ftlab.features.store import DTYPES, Built, CachedFeatures, FeatureStore, Refused, open_map
from ftlab.models.module import Classifier


class EvalModes:
    """Context: the given modules in eval mode, their previous modes restored afterwards."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.modules = modules
        self.modes = [m.training for m in modules]

    def __enter__(self) -> None:
        for module in self.modules:
            module.eval()

    def __exit__(self, *exc: object) -> None:
        for module, mode in zip(self.modules, self.modes, strict=True):
            module.train(mode)


def precision_context(module: Classifier) -> Any:
    """Context: the run's precision (bf16/fp16 autocast under mixed precision), as training applies it to
    the same stages when they run on images, so cached and uncached activations agree."""
    trainer = module._trainer
    return trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()


def precision_name(module: Classifier) -> str:
    """The run's precision (`32-true` outside a Trainer), part of a cache's key."""
    trainer = module._trainer
    return str(trainer.precision) if trainer is not None else "32-true"


def stage_costs(module: Classifier) -> list[float]:
    """Forward FLOPs of each stage for one image (torch's FlopCounterMode), what caching saves."""
    size = module.preprocessing.crop_size
    x = torch.zeros(1, 3, size, size, device=module.device)
    costs = []
    with EvalModes(list(module.stages.values())), torch.no_grad():
        for stage in module.stages.values():
            with FlopCounterMode(display=False) as counter:
                x = stage(x)
            costs.append(float(counter.get_total_flops()))
    return costs


@torch.no_grad()
def compute(
    module: Classifier,
    dm: ImageDataModule,
    split: str,
    boundary: int,
    views: int,
    dtype: torch.dtype,
    limit: int | None = None,
) -> torch.Tensor:
    """(views, N, ...) activations of stages[:boundary] for the split's deterministic images."""
    stages = list(module.stages.values())[:boundary]
    with EvalModes(stages), precision_context(module):
        images = dm.raw_images(split)
        count = len(images) if limit is None else min(limit, len(images))
        out: list[list[torch.Tensor]] = [[] for _ in range(views)]
        for start in range(0, count, dm.batch_size):
            batch = images[start : min(count, start + dm.batch_size)]
            for view in range(views):
                x = batch.flip(-1) if view == 1 else batch
                x = dm.device_transform(dm.cpu_side(x).to(module.device))
                for stage in stages:
                    x = stage(x)
                out[view].append(x.to(dtype).cpu())
        return torch.stack([torch.cat(chunks) for chunks in out])


def resolve_dtype(
    config: CacheSettings, module: Classifier, dm: ImageDataModule, split: str, boundary: int, views: int
) -> str:
    """features.dtype, with `auto` resolved: float32 when it fits the memory budget, else float16."""
    if config.dtype != "auto":
        return config.dtype
    sample = compute(module, dm, split, boundary, 1, limit=1, dtype=torch.float32)
    total = sample[0, 0].numel() * 4 * len(dm.raw_labels(split)) * views
    return "float32" if total <= config.max_memory_gb * 2**30 else "float16"


def from_images(
    store: FeatureStore,
    split: str,
    segment: Segment,
    views: int,
    dtype: str,
    shareable: bool,
    prefer_disk: bool = False,
) -> tuple[Built, str] | Refused:
    """The segment's cache from the split's images (or its shared file), and how it was made.

    `prefer_disk`: a shareable cache that fits memory goes to its file anyway, so that later runs with the
    same inputs (the other folds of a k-fold sweep) load it instead of computing it again."""
    module, dm = store.module, store.datamodule
    boundary = segment.boundary
    labels = dm.raw_labels(split)
    path = store.path(store.key(split, boundary, views, dtype, precision_name(module))) if shareable else None
    if path is not None and path.is_file():
        dataset = CachedFeatures(open_map(path), labels, split == "train", path)
        return Built(segment, dataset, "disk"), "loaded"
    sample = compute(module, dm, split, boundary, views, limit=1, dtype=DTYPES[dtype])
    total = sample[0, 0].numel() * sample.element_size() * len(labels) * views
    where = store.placement(total, shareable)
    if isinstance(where, Refused):
        return where
    if prefer_disk and shareable and where == "memory" and store.config.cache == "auto":
        where = "disk"
    features = compute(module, dm, split, boundary, views, dtype=DTYPES[dtype])
    if where == "disk" and path is not None:
        features = store.write(path, features)
        return Built(segment, CachedFeatures(features, labels, split == "train", path), "disk"), "from images"
    if module.device.type == "cuda":
        features = features.to(module.device)
    return Built(segment, CachedFeatures(features, labels, split == "train"), "memory"), "from images"
