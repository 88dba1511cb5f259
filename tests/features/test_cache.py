"""Feature cache: training on cached frozen-prefix activations equals training on images."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ftlab.callbacks.schedule import FinetuneSchedule
from ftlab.config.schemas import CacheConfig
from ftlab.data import ImageDataModule
from ftlab.data.batches import FeatureBatch
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.features.cache import FeatureCache, attach_feature_cache
from ftlab.finetune.phases import build_phases
from ftlab.models.module import Classifier


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
    schedule = FinetuneSchedule(build_phases(strategy, module.trainable_stage_names, **phase_kwargs))
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
        CacheConfig(cache=cache, dtype=dtype, max_memory_gb=budget_gb),
        str(tmp_path or "/nonexistent"),
    )
    record = _Losses()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
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
def test_cached_training_equals_uncached(strategy, augment, kwargs):
    plain, plain_rec, _ = _run("off", strategy, augment, **kwargs)
    cached, cached_rec, _ = _run("memory", strategy, augment, **kwargs)
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
    schedule = FinetuneSchedule(build_phases("linear_probe", module.trainable_stage_names), bn="train")
    dm = ImageDataModule(SyntheticSource(train_size=8, val_size=8), module.preprocessing, augment="none")
    dm.setup()
    assert FeatureCache(CacheConfig(), module, schedule, dm, "/tmp").plan(3)["train"].segments == []


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
