"""k-fold and the feature cache: the frozen prefix runs once over the labelled pool; every fold loads it."""

from __future__ import annotations

import lightning as L
import torch

from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.data import ImageDataModule
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.features.build import compute
from ftlab.features.cache import FeatureCache
from ftlab.features.settings import CacheSettings
from ftlab.finetune.strategies import build_phases
from ftlab.models.module import Classifier

EPOCHS = 6


def _fold_cache(fold: int, cache_dir) -> tuple[FeatureCache, ImageDataModule, list[int]]:
    """A linear probe's feature cache for one fold, and the images that went through the first stage."""
    L.seed_everything(0)  # the same random init in every fold: the frozen prefix is the same network
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=16)
    schedule = ScheduleCallback(build_phases("linear_probe", module.trainable_stage_names))
    dm = ImageDataModule(
        SyntheticSource(train_size=20, val_size=10, size=16), module.preprocessing, batch_size=16,
        augment="hflip", seed=0, folds=3, fold=fold,
    )  # fmt: skip
    dm.setup()
    seen: list[int] = []
    first = next(iter(module.stages.values()))
    first.register_forward_hook(lambda _m, args, _out: seen.append(int(args[0].shape[0])))
    cache = FeatureCache(CacheSettings(cache="auto", dtype="float32"), module, schedule, dm, str(cache_dir))
    return cache, dm, seen


def test_the_second_fold_loads_the_pools_cache_instead_of_running_the_frozen_prefix(tmp_path):
    cache, dm, seen = _fold_cache(0, tmp_path)
    for split in ("train", "val"):
        assert cache.loader(split, 0, EPOCHS) is not None
    batches = [n for n in seen if n > 1]  # one-image probes (stage costs, feature size) aside
    assert sum(batches) == 2 * 30  # the pool (train ∪ val = 30 images) in two views, once for both splits
    first_fold_val = set(dm.val_set.ids)

    cache, dm, seen = _fold_cache(1, tmp_path)
    loaders = {split: cache.loader(split, 0, EPOCHS) for split in ("train", "val")}
    assert set(dm.val_set.ids) != first_fold_val
    assert max(seen) == 1 and sum(seen) <= 3  # one-image probes only: the pool's cache was loaded
    # what fold 1 is served equals the frozen prefix run on its own images now
    boundary = cache.entries["val"].segment.boundary
    direct = compute(cache.module, dm, "val", boundary, 1, torch.float32)[0]
    served = torch.cat([batch.features for batch in loaders["val"]])
    torch.testing.assert_close(served, direct)
    labels = torch.cat([batch.labels for batch in loaders["val"]])
    assert torch.equal(labels, dm.raw_labels("val"))
    assert len(loaders["train"].dataset) == len(dm.train_set) == 20
