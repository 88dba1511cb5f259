"""Feature cache: training on cached frozen-prefix activations equals training on images."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torchvision
from lightning.pytorch.callbacks import Callback

from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.data import ImageDataModule
from ftlab.data.batches import FeatureBatch
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.features.cache import FeatureCache, attach_feature_cache
from ftlab.features.settings import CacheSettings
from ftlab.finetune.strategies import build_phases
from ftlab.models.module import Classifier
from ftlab.training.run import train
from tests.helpers.cli import TINY
from tests.helpers.trainers import quiet_cpu_trainer


class _Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.cached_batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.cached_batches += int(isinstance(batch, FeatureBatch))


def _run(
    cache: str,
    strategy: str,
    augment: str,
    epochs: int = 3,
    tmp_path=None,
    budget_gb: float = 4.0,
    dtype: str = "float32",
    **phase_kwargs,
):
    L.seed_everything(0)
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=48)
    schedule = ScheduleCallback(build_phases(strategy, module.trainable_stage_names, **phase_kwargs))
    dm = ImageDataModule(
        SyntheticSource(train_size=32, val_size=16),
        module.preprocessing,
        batch_size=8,
        augment=augment,
        seed=0,
    )
    attach_feature_cache(
        module,
        schedule,
        dm,
        CacheSettings(cache=cache, dtype=dtype, max_memory_gb=budget_gb),
        str(tmp_path or "/nonexistent"),
    )
    record = _Losses()
    trainer = quiet_cpu_trainer(
        max_epochs=epochs,
        deterministic=True,
        reload_dataloaders_every_n_epochs=1,
        callbacks=[schedule, record],
    )
    trainer.fit(module, dm)
    return module, record, trainer


@pytest.mark.parametrize(
    ("strategy", "augment", "kwargs"),
    [
        ("gradual", "hflip", {"every": 1}),  # boundary moves: pool -> layer3 -> layer2
        ("linear_probe", "none", {}),  # head on pooled features
    ],
)
def test_cached_training_equals_uncached(strategy, augment, kwargs, caplog):
    plain, plain_rec, _ = _run("off", strategy, augment, **kwargs)
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        cached, cached_rec, _ = _run("memory", strategy, augment, **kwargs)
    if strategy == "gradual":  # built once after layer2; val after layer3 derived from it, not from images
        assert "val after stage layer3 (epochs 0-1) derived from the layer2 cache" in caplog.text
    assert cached_rec.cached_batches == len(cached_rec.losses) > 0  # every step trained on cached features
    assert plain_rec.cached_batches == 0
    torch.testing.assert_close(
        torch.tensor(cached_rec.losses), torch.tensor(plain_rec.losses), rtol=1e-4, atol=1e-5
    )
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_disk_cache_is_reused_across_runs(tmp_path):
    _run("disk", "linear_probe", "none", epochs=1, tmp_path=tmp_path)
    files = sorted((tmp_path / ".ftlab_features").glob("*.pt"))
    assert len(files) == 2  # train and val
    stamps = [f.stat().st_mtime_ns for f in files]
    _, record, _ = _run("disk", "linear_probe", "none", epochs=1, tmp_path=tmp_path)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # loaded, not rewritten
    assert record.cached_batches == len(record.losses)


def test_full_training_and_bn_train_are_never_cached():
    _, record, _ = _run("auto", "full", "hflip", epochs=1)
    assert record.cached_batches == 0
    L.seed_everything(0)
    module = Classifier("resnet18", ["a", "b"], weights=None, image_size=32)
    schedule = ScheduleCallback(build_phases("linear_probe", module.trainable_stage_names), bn="train")
    dm = ImageDataModule(SyntheticSource(train_size=8, val_size=8), module.preprocessing, augment="none")
    dm.setup()
    assert FeatureCache(CacheSettings(), module, schedule, dm, "/tmp").plan(3)["train"].segments == []


def test_over_budget_goes_to_disk_or_is_skipped_with_a_log(tmp_path, caplog):
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        _, record, _ = _run("auto", "linear_probe", "none", epochs=2, tmp_path=tmp_path, budget_gb=1e-9)
    assert record.cached_batches == len(record.losses)
    assert len(list((tmp_path / ".ftlab_features").glob("*.pt"))) == 2  # over the memory budget: disk
    caplog.clear()
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        _, record, _ = _run(
            "auto",
            "custom",
            "none",
            epochs=3,
            tmp_path=tmp_path / "b",
            budget_gb=1e-9,
            phases=[{"at_epoch": 0, "trainable": "all"}, {"at_epoch": 1, "trainable": "top-1"}],
        )
    # After the prefix trained (epoch 0), its activations are run-specific: no disk, over budget, no cache.
    assert record.cached_batches == 0
    assert "over features.max_memory_gb" in caplog.text


def test_auto_skips_a_cache_that_would_not_pay_off(caplog):
    """A boundary that lasts one epoch: building the cache would cost what it saves."""
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        _, record, _ = _run("auto", "freeze_unfreeze", "hflip", epochs=2, unfreeze_at_epoch=1)
    assert record.cached_batches == 0
    assert "costs as much as" in caplog.text
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        _, record, _ = _run("auto", "freeze_unfreeze", "hflip", epochs=3, unfreeze_at_epoch=3)
    assert record.cached_batches == 3 * 4  # 3 frozen epochs x 4 batches: two views pay off over 3 epochs


def test_planned_boundary_at_shipped_defaults_trains_like_images_and_val_acc_is_true(caplog):
    """Last stage + head after a head-only epoch: built once after layer3 (default dtype), same losses."""
    plain, plain_rec, _ = _run("off", "last_stages", "hflip", epochs=3, top_k=1, unfreeze_at_epoch=1)
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        cached, rec, trainer = _run(
            "auto",
            "last_stages",
            "hflip",
            epochs=3,
            dtype=CacheSettings().dtype,
            top_k=1,
            unfreeze_at_epoch=1,
        )
    builds = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature cache built: ")]
    assert len(builds) == 2 and all("after stage layer3" in b and "float32" in b for b in builds), builds
    assert rec.cached_batches == len(rec.losses) > 0
    torch.testing.assert_close(torch.tensor(rec.losses), torch.tensor(plain_rec.losses), rtol=1e-4, atol=1e-5)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    # val was served from the cache: recompute accuracy on raw images with the trained model
    dm = trainer.datamodule
    cached.eval()
    with torch.no_grad():
        images = dm.device_transform(dm.cpu_side(dm.raw_images("val")[:]))
        predicted = cached(images).argmax(1)
    accuracy = (predicted == dm.raw_labels("val")).float().mean()
    assert float(trainer.callback_metrics["val/acc"]) == pytest.approx(float(accuracy), abs=1e-6)


def _val_cache(weights, tmp_path, seed: int = 0, workers: int = 0):
    torch.manual_seed(seed)
    module = Classifier("resnet18", ["a", "b", "c"], weights=weights, image_size=32)
    schedule = ScheduleCallback(build_phases("linear_probe", module.trainable_stage_names))
    dm = ImageDataModule(
        SyntheticSource(train_size=16, val_size=12),
        module.preprocessing,
        batch_size=4,
        augment="none",
        num_workers=workers,
    )
    dm.setup()
    cache = attach_feature_cache(module, schedule, dm, CacheSettings(cache="disk"), str(tmp_path))
    return cache


def test_disk_cache_key_follows_the_weights_content_and_the_seed(tmp_path, caplog):
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    folder = tmp_path / ".ftlab_features"
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        assert _val_cache(str(weights), tmp_path).loader("val", 0, 1) is not None
        assert _val_cache(str(weights), tmp_path).loader("val", 0, 1) is not None
    assert len(list(folder.glob("*-val-*.pt"))) == 1 and "loaded" in caplog.text  # same file: reused
    torch.manual_seed(2)
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # rewritten in place
    caplog.clear()
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        _val_cache(str(weights), tmp_path).loader("val", 0, 1)
    assert len(list(folder.glob("*-val-*.pt"))) == 2 and "from images" in caplog.text  # rebuilt
    keys = {_val_cache(None, tmp_path, seed=seed)._key("val", 6, 1, "float32") for seed in (3, 3, 4)}
    assert len(keys) == 2  # a random init is known by its seed: same seed, same key; another, another


def test_disk_cache_is_a_memory_map_that_worker_processes_read_like_the_main_process(tmp_path):
    batches = {}
    for workers in (0, 2):
        loader = _val_cache(None, tmp_path, workers=workers).loader("train", 0, 1)
        assert loader is not None and loader.num_workers == workers
        batches[workers] = list(loader)
    assert loader.dataset.path is not None and loader.dataset.path.is_file()
    assert len(batches[0]) == len(batches[2]) == 4
    for a, b in zip(batches[0], batches[2], strict=True):
        assert a.start == b.start == 6
        torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)
        torch.testing.assert_close(a.labels, b.labels)


def test_last_stages_preset_builds_each_split_once_in_a_real_run(compose_cfg, caplog):
    """`finetune=last_stages` through `train(cfg)`: one build per split, after layer3, for every epoch."""
    overrides = ["+experiment=smoke", *TINY, "finetune=last_stages", "finetune.unfreeze_at_epoch=1"]
    cfg = compose_cfg([*overrides, "trainer.max_epochs=3", "logger=csv", "data.image_size=32"])
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        metrics, objects = train(cfg)
    builds = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature cache built: ")]
    assert [b.split(" after")[0] for b in builds] == [
        "feature cache built: val",
        "feature cache built: train",
    ]
    assert all("after stage layer3 (epochs 0-2) from images" in b for b in builds)
    assert objects["trainer"].current_epoch == 3 and "val/acc" in metrics


class _SlowImages(FeatureCache):
    """A cache whose builds from images take at least 1 s longer: a derived build must not report it."""

    def _from_images(self, *args, **kwargs):
        import time

        time.sleep(1.0)
        return super()._from_images(*args, **kwargs)


def test_each_build_line_times_its_own_build(caplog):
    torch.manual_seed(0)
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=32)
    schedule = ScheduleCallback(build_phases("gradual", module.trainable_stage_names, every=1))
    dm = ImageDataModule(SyntheticSource(train_size=16, val_size=12), module.preprocessing, augment="none")
    dm.setup()
    cache = _SlowImages(CacheSettings(cache="memory"), module, schedule, dm, "/nonexistent")
    plans = cache.plan(3)
    derived = next(s for s in plans["val"].segments if s.parent is not None)
    with caplog.at_level("INFO", logger="ftlab.features.cache"):
        assert cache.loader("val", derived.start, 3) is not None
    seconds = {
        ("derived" in r.getMessage()): float(r.getMessage().rsplit(", ", 1)[1].removesuffix(" s"))
        for r in caplog.records
        if r.getMessage().startswith("feature cache built: ")
    }
    assert seconds[False] >= 1.0 and seconds[True] < 1.0, seconds


def test_under_mixed_precision_the_cache_holds_what_training_would_compute(tmp_path):
    """trainer precision bf16-mixed: the frozen stages run under the same autocast when cached as when
    training runs them on images (plain torch.autocast reference); fp32 activations would differ."""
    L.seed_everything(0)
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=48)
    schedule = ScheduleCallback(build_phases("linear_probe", module.trainable_stage_names))
    dm = ImageDataModule(SyntheticSource(train_size=16, val_size=8), module.preprocessing, augment="none")
    cache = attach_feature_cache(module, schedule, dm, CacheSettings(cache="memory"), str(tmp_path))
    trainer = quiet_cpu_trainer(max_epochs=1, precision="bf16-mixed", callbacks=[schedule])
    trainer.fit(module, dm)
    built = cache.entries["val"]
    cached = built.dataset.features[0].float()
    stages = list(module.stages.values())[: built.segment.boundary]
    module.eval()
    images = dm.device_transform(dm.cpu_side(dm.raw_images("val")[:]))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference = images
            for stage in stages:
                reference = stage(reference)
        full = images
        for stage in stages:
            full = stage(full)
    torch.testing.assert_close(cached, reference.float(), rtol=1e-2, atol=1e-3)
    assert (cached - full).abs().max() > 10 * (cached - reference.float()).abs().max()
