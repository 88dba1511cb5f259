"""GPU presets: skipped without CUDA (CI has none); run on a GPU machine with `pytest -m gpu`."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.cli import TINY, run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("preset", ["gpu", "bf16", "fp16"])
def test_trainer_presets_train_on_the_gpu(tmp_path, preset):
    logs = tmp_path / "logs"
    args = [
        "+experiment=smoke",
        *[a for a in TINY if a != "trainer=cpu"],
        f"trainer={preset}",
        f"paths.log_dir={logs}",
    ]
    result = run_cli("ftlab.train", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(logs.glob("smoke/*/checkpoints/best.ckpt"))


def test_cached_features_live_on_the_gpu():
    import lightning as L

    from ftlab.callbacks.schedule import ScheduleCallback
    from ftlab.data import ImageDataModule
    from ftlab.data.sources.synthetic import SyntheticSource
    from ftlab.features.cache import attach_feature_cache
    from ftlab.features.settings import CacheSettings
    from ftlab.finetune.strategies import build_phases
    from ftlab.models.module import Classifier

    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=64)
    schedule = ScheduleCallback(build_phases("linear_probe", module.trainable_stage_names))
    dm = ImageDataModule(SyntheticSource(train_size=32, val_size=16), module.preprocessing, batch_size=8)
    cache = attach_feature_cache(
        module, schedule, dm, CacheSettings(cache="memory"), "/tmp"
    )  # forced: 1 epoch
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="gpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[schedule],
        reload_dataloaders_every_n_epochs=1,
    )
    trainer.fit(module, dm)
    assert cache.entries["train"].dataset.features.device.type == "cuda"
