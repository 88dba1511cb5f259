"""A real multi-label fit: the synthetic multi-label source, binary cross-entropy with pos_weight=auto, and
the validation mAP against chance (the same scores with the images' labels shuffled)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torchmetrics.functional.classification import multilabel_average_precision

from ftlab.models.loss import MultiLabelLoss
from ftlab.training.run import train


@pytest.mark.slow  # three epochs of a random-init ResNet-18: a few minutes on a shared 2-core CPU
def test_a_tiny_multi_label_fit_beats_chance(compose_cfg) -> None:
    cfg = compose_cfg(
        [
            "+experiment=smoke",
            "trainer=cpu",
            "trainer.max_epochs=3",
            "data.multi_label=true",
            "data.num_classes=3",
            "data.noise=0.05",
            "data.train_size=96",
            "data.val_size=48",
            "loss.pos_weight=auto",
            "callbacks.rich_progress_bar=null",
        ]
    )
    metrics, objects = train(cfg)
    module, datamodule, trainer = objects["module"], objects["datamodule"], objects["trainer"]
    best = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor)
    assert best.monitor == "val/mAP" and metrics["best/val_mAP"] == pytest.approx(
        float(best.best_model_score)
    )
    train_labels = datamodule.raw_labels("train")
    positives = train_labels.sum(dim=0)
    assert isinstance(module.criterion, MultiLabelLoss)
    torch.testing.assert_close(module.criterion.pos_weight.cpu(), (len(train_labels) - positives) / positives)

    module.eval()
    images, labels = datamodule.raw_images("val"), datamodule.raw_labels("val").long()
    with torch.no_grad():
        probs = torch.sigmoid(module(datamodule.device_transform(images)))
    observed = float(multilabel_average_precision(probs, labels, 3, average="macro"))
    assert observed == pytest.approx(metrics["val/mAP"], abs=1e-4)  # the logged figure is this one
    generator = torch.Generator().manual_seed(0)
    chance = [
        float(
            multilabel_average_precision(probs, labels[torch.randperm(len(labels), generator=generator)], 3)
        )
        for _ in range(50)
    ]
    assert observed > max(chance), (observed, max(chance))
    assert len(module.thresholds) == 3
