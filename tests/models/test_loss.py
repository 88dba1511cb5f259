"""Loss options: label smoothing and class weights against the formulas, soft targets, and a run with
every recipe switched on through the real config."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from ftlab.errors import FtlabError
from ftlab.models.loss import dominant_label, loss_weights
from ftlab.models.module import Classifier
from ftlab.training.run import train
from tests.helpers.cli import TINY


def _classifier(**kwargs) -> Classifier:
    return Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=32, **kwargs)


def test_label_smoothing_and_soft_targets_match_the_formula():
    module = _classifier(label_smoothing=0.1)
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    soft = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    smoothed = 0.9 * soft + 0.1 / 3
    expected = -(smoothed * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(module.criterion(logits, soft), expected)


def test_auto_class_weights_are_sklearns_balanced_weights():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    weights = loss_weights("auto", torch.as_tensor(labels), 3)
    assert weights is not None
    torch.testing.assert_close(weights, torch.as_tensor(expected, dtype=torch.float32))


def test_listed_class_weights_weight_the_mean():
    module = _classifier(class_weights=[1.0, 2.0, 0.5])
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 1, 0])
    w = torch.tensor([1.0, 2.0, 0.5])[labels]
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(5), labels]
    torch.testing.assert_close(module.criterion(logits, labels), (w * nll).sum() / w.sum())
    assert not any("criterion" in key for key in module.state_dict())  # checkpoints keep their keys


def test_bad_class_weights_are_one_clear_error():
    with pytest.raises(FtlabError, match="3 non-negative weights"):
        _classifier(class_weights=[1.0, 2.0])
    with pytest.raises(FtlabError, match="loss.class_weights='inverse'"):
        _classifier(class_weights="inverse")


def test_dominant_label_of_soft_targets():
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.45, 0.55]])
    assert dominant_label(soft).tolist() == [0, 2]
    assert dominant_label(torch.tensor([2, 1])).tolist() == [2, 1]


def test_every_recipe_on_through_the_config(compose_cfg, caplog):
    cfg = compose_cfg(
        [
            "+experiment=smoke",
            *TINY,
            "debug=fast",
            "logger=csv",
            "loss.label_smoothing=0.1",
            "loss.class_weights=auto",
            "data.augment=[hflip,randaugment,random_resized_crop]",
            "data.mixup_alpha=0.2",
            "data.cutmix_alpha=1.0",
            "data.sampler=balanced",
            "ema.decay=0.9",
            "early_stopping.patience=3",
        ]
    )
    with caplog.at_level(logging.INFO, logger="ftlab.features.cache"):
        metrics, objects = train(cfg)
    assert np.isfinite(metrics["train/loss"]) and "train/acc" in metrics
    module, datamodule = objects["module"], objects["datamodule"]
    labels = datamodule.raw_labels("train").numpy()
    expected = compute_class_weight("balanced", classes=np.unique(labels), y=labels)
    torch.testing.assert_close(module.criterion.weight, torch.as_tensor(expected, dtype=torch.float32))
    names = {type(c).__name__ for c in objects["trainer"].callbacks}
    assert {"EMA", "PhaseAwareEarlyStopping"} <= names
    assert "train not cached" in caplog.text  # random augmentation: training never served from the cache
