"""Cached activations of the frozen prefix of the backbone.

While the first k stages are frozen and in eval mode, their output for an image is a pure function of
the (preprocessed) image. The cache computes it once per image and split, and the DataModule then serves
(features, label) batches that the LightningModule feeds to stage k onwards. Horizontal-flip augmentation
has exactly two outcomes, so it is cached as two views per image and drawn with the same random stream as
the uncached pipeline; other augmentations are not cached. Everything is decided from the epoch alone.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ftlab.callbacks.schedule import FinetuneSchedule
from ftlab.config.schemas import CacheConfig
from ftlab.data.sampling import EpochSampler
from ftlab.errors import FtlabError

log = logging.getLogger(__name__)

MODES = ("auto", "off", "memory", "disk")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class CachedFeatures(Dataset):
    """(features, label) pairs; with two views per image, a fair coin picks the flipped one, as
    RandomHorizontalFlip would (same `torch.rand(1) < 0.5` draw per sample)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, random_view: bool) -> None:
        self.features, self.labels, self.random_view = features, labels, random_view

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        view = 0
        if self.random_view and self.features.shape[0] > 1:
            view = int(torch.rand(1).item() < 0.5)
        return self.features[view, idx], int(self.labels[idx])


@dataclass
class _Entry:
    boundary: int
    built_epoch: int
    dataset: CachedFeatures


class FeatureCache:
    """Decides the cache boundary per epoch, builds features, and serves loaders over them."""

    def __init__(
        self, config: CacheConfig, module: Any, schedule: FinetuneSchedule, data_dir: str, augment: str
    ) -> None:
        if config.cache not in MODES:
            raise FtlabError(f"features.cache={config.cache!r} is not one of {', '.join(MODES)}.")
        if config.dtype not in DTYPES:
            raise FtlabError(f"features.dtype={config.dtype!r} is not one of {', '.join(DTYPES)}.")
        self.config, self.module, self.schedule, self.augment = config, module, schedule, augment
        self.root = Path(config.dir or Path(data_dir) / ".ftlab_features")
        self.entries: dict[str, _Entry] = {}
        self.disabled_reason: str | None = "features.cache=off" if config.cache == "off" else None
        self._skipped: set[tuple[str, int]] = set()

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    def boundary(self, epoch: int) -> int:
        """How many leading stages are frozen and in eval mode at `epoch` (0 = nothing to cache)."""
        if self.schedule.bn == "train":
            return 0
        trainable = self.schedule.trainable(epoch)
        count = 0
        for name, stage in self.module.stages.items():
            has_params = any(True for _ in stage.parameters())
            if has_params and name in trainable:
                break
            count += 1
        return count

    def _epochs_at_boundary(self, boundary: int, epoch: int, datamodule: Any) -> int:
        """Epochs from `epoch` on (until the run's last) whose cache boundary is this one."""
        trainer = getattr(datamodule, "trainer", None)
        last = getattr(trainer, "max_epochs", None)
        if last is None or last < 0:
            return 1_000_000  # open-ended run: assume it pays
        count = 0
        for e in range(epoch, last):
            if self.boundary(e) != boundary:
                break
            count += 1
        return count

    def _on_disk(self, split: str, datamodule: Any, boundary: int, views: int, epoch: int) -> bool:
        """A reusable disk entry exists already (then loading it is cheaper than computing)."""
        if not self._prefix_untouched(epoch, boundary):
            return False
        return (self.root / (self._key(split, datamodule, boundary, views) + ".pt")).is_file()

    def views(self, split: str) -> int | None:
        """How many views of each image to cache for a split, or None when it cannot be cached."""
        if split == "val" or self.augment == "none":
            return 1
        if self.augment == "hflip":
            return self.config.views or 2
        if (split, -1) not in self._skipped:  # random crops, colour, MixUp...: infinitely many outcomes
            self._skipped.add((split, -1))
            log.info(
                "feature cache: %s not cached: augmentation %s has no finite set of views",
                split,
                self.augment,
            )
        return None

    def _valid(self, entry: _Entry, boundary: int, epoch: int) -> bool:
        """Still correct at `epoch`: same boundary, and no stage before it trained since it was built."""
        if entry.boundary != boundary:
            return False
        stages = list(self.module.stages)[:boundary]
        return all(
            not (set(stages) & self.schedule.trainable(e)) for e in range(entry.built_epoch, epoch + 1)
        )

    def dataset(self, split: str, datamodule: Any, epoch: int) -> CachedFeatures | None:
        """Cached features for `split` at `epoch`, building them if needed; None means: use raw images."""
        if not self.enabled:
            return None
        boundary = self.boundary(epoch)
        views = self.views(split)
        if boundary == 0 or views is None:
            return None
        entry = self.entries.get(split)
        if entry is not None and self._valid(entry, boundary, epoch):
            return entry.dataset
        epochs_left = self._epochs_at_boundary(boundary, epoch, datamodule)
        if (
            self.config.cache == "auto"
            and epochs_left <= views
            and not self._on_disk(split, datamodule, boundary, views, epoch)
        ):
            if (split, boundary) not in self._skipped:
                self._skipped.add((split, boundary))
                log.info(
                    "feature cache: %s not cached at stage %d: building %d view(s) costs as much as the "
                    "%d epoch(s) it would serve",
                    split,
                    boundary,
                    views,
                    epochs_left,
                )
            return None
        dataset = self._build(split, datamodule, boundary, views, epoch)
        if dataset is not None:
            self.entries[split] = _Entry(boundary, epoch, dataset)
        return dataset

    def loader(self, split: str, datamodule: Any, epoch: int) -> DataLoader | None:
        """A loader over cached features (shuffled per (seed, epoch) for training), or None."""
        dataset = self.dataset(split, datamodule, epoch)
        self.module.input_stage[split] = self.entries[split].boundary if dataset is not None else 0
        if dataset is None:
            return None
        sampler = (
            EpochSampler(len(dataset), datamodule.seed, datamodule.current_epoch)
            if split == "train"
            else None
        )
        return DataLoader(
            dataset,
            batch_size=datamodule.batch_size,
            sampler=sampler,
            num_workers=0,
            pin_memory=datamodule.pin_memory and dataset.features.device.type == "cpu",
        )

    # -- building ----------------------------------------------------------------------------------------

    def _key(self, split: str, datamodule: Any, boundary: int, views: int) -> str:
        images = datamodule.raw_images(split)
        digest = hashlib.sha1()
        for part in (
            self.module.hparams["backbone"],
            self.module.weights_id,
            self.module.preprocessing.to_dict(),
            boundary,
            views,
            self.config.dtype,
            datamodule.preprocess_on,
            len(images),
        ):
            digest.update(repr(part).encode())
        digest.update(datamodule.fingerprint(split).encode())
        return f"{self.module.hparams['backbone']}-{split}-stage{boundary}-{digest.hexdigest()[:16]}"

    def _prefix_untouched(self, epoch: int, boundary: int) -> bool:
        """The prefix still holds the initial weights (never trained so far): safe to share on disk."""
        stages = set(list(self.module.stages)[:boundary])
        return all(not (stages & self.schedule.trainable(e)) for e in range(epoch + 1))

    def _build(
        self, split: str, datamodule: Any, boundary: int, views: int, epoch: int
    ) -> CachedFeatures | None:
        labels = datamodule.raw_labels(split)
        shareable = self._prefix_untouched(epoch, boundary) and self.config.cache in ("auto", "disk")
        path = self.root / (self._key(split, datamodule, boundary, views) + ".pt") if shareable else None
        if path is not None and path.is_file():
            features = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            log.info("feature cache: %s features at stage %d loaded from %s", split, boundary, path)
            return CachedFeatures(features, labels, random_view=split == "train")
        sample = self._compute(datamodule, split, boundary, views, limit=1)
        per_image = sample[0, 0].numel() * sample.element_size()
        total = per_image * len(labels) * views
        budget = self.config.max_memory_gb * 2**30
        where = (
            self.config.cache if self.config.cache != "auto" else ("memory" if total <= budget else "disk")
        )
        if where == "disk" and path is None:
            log.info(
                "feature cache: %s needs %.0f MB, over features.max_memory_gb, and this prefix has trained:"
                " not cached",
                split,
                total / 2**20,
            )
            return None
        if where == "disk" and path is not None:
            free = shutil.disk_usage(self.root.parent if not self.root.exists() else self.root).free
            if total > 0.8 * free:
                log.info(
                    "feature cache: %s needs %.0f MB, more than the free disk: not cached",
                    split,
                    total / 2**20,
                )
                return None
        features = self._compute(datamodule, split, boundary, views)
        if where == "disk" and path is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(features, tmp)
            tmp.replace(path)
            features = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        elif self.module.device.type == "cuda":
            features = features.to(self.module.device)
        stage_name = list(self.module.stages)[boundary - 1]
        log.info(
            "feature cache: %s: %d images x %d view(s) after stage %s, %.1f MB %s, %s",
            split,
            len(labels),
            views,
            stage_name,
            total / 2**20,
            self.config.dtype,
            where,
        )
        return CachedFeatures(features, labels, random_view=split == "train")

    @torch.no_grad()
    def _compute(
        self, datamodule: Any, split: str, boundary: int, views: int, limit: int | None = None
    ) -> torch.Tensor:
        """(views, N, ...) activations of stages[:boundary] for the split's deterministic images."""
        module = self.module
        stages = list(module.stages.values())[:boundary]
        modes = [s.training for s in stages]
        for stage in stages:
            stage.eval()
        try:
            images = datamodule.raw_images(split)
            count = len(images) if limit is None else min(limit, len(images))
            out: list[list[torch.Tensor]] = [[] for _ in range(views)]
            for start in range(0, count, datamodule.batch_size):
                batch = images[start : min(count, start + datamodule.batch_size)]
                for view in range(views):
                    x = batch.flip(-1) if view == 1 else batch
                    x = datamodule.device_transform(datamodule.cpu_side(x).to(module.device))
                    for stage in stages:
                        x = stage(x)
                    out[view].append(x.to(DTYPES[self.config.dtype]).cpu())
            return torch.stack([torch.cat(chunks) for chunks in out])
        finally:
            for stage, mode in zip(stages, modes, strict=True):
                stage.train(mode)
