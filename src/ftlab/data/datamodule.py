"""The DataModule: a source's train/val split, uint8 loaders, and preprocessing on the device or CPU."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ftlab.data import transforms
from ftlab.data.sources import SOURCES, LabeledImages, Source
from ftlab.errors import FtlabError, did_you_mean
from ftlab.models.backbones import Preprocessing
from ftlab.reproducibility import EpochSampler

AUGMENTS = ("none", "hflip")
PREPROCESS_ON = ("device", "cpu")


class ImageDataModule(L.LightningDataModule):
    """Loads uint8 images from a source; resizes and normalises them where it is cheapest.

    With `preprocess_on="device"` batches of a fixed-size source travel at their stored size (CIFAR's
    32x32 is 49x smaller than 224x224) and are resized and normalised after the transfer; sources of
    mixed sizes are resized to the crop on the CPU and only normalised on the device.
    """

    def __init__(
        self,
        source: Source,
        preprocessing: Preprocessing,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        augment: str = "hflip",
        preprocess_on: str = "device",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if augment not in AUGMENTS:
            raise FtlabError(f"data.augment={augment!r} is not one of {AUGMENTS}.")
        if preprocess_on not in PREPROCESS_ON:
            raise FtlabError(f"data.preprocess_on={preprocess_on!r} is not one of {PREPROCESS_ON}.")
        self.source, self.preprocessing = source, preprocessing
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.persistent_workers = persistent_workers and num_workers > 0
        self.augment, self.preprocess_on, self.seed = augment, preprocess_on, seed
        self.train_set: LabeledImages | None = None
        self.val_set: LabeledImages | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.source.classes)

    @property
    def geometry_on_device(self) -> bool:
        """Resize/crop runs on the device (fixed-size sources with device preprocessing)."""
        return self.preprocess_on == "device" and self.source.fixed_size

    def _cpu_transform(self, train: bool) -> v2.Compose | None:
        steps: list[Any] = []
        if train and self.augment == "hflip":
            steps.append(v2.RandomHorizontalFlip())
        prep = self.preprocessing
        if self.preprocess_on == "cpu":
            steps.append(v2.Lambda(functools.partial(transforms.preprocess, prep=prep)))
        elif not self.geometry_on_device:
            steps.append(v2.Lambda(functools.partial(transforms.resize_and_crop, prep=prep)))
        return v2.Compose(steps) if steps else None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = self.source.load()
            self.train_set.transform = self._cpu_transform(train=True)
            self.val_set.transform = self._cpu_transform(train=False)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, dataset: LabeledImages | None, shuffle: bool) -> DataLoader:
        assert dataset is not None, "call setup() first"
        sampler = EpochSampler(len(dataset), self.seed, self._current_epoch) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def device_transform(self, images: torch.Tensor) -> torch.Tensor:
        """What runs on the device after transfer: resize/crop if still needed, then normalise."""
        if self.preprocess_on == "cpu":
            return images
        if self.geometry_on_device:
            return transforms.preprocess(images, self.preprocessing)
        return transforms.normalize(images, self.preprocessing)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        return self.device_transform(images), labels


LOADER_KEYS = ("batch_size", "num_workers", "pin_memory", "persistent_workers", "augment", "preprocess_on")


def build_datamodule(
    cfg: Mapping[str, Any], source: Source, preprocessing: Preprocessing, seed: int = 0
) -> ImageDataModule:
    """DataModule from the `data` config node, its source, and the model's preprocessing."""
    loader = {k: cfg[k] for k in LOADER_KEYS if k in cfg}
    return ImageDataModule(source, preprocessing, seed=seed, **loader)


def build_source(cfg: Mapping[str, Any], seed: int) -> Source:
    """The source named by `data.source`, built from its keys; unknown keys are a clear error."""
    name = cfg.get("source")
    if name not in SOURCES:
        raise FtlabError(
            f"Unknown data source data.source={name!r}.{did_you_mean(str(name), SOURCES)} "
            f"Available: {', '.join(SOURCES)}."
        )
    cls = SOURCES[name]
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    common = {"source", "image_size", *LOADER_KEYS}
    kwargs = {k: v for k, v in cfg.items() if k not in common}
    unknown = [k for k in kwargs if k not in fields]
    if unknown:
        key = unknown[0]
        raise FtlabError(
            f"Unknown key data.{key} for data.source={name}.{did_you_mean(key, fields | common)} "
            f"Valid keys: {', '.join(sorted(fields | common))}."
        )
    kwargs.setdefault("seed", seed)
    if "classes" in kwargs and kwargs["classes"] is not None:
        kwargs["classes"] = list(kwargs["classes"])
    return cls(**kwargs)
