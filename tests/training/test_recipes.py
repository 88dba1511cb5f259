"""Recipe options in the composed config become the right callbacks and loss arguments (no training)."""

from __future__ import annotations

import pytest

from ftlab.callbacks.early_stopping import PhaseAwareEarlyStopping
from ftlab.callbacks.ema import EMA
from ftlab.callbacks.lr_finder import LRFinderCallback
from ftlab.errors import FtlabError
from ftlab.finetune.phases import Phase, Schedule
from ftlab.training.recipes import loss_options, recipe_callbacks

SCHEDULE = Schedule([Phase(0, frozenset())])


def test_recipes_are_off_by_default(compose_cfg):
    cfg = compose_cfg(["+experiment=smoke"])
    assert recipe_callbacks(cfg, SCHEDULE) == []
    assert loss_options(cfg) == {"label_smoothing": 0.0, "class_weights": None}
    assert cfg.data.augment == "hflip" and cfg.data.sampler == "random" and cfg.data.mixup_alpha == 0.0


def test_recipe_options_build_their_callbacks(compose_cfg):
    cfg = compose_cfg(
        [
            "+experiment=smoke",
            "early_stopping.patience=2",
            "ema.decay=0.998",
            "finetune.lr_find=true",
            "loss.class_weights=[1,2,3]",
        ]
    )
    callbacks = recipe_callbacks(cfg, SCHEDULE)
    assert [type(c) for c in callbacks] == [PhaseAwareEarlyStopping, LRFinderCallback, EMA]
    assert callbacks[0].patience == 2 and callbacks[2].decay == 0.998
    assert loss_options(cfg)["class_weights"] == [1.0, 2.0, 3.0]


def test_wrong_recipe_types_are_one_clear_error(compose_cfg):
    cfg = compose_cfg(["+experiment=smoke", "ema.decay=fast"])
    with pytest.raises(FtlabError, match=r"Value 'fast'.*full key: ema.decay"):
        recipe_callbacks(cfg, SCHEDULE)
