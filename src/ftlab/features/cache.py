"""Cached activations of the frozen prefix of the backbone, planned once for the whole schedule.

While the first k stages are frozen and in eval mode, their output for an image is a pure function of
the (preprocessed) image. `planner.plan` decides from the schedule, before epoch 0, which boundary each
stretch of epochs caches; this module builds those caches (from images, from disk, or derived from a
shallower cache), and serves `FeatureBatch`es that tell the module where in the network they start.
Horizontal-flip augmentation has exactly two outcomes, so it is cached as two views per image and drawn
with the same random stream as the uncached pipeline; other augmentations are not cached.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from ftlab.data.batches import CollateFeatures
from ftlab.data.datamodule import ImageDataModule
from ftlab.data.sampling import EpochSampler
from ftlab.errors import FtlabError
from ftlab.features import planner
from ftlab.features.planner import Plan, Segment
from ftlab.features.settings import CacheSettings
from ftlab.finetune.phases import Schedule
from ftlab.models.module import Classifier

log = logging.getLogger(__name__)

MODES = ("auto", "off", "memory", "disk")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
DTYPE_CHOICES = ("auto", *DTYPES)  # auto: float32 when it fits features.max_memory_gb, else float16
OPEN_ENDED_EPOCHS = 1000  # planning horizon of a run without max_epochs (Lightning's own default)


class CachedFeatures(Dataset):
    """(features, label) pairs; with two views per image, a fair coin picks the flipped one, as
    RandomHorizontalFlip would (same `torch.rand(1) < 0.5` draw per sample).

    A disk cache is a memory-mapped file: worker processes reopen the map instead of copying the tensor.
    """

    def __init__(
        self, features: torch.Tensor, labels: torch.Tensor, random_view: bool, path: Path | None = None
    ) -> None:
        self.features, self.labels, self.random_view, self.path = features, labels, random_view, path

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        view = 0
        if self.random_view and self.features.shape[0] > 1:
            view = int(torch.rand(1).item() < 0.5)
        return self.features[view, idx], int(self.labels[idx])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["features"] = None  # reopened as a map in the receiving process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.path is not None:
            self.features = torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)


@dataclass
class Built:
    """A materialised cache: the segment it serves, its dataset and where it lives."""

    segment: Segment
    dataset: CachedFeatures
    where: str


class FeatureCache:
    """Plans the cache from the schedule once, builds each planned cache once, serves loaders over them."""

    def __init__(
        self,
        config: CacheSettings,
        module: Classifier,
        schedule: Schedule,
        datamodule: ImageDataModule,
        data_dir: str,
    ) -> None:
        if config.cache not in MODES:
            raise FtlabError(f"features.cache={config.cache!r} is not one of {', '.join(MODES)}.")
        if config.dtype not in DTYPE_CHOICES:
            raise FtlabError(f"features.dtype={config.dtype!r} is not one of {', '.join(DTYPE_CHOICES)}.")
        self.config, self.module, self.schedule, self.datamodule = config, module, schedule, datamodule
        self.root = Path(config.dir or Path(data_dir) / ".ftlab_features")
        self.disabled_reason: str | None = "features.cache=off" if config.cache == "off" else None
        self.plans: dict[str, Plan] = {}
        self.boundaries: list[int] = []
        self.built: dict[str, dict[Segment, Built | None]] = {"train": {}, "val": {}}
        self.entries: dict[str, Built] = {}  # what each split is served from now
        self._stage_hashes: list[str] | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    @property
    def trainer_options(self) -> dict[str, Any]:
        """Trainer arguments the cache needs: loaders follow the planned segments, so reload each epoch."""
        return {"reload_dataloaders_every_n_epochs": 1} if self.enabled else {}

    def views(self, split: str) -> int:
        """How many views of each image to cache for a split (hflip: the image and its mirror)."""
        if split == "val" or self.datamodule.augment == "none":
            return 1
        return self.config.views or 2

    # -- planning ----------------------------------------------------------------------------------------

    def stage_costs(self) -> list[float]:
        """Forward FLOPs of each stage for one image (torch's FlopCounterMode), what caching saves."""
        size = self.module.preprocessing.crop_size
        x = torch.zeros(1, 3, size, size, device=self.module.device)
        costs = []
        with self._eval(list(self.module.stages.values())), torch.no_grad():
            for stage in self.module.stages.values():
                with FlopCounterMode(display=False) as counter:
                    x = stage(x)
                costs.append(float(counter.get_total_flops()))
        return costs

    def plan(self, epochs: int | None) -> dict[str, Plan]:
        """The plan of both splits over `epochs` (None or < 0: open-ended), made once per horizon."""
        horizon = OPEN_ENDED_EPOCHS if epochs is None or epochs < 0 else epochs
        if self.plans and len(self.boundaries) == horizon:
            return self.plans
        names = list(self.module.stages)
        has_params = [any(True for _ in s.parameters()) for s in self.module.stages.values()]
        self.boundaries = planner.frozen_boundaries(self.schedule, has_params, names, horizon)
        costs = self.stage_costs() if any(self.boundaries) else [1.0] * len(names)
        self.plans = {}
        for split in ("train", "val"):
            views = self.views(split)
            on_disk = self._on_disk(split, views) if self.config.cache == "auto" else []
            self.plans[split] = planner.plan(
                self.boundaries, views, costs, forced=self.config.cache != "auto", free_from=on_disk
            )
            self._log_plan(split, self.plans[split])
        return self.plans

    def _stage_name(self, boundary: int) -> str:
        return list(self.module.stages)[boundary - 1]

    def _log_plan(self, split: str, p: Plan) -> None:
        for seg in p.skipped:
            log.info(
                "feature cache: %s not cached at stage %s for epochs %d-%d: building %d view(s) costs as "
                "much as the %d epoch(s) it would serve",
                split,
                self._stage_name(seg.boundary),
                seg.start,
                seg.stop - 1,
                p.views,
                seg.stop - seg.start,
            )
        for seg in p.segments:
            source = (
                "from images"
                if seg.parent is None
                else f"from the {self._stage_name(seg.parent.boundary)} cache"
            )
            log.info(
                "feature cache plan: %s after stage %s for epochs %d-%d, %s",
                split,
                self._stage_name(seg.boundary),
                seg.start,
                seg.stop - 1,
                source,
            )

    def _untouched(self, boundary: int, epoch: int) -> bool:
        """stages[:boundary] held their initial weights through `epoch` (safe to share on disk)."""
        return min(self.boundaries[: epoch + 1]) >= boundary

    def _on_disk(self, split: str, views: int) -> list[int]:
        """Boundaries whose cache for this split already exists on disk (loading beats computing)."""
        return [
            b
            for b in sorted(set(self.boundaries) - {0})
            if (self.root / (self._key(split, b, views, self._dtype_name(split, b, views)) + ".pt")).is_file()
        ]

    # -- serving -----------------------------------------------------------------------------------------

    def loader(self, split: str, epoch: int, epochs: int | None) -> DataLoader | None:
        """A loader of `FeatureBatch`es for `split` at `epoch` (shuffled per (seed, epoch)), or None."""
        if not self.enabled:
            return None
        if split == "train" and self.datamodule.augment not in ("none", "hflip"):  # not finitely many views
            if not getattr(self, "_said_uncached", False):
                self._said_uncached = True
                log.info(
                    "feature cache: train not cached: augmentation %s is not finite", self.datamodule.augment
                )
            return None
        segment = self.plan(epochs)[split].segment(epoch)
        self._release(split, epoch)
        built = None
        while segment is not None and built is None:  # a derived cache that could not be kept: its parent
            built = self._materialize(split, segment)
            segment = segment.parent
        if built is None:
            self.entries.pop(split, None)
            return None
        self.entries[split] = built
        dm = self.datamodule
        dataset = built.dataset
        sampler = EpochSampler(len(dataset), dm.seed, dm.current_epoch) if split == "train" else None
        workers = dm.num_workers if built.where == "disk" else 0  # memory: indexing in process is fastest
        return DataLoader(
            dataset,
            batch_size=dm.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=CollateFeatures(built.segment.boundary),
            pin_memory=dm.pin_memory and dataset.features.device.type == "cpu",
        )

    def _release(self, split: str, epoch: int) -> None:
        """Drop caches whose epochs are over and that no current or later segment derives from."""
        needed: set[Segment] = set()
        for seg in self.plans[split].segments:
            if seg.stop > epoch:
                node: Segment | None = seg
                while node is not None:
                    needed.add(node)
                    node = node.parent
        for seg in list(self.built[split]):
            if seg not in needed:
                del self.built[split][seg]

    # -- building ----------------------------------------------------------------------------------------

    def _materialize(self, split: str, segment: Segment) -> Built | None:
        if segment in self.built[split]:
            return self.built[split][segment]
        views = self.plans[split].views
        parent = self._materialize(split, segment.parent) if segment.parent is not None else None
        start = time.perf_counter()  # after the parent: each log line times its own build
        if parent is not None:
            made = self._derive(split, segment, parent)
        else:  # from images (or disk); also when the parent could not be cached
            made = self._from_images(split, segment, views)
        built = made[0] if made else None
        self.built[split][segment] = built
        if made is not None:
            built, how = made
            features = built.dataset.features
            log.info(
                "feature cache built: %s after stage %s (epochs %d-%d) %s: %d images x %d view(s), "
                "%.1f MB %s in %s, %.2f s",
                split,
                self._stage_name(segment.boundary),
                segment.start,
                segment.stop - 1,
                how,
                features.shape[1],
                features.shape[0],
                features.numel() * features.element_size() / 2**20,
                str(features.dtype).removeprefix("torch."),
                "memory" if built.dataset.path is None else f"disk ({built.dataset.path})",
                time.perf_counter() - start,
            )
        return built

    def _dtype_name(self, split: str, boundary: int, views: int) -> str:
        """features.dtype, with `auto` resolved: float32 when it fits the memory budget, else float16."""
        if self.config.dtype != "auto":
            return self.config.dtype
        sample = self._compute(split, boundary, 1, limit=1, dtype=torch.float32)
        total = sample[0, 0].numel() * 4 * len(self.datamodule.raw_labels(split)) * views
        return "float32" if total <= self.config.max_memory_gb * 2**30 else "float16"

    def _stage_digests(self) -> list[str]:
        """A content digest per stage (parameters and buffers), computed once: what the cache depends on."""
        if self._stage_hashes is None:
            self._stage_hashes = []
            for stage in self.module.stages.values():
                digest = hashlib.sha1()
                for name, tensor in stage.state_dict().items():
                    flat = tensor.detach().contiguous().reshape(-1).cpu()
                    digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
                    digest.update(flat.view(torch.uint8).numpy().tobytes())
                self._stage_hashes.append(digest.hexdigest())
        return self._stage_hashes

    def _key(self, split: str, boundary: int, views: int, dtype: str) -> str:
        """File name of a shareable cache: stages[:boundary]'s weights by content, data, preprocessing."""
        dm = self.datamodule
        digest = hashlib.sha1()
        for part in (
            self.module.hparams["backbone"],
            self._stage_digests()[:boundary],
            self.module.preprocessing.to_dict(),
            boundary,
            views,
            dtype,
            self._precision_name(),  # autocast changes the activations
            dm.preprocess_on,
            len(dm.raw_labels(split)),
        ):
            digest.update(repr(part).encode())
        digest.update(dm.fingerprint(split).encode())
        return f"{self.module.hparams['backbone']}-{split}-stage{boundary}-{digest.hexdigest()[:16]}"

    def _where(self, total: int, shareable: bool, split: str) -> str | None:
        """memory or disk for a cache of `total` bytes, or None (logged) when neither is possible."""
        budget = self.config.max_memory_gb * 2**30
        where = (
            self.config.cache if self.config.cache != "auto" else ("memory" if total <= budget else "disk")
        )
        if where == "disk" and not shareable:
            log.info(
                "feature cache: %s needs %.0f MB, over features.max_memory_gb, and this prefix has trained:"
                " not cached",
                split,
                total / 2**20,
            )
            return None
        if where == "disk":
            free = shutil.disk_usage(self.root if self.root.exists() else self.root.parent).free
            if total > 0.8 * free:
                log.info(
                    "feature cache: %s needs %.0f MB, more than the free disk: not cached",
                    split,
                    total / 2**20,
                )
                return None
        return where

    def _from_images(self, split: str, segment: Segment, views: int) -> tuple[Built, str] | None:
        boundary = segment.boundary
        labels = self.datamodule.raw_labels(split)
        dtype = self._dtype_name(split, boundary, views)
        shareable = self._untouched(boundary, segment.start) and self.config.cache in ("auto", "disk")
        path = self.root / (self._key(split, boundary, views, dtype) + ".pt") if shareable else None
        if path is not None and path.is_file():
            features = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            dataset = CachedFeatures(features, labels, split == "train", path)
            return Built(segment, dataset, "disk"), "loaded"
        sample = self._compute(split, boundary, views, limit=1, dtype=DTYPES[dtype])
        total = sample[0, 0].numel() * sample.element_size() * len(labels) * views
        where = self._where(total, shareable, split)
        if where is None:
            return None
        features = self._compute(split, boundary, views, dtype=DTYPES[dtype])
        if where == "disk" and path is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(features, tmp)
            tmp.replace(path)
            features = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            return Built(
                segment, CachedFeatures(features, labels, split == "train", path), "disk"
            ), "from images"
        if self.module.device.type == "cuda":
            features = features.to(self.module.device)
        return Built(segment, CachedFeatures(features, labels, split == "train"), "memory"), "from images"

    def _derive(self, split: str, segment: Segment, parent: Built) -> tuple[Built, str] | None:
        """The segment's cache computed from its parent's tensors (only the stages in between run)."""
        assert segment.parent is not None
        stages = list(self.module.stages.values())[segment.parent.boundary : segment.boundary]
        source = parent.dataset.features
        dtype = source.dtype
        out = []
        with self._eval(stages), torch.no_grad(), self._precision():
            for view in range(source.shape[0]):
                chunks = []
                for begin in range(0, source.shape[1], self.datamodule.batch_size):
                    x = (
                        source[view, begin : begin + self.datamodule.batch_size]
                        .to(self.module.device)
                        .float()
                    )
                    for stage in stages:
                        x = stage(x)
                    chunks.append(x.to(dtype))
                out.append(torch.cat(chunks))
        features = torch.stack(out)
        total = features.numel() * features.element_size()
        if self.config.cache == "auto" and self._where(total, shareable=False, split=split) is None:
            return None
        features = features if self.module.device.type == "cuda" else features.cpu()
        how = f"derived from the {self._stage_name(segment.parent.boundary)} cache"
        return Built(
            segment, CachedFeatures(features, parent.dataset.labels, split == "train"), "memory"
        ), how

    @staticmethod
    def _eval(stages: list[torch.nn.Module]) -> Any:
        """Context: the given stages in eval mode, their previous modes restored afterwards."""
        return _EvalModes(stages)

    def _precision(self) -> Any:
        """Context: the run's precision (bf16/fp16 autocast under mixed precision), as training applies it to
        the same stages when they run on images, so cached and uncached activations agree."""
        trainer = self.module._trainer
        return trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()

    def _precision_name(self) -> str:
        trainer = self.module._trainer
        return str(trainer.precision) if trainer is not None else "32-true"

    @torch.no_grad()
    def _compute(
        self, split: str, boundary: int, views: int, dtype: torch.dtype, limit: int | None = None
    ) -> torch.Tensor:
        """(views, N, ...) activations of stages[:boundary] for the split's deterministic images."""
        dm, module = self.datamodule, self.module
        stages = list(module.stages.values())[:boundary]
        with self._eval(stages), self._precision():
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


class _EvalModes:
    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.modules = modules
        self.modes = [m.training for m in modules]

    def __enter__(self) -> None:
        for module in self.modules:
            module.eval()

    def __exit__(self, *exc: object) -> None:
        for module, mode in zip(self.modules, self.modes, strict=True):
            module.train(mode)


def attach_feature_cache(
    module: Classifier,
    schedule: Schedule,
    datamodule: ImageDataModule,
    config: CacheSettings,
    data_dir: str,
) -> FeatureCache:
    """Build the run's feature cache and attach it to the DataModule; pass `cache.trainer_options` to the
    Trainer. The one wiring for training and benchmarks."""
    cache = FeatureCache(config, module, schedule, datamodule, data_dir)
    datamodule.attach_cache(cache)
    return cache
