"""The DataModule: a source's train/val split, uint8 loaders, and preprocessing on the device or CPU."""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ftlab.data import transforms
from ftlab.data.augment import BatchMix, ImageAugment, augment_key, parse_augment
from ftlab.data.batches import FeatureBatch
from ftlab.data.datasets import FileImages, LabeledImages, TensorImages
from ftlab.data.exclude import apply_exclude
from ftlab.data.folds import fold_split, select
from ftlab.data.images import load_rgb
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.sampling import BalancedSampler, EpochSampler, class_counts
from ftlab.data.settings import DataSettings
from ftlab.data.sources.base import Source
from ftlab.errors import FtlabError


class FeatureSource(Protocol):
    """What the DataModule asks a feature cache (`ftlab.features.FeatureCache`) for each epoch's loader."""

    def loader(self, split: str, epoch: int, epochs: int | None) -> DataLoader | None:
        """Loader of `FeatureBatch`es for `split` at `epoch` of a run of `epochs`, or None: use images."""
        ...


log = logging.getLogger(__name__)


class FileBatches:
    """uint8 batches of image files cut to the crop size on the CPU (`files[a:b]`), for the feature cache."""

    def __init__(self, paths: list[str], preprocessing: Preprocessing) -> None:
        self.paths, self.preprocessing = paths, preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, window: slice) -> torch.Tensor:
        return torch.stack(
            [transforms.resize_and_crop(load_rgb(p), self.preprocessing) for p in self.paths[window]]
        )


def _worker_context(num_workers: int) -> str | None:
    """Start method for loader workers: the default, except inside joblib's loky workers (hydra/launcher=
    joblib), whose 'loky' start method cannot start DataLoader workers; there fork (or spawn) is used."""
    import multiprocessing

    method = multiprocessing.get_start_method(allow_none=True)
    if num_workers == 0 or method in (None, "fork", "spawn", "forkserver"):
        return None
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


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
        augment: str | list[str] = "hflip",
        preprocess_on: str = "device",
        seed: int = 0,
        exclude: str | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        sampler: str = "random",
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__()
        presets = parse_augment(augment)  # recipes: presets, MixUp/CutMix, balanced sampler
        self.image_augment = ImageAugment(presets)
        self.mix = BatchMix(len(source.classes), mixup_alpha, cutmix_alpha)
        self.sampler, self.hflip = sampler, "hflip" in presets
        augment = augment_key(presets, mixup_alpha, cutmix_alpha)  # what the feature cache keys on
        self.source, self.preprocessing = source, preprocessing
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.persistent_workers = persistent_workers and num_workers > 0
        self.augment, self.preprocess_on, self.seed = augment, preprocess_on, seed
        self.exclude = exclude  # file of image ids to leave out of both splits (data.exclude)
        self.folds, self.fold = folds, fold  # k-fold cross-validation (data.folds, data.fold)
        self.pool: LabeledImages | None = None  # with folds: train ∪ val, sorted by image id
        self.pool_index: dict[str, Any] = {}  # with folds: each split's positions in the pool
        self.cache: FeatureSource | None = None
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
        if train and self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        prep = self.preprocessing
        if train and self.image_augment and self.preprocess_on == "cpu":
            steps.append(self.image_augment)
        if self.preprocess_on == "cpu":
            steps.append(v2.Lambda(functools.partial(transforms.preprocess, prep=prep)))
        elif not self.geometry_on_device:
            steps.append(v2.Lambda(functools.partial(transforms.resize_and_crop, prep=prep)))
        return v2.Compose(steps) if steps else None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = apply_exclude(*self.source.load(), self.exclude)
            if self.folds is not None:
                self._split_folds(self.train_set, self.val_set)
            if len(self.val_set) == 0:
                raise FtlabError(
                    "The data has no validation images (e.g. every CSV row is marked train): mark some "
                    "val, leave their split empty so data.val_fraction draws them, or cross-validate with "
                    "data.folds=K data.fold=i."
                )
            self.train_set.transform = self._cpu_transform(train=True)
            self.val_set.transform = self._cpu_transform(train=False)
            counts = {s: class_counts(self.raw_labels(s), len(self.classes)) for s in ("train", "val")}
            log.info(
                "data: images per class (train / val): %s",
                ", ".join(
                    f"{c}={t}/{v}"
                    for c, t, v in zip(self.classes, counts["train"], counts["val"], strict=True)
                ),
            )

    def _split_folds(self, train: LabeledImages, val: LabeledImages) -> None:
        """Fold `fold` of the labelled pool validates, the other folds train (`data/folds.py`)."""
        assert self.folds is not None and self.fold is not None
        fixed = getattr(self.source, "folds", None)
        cut = fold_split(train, val, self.folds, self.fold, self.seed, fixed, self.classes)
        pool_ids = cut.pool.ids or []
        self.pool, self.pool_index = cut.pool, {"train": cut.train, "val": cut.val}
        self.train_set = select(cut.pool, cut.train, pool_ids)
        self.val_set = select(cut.pool, cut.val, pool_ids)
        log.info(
            "data.folds=%d: fold %d validates (%d images), the other folds train (%d); folds from %s",
            self.folds,
            self.fold,
            len(cut.val),
            len(cut.train),
            "the source's fold column" if fixed is not None else f"stratification, seed {self.seed}",
        )

    def current_epoch(self) -> int:
        """The trainer's epoch (0 before fitting)."""
        return self.trainer.current_epoch if self.trainer is not None else 0

    def attach_cache(self, cache: FeatureSource | None) -> None:
        """Serve cached frozen-prefix features instead of images whenever the cache can."""
        self.cache = cache

    def _split_set(self, split: str) -> LabeledImages:
        dataset = {"train": self.train_set, "val": self.val_set, "pool": self.pool}[split]
        assert dataset is not None, "call setup() first"
        return dataset

    def raw_images(self, split: str) -> torch.Tensor | FileBatches | Any:
        """The split's images before augmentation, sliceable into uint8 batches."""
        dataset = self._split_set(split)
        if isinstance(dataset, TensorImages):
            return dataset.images
        if hasattr(dataset, "batches"):  # streamed sources (litdata) cut their own batches
            return dataset.batches(self.preprocessing)
        assert isinstance(dataset, FileImages)
        return FileBatches(dataset.paths, self.preprocessing)

    @property
    def multi_label(self) -> bool:
        """The source gives several labels per image (labels are float32 multi-hot rows (N, classes))."""
        return bool(getattr(self.source, "multi_label", False))

    def raw_labels(self, split: str) -> torch.Tensor:
        """The split's labels: class indices (long), or multi-hot rows (float32, (N, classes))."""
        dtype = torch.float32 if self.multi_label else torch.long
        return torch.as_tensor(self._split_set(split).labels, dtype=dtype)

    def fingerprint(self, split: str) -> str:
        """A digest of the split's content (pixels, or file paths, sizes and times) and labels."""
        dataset = self._split_set(split)
        digest = hashlib.sha1(self.raw_labels(split).numpy().tobytes())
        if isinstance(dataset, TensorImages):
            digest.update(dataset.images.contiguous().numpy().tobytes())
        elif hasattr(dataset, "content_digest"):  # streamed sources (litdata): the chunks' content
            digest.update(dataset.content_digest().encode())
        else:
            for path in dataset.paths:  # type: ignore[attr-defined]
                stat = Path(path).stat()
                digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def cpu_side(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic CPU steps of the pipeline (no augmentation) applied to a uint8 batch."""
        if self.preprocess_on == "cpu":
            return transforms.preprocess(images, self.preprocessing)
        if not self.geometry_on_device:
            return transforms.resize_and_crop(images, self.preprocessing)
        return images

    def _loader(self, dataset: LabeledImages | None, shuffle: bool) -> DataLoader:
        assert dataset is not None, "call setup() first"
        sampler: Any = EpochSampler(len(dataset), self.seed, self.current_epoch) if shuffle else None
        if shuffle and self.sampler == "balanced":
            sampler = self.balanced_sampler(dataset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            multiprocessing_context=_worker_context(self.num_workers),
        )

    def balanced_sampler(self, dataset: Any) -> BalancedSampler:
        """`data.sampler=balanced`: classes drawn equally often; each DDP rank gets its own share."""
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        labels = torch.as_tensor(dataset.labels, dtype=torch.float32 if self.multi_label else torch.long)
        return BalancedSampler(labels, self.seed, self.current_epoch, replicas, rank)

    def _cached(self, split: str) -> DataLoader | None:
        if self.cache is None:
            return None
        epochs = self.trainer.max_epochs if self.trainer is not None else None
        return self.cache.loader(split, self.current_epoch(), epochs)

    def train_dataloader(self) -> DataLoader:
        cached = self._cached("train")
        if cached is not None and self.sampler == "balanced":  # cached features drawn class-balanced too
            features, sampler = cached.dataset, self.balanced_sampler(cached.dataset)
            cached = DataLoader(
                features,
                cached.batch_size,
                sampler=sampler,
                num_workers=cached.num_workers,
                collate_fn=cached.collate_fn,
                pin_memory=cached.pin_memory,
            )
        return cached or self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._cached("val") or self._loader(self.val_set, shuffle=False)

    def device_transform(self, images: torch.Tensor) -> torch.Tensor:
        """What runs on the device after transfer: resize/crop if still needed, then normalise."""
        if self.preprocess_on == "cpu":
            return images
        if self.geometry_on_device:
            return transforms.preprocess(images, self.preprocessing)
        return transforms.normalize(images, self.preprocessing)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, FeatureBatch):  # cached stage outputs: only the storage dtype changes
            return batch._replace(features=batch.features.float())
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        if training and self.image_augment and self.preprocess_on == "device":
            images = self.image_augment(images)
        images = self.device_transform(images)
        return self.mix(images, labels) if training else (images, labels)


def build_datamodule(
    settings: DataSettings, source: Source, preprocessing: Preprocessing, seed: int = 0
) -> ImageDataModule:
    """DataModule from the `data` settings, its source, and the model's preprocessing."""
    return ImageDataModule(source, preprocessing, seed=seed, **settings.loader_options())


def build_source(settings: DataSettings, seed: int) -> Source:
    """The source the `data` settings describe; `seed` fixes its train/val split."""
    return settings.build_source(seed)
