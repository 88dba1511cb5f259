"""Recipe options in the composed config become the right callbacks and loss settings (no training)."""

from __future__ import annotations

import pytest
import torch

from ftlab.callbacks.early_stopping import PhaseAwareEarlyStopping
from ftlab.callbacks.ema import EMA
from ftlab.callbacks.lr_finder import LRFinderCallback
from ftlab.config.check import check_command_line
from ftlab.errors import FtlabError
from ftlab.finetune.phases import Phase, Schedule
from ftlab.models.loss import LossSettings
from ftlab.models.module import Classifier
from ftlab.training.recipes import recipe_callbacks
from ftlab.training.settings import load_settings

SCHEDULE = Schedule([Phase(0, frozenset())])


def test_recipes_are_off_by_default(compose_cfg):
    settings = load_settings(compose_cfg(["+experiment=smoke"]))
    assert recipe_callbacks(settings, SCHEDULE) == []
    assert settings.loss == LossSettings(label_smoothing=0.0, class_weights=None)
    data = settings.data
    assert data.augment == "hflip" and data.sampler == "random" and data.mixup_alpha == 0.0


def test_recipe_options_build_their_callbacks(compose_cfg):
    cfg = compose_cfg(
        [
            "+experiment=smoke",
            "early_stopping.patience=2",
            "ema.decay=0.998",
            "finetune.lr_find=true",
            "loss.class_weights=[1,2,3]",
            "loss.label_smoothing=0.1",
        ]
    )
    settings = load_settings(cfg)
    callbacks = recipe_callbacks(settings, SCHEDULE)
    assert [type(c) for c in callbacks] == [PhaseAwareEarlyStopping, LRFinderCallback, EMA]
    assert callbacks[0].patience == 2 and callbacks[2].decay == 0.998
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, loss=settings.loss)
    assert module.criterion.label_smoothing == 0.1
    assert torch.equal(module.criterion.weight, torch.tensor([1.0, 2.0, 3.0]))


def test_wrong_recipe_types_are_one_clear_error():
    with pytest.raises(FtlabError, match=r"ema.decay='fast' has the wrong type: expected float or null"):
        check_command_line("train", ["+experiment=smoke", "ema.decay=fast"])
    with pytest.raises(FtlabError, match=r"loss.class_weights='often': give null, auto or a list"):
        LossSettings(class_weights="often")
    with pytest.raises(FtlabError, match=r"loss.class_weights=\['1', 'x'\]: every weight must be a number"):
        LossSettings(class_weights=["1", "x"])
