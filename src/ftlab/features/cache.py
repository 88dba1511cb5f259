"""Cached activations of the frozen prefix of the backbone, planned once for the whole schedule.

While the first k stages are frozen and in eval mode, their output for an image is a pure function of
the (preprocessed) image. `FeatureCache` ties the jobs together and logs what each did: `planner` decides
from the schedule, before epoch 0, which boundary each stretch of epochs caches; `store` keys and keeps the
caches (memory or disk); `build` computes a cache from images (or loads its file); `derive` computes a deeper
cache from a shallower one. It serves `FeatureBatch`es that tell the module where in the network they start.
Horizontal-flip augmentation has exactly two outcomes, so it is cached as two views per image and drawn
with the same random stream as the uncached pipeline; other augmentations are not cached.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ftlab.data.batches import CollateFeatures
from ftlab.data.datamodule import ImageDataModule
from ftlab.data.sampling import EpochSampler
from ftlab.features import build, derive, planner
from ftlab.features.planner import Plan, Segment
from ftlab.features.settings import CacheSettings
from ftlab.features.store import Built, CachedFeatures, FeatureStore, Refused
from ftlab.finetune.phases import Schedule
from ftlab.models.module import Classifier

log = logging.getLogger(__name__)

OPEN_ENDED_EPOCHS = 1000  # planning horizon of a run without max_epochs (Lightning's own default)


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
        self.config, self.module, self.schedule, self.datamodule = config, module, schedule, datamodule
        self.root = Path(config.dir or Path(data_dir) / ".ftlab_features")
        self.store = FeatureStore(config, module, datamodule, self.root)
        self.disabled_reason: str | None = "features.cache=off" if config.cache == "off" else None
        self.plans: dict[str, Plan] = {}
        self.boundaries: list[int] = []
        self.built: dict[str, dict[Segment, Built | None]] = {"train": {}, "val": {}}
        self.entries: dict[str, Built] = {}  # what each split is served from now
        # k-fold: caches of the whole labelled pool by (boundary, views, dtype), both splits served from them
        self.pool_built: dict[tuple[int, int, str], tuple[Built, str]] = {}

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    @property
    def trainer_options(self) -> dict[str, Any]:
        """Trainer arguments the cache needs: loaders follow the planned segments, so reload each epoch."""
        return {"reload_dataloaders_every_n_epochs": 1} if self.enabled else {}

    @property
    def folds(self) -> bool:
        """k-fold cross-validation: the caches are the pool's (train ∪ val), shared by every fold."""
        return self.datamodule.pool is not None

    def cache_split(self, split: str) -> str:
        """What a split's cache is built over: the split itself, or under k-fold the whole pool, of which
        each fold's train and val are row subsets (so the other folds load it instead of building)."""
        return "pool" if self.folds else split

    def views(self, split: str) -> int:
        """How many views of each image to cache for a split (hflip: the image and its mirror); under
        k-fold both splits share the pool's cache (val reads its first view)."""
        augment = self.datamodule.augment
        if augment == "none" or (split == "val" and (not self.folds or augment != "hflip")):
            return 1
        return self.config.views or 2

    # -- planning ----------------------------------------------------------------------------------------

    def plan(self, epochs: int | None) -> dict[str, Plan]:
        """The plan of both splits over `epochs` (None or < 0: open-ended), made once per horizon."""
        horizon = OPEN_ENDED_EPOCHS if epochs is None or epochs < 0 else epochs
        if self.plans and len(self.boundaries) == horizon:
            return self.plans
        names = list(self.module.stages)
        has_params = [any(True for _ in s.parameters()) for s in self.module.stages.values()]
        self.boundaries = planner.frozen_boundaries(self.schedule, has_params, names, horizon)
        costs = build.stage_costs(self.module) if any(self.boundaries) else [1.0] * len(names)
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
            if self.store.path(self._key(split, b, views, self._dtype_name(split, b, views))).is_file()
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
        needed = self.plans[split].needed(epoch)
        for seg in list(self.built[split]):
            if seg not in needed:
                del self.built[split][seg]

    # -- building (build.py, derive.py), keys and storage (store.py) -------------------------------------

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
        """features.dtype, with `auto` resolved (`build.resolve_dtype`)."""
        return build.resolve_dtype(
            self.config, self.module, self.datamodule, self.cache_split(split), boundary, views
        )

    def _key(self, split: str, boundary: int, views: int, dtype: str) -> str:
        """File name of a shareable cache (`store.FeatureStore.key`) under the run's precision."""
        return self.store.key(
            self.cache_split(split), boundary, views, dtype, build.precision_name(self.module)
        )

    def _made(self, split: str, made: tuple[Built, str] | Refused) -> tuple[Built, str] | None:
        if isinstance(made, Refused):
            log.info("feature cache: %s %s: not cached", split, made.why)
            return None
        return made

    def _from_images(self, split: str, segment: Segment, views: int) -> tuple[Built, str] | None:
        dtype = self._dtype_name(split, segment.boundary, views)
        shareable = self._untouched(segment.boundary, segment.start) and self.config.cache in ("auto", "disk")
        if not self.folds:
            return self._made(split, build.from_images(self.store, split, segment, views, dtype, shareable))
        memo = (segment.boundary, views, dtype)
        if memo not in self.pool_built:  # to its file when shareable: the next fold loads it
            made = build.from_images(self.store, "pool", segment, views, dtype, shareable, prefer_disk=True)
            pool = self._made(split, made)
            if pool is None:
                return None
            self.pool_built[memo] = pool
            how = f"{pool[1]} (the labelled pool's {len(pool[0].dataset)} images, shared by every fold)"
        else:
            how = "from the pool's cache built for the other split"
        full = self.pool_built[memo][0]
        rows = torch.as_tensor(self.datamodule.pool_index[split], dtype=torch.long)
        labels = self.datamodule.raw_labels(split)
        dataset = CachedFeatures(full.dataset.features, labels, split == "train", full.dataset.path, rows)
        return Built(segment, dataset, full.where), how

    def _derive(self, split: str, segment: Segment, parent: Built) -> tuple[Built, str] | None:
        """The segment's cache computed from its parent's tensors (only the stages in between run)."""
        return self._made(split, derive.derive(self.store, split, segment, parent))


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
