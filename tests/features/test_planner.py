"""The cache planner: from a schedule's phases alone (no training), which boundary each stretch caches."""

from __future__ import annotations

import pytest

from ftlab.features.planner import Segment, frozen_boundaries, plan
from ftlab.finetune.phases import Schedule
from ftlab.finetune.strategies import build_phases

STAGES = ["stem", "layer1", "layer2", "layer3", "layer4", "pool"]  # resnet18's stages; pool has no params
HAS_PARAMS = [True, True, True, True, True, False]
COSTS = [1.0, 4.0, 4.0, 4.0, 4.0, 0.0]  # forward cost per stage, shaped like resnet18's FLOPs
POOL, LAYER4_IN, LAYER3_IN, LAYER2_IN = 6, 4, 3, 2  # boundary b caches stages[:b]


def _plan(strategy: str, epochs: int = 10, views: int = 2, forced: bool = False, bn: str = "frozen", **kw):
    schedule = Schedule(build_phases(strategy, STAGES[:5], **kw), bn=bn)
    boundaries = frozen_boundaries(schedule, HAS_PARAMS, STAGES, epochs)
    return boundaries, plan(boundaries, views, COSTS, forced=forced)


def _spans(p) -> list[tuple[int, int, int, int | None]]:
    return [(s.start, s.stop, s.boundary, s.parent.boundary if s.parent else None) for s in p.segments]


def test_linear_probe_caches_pooled_features_once_for_the_whole_run():
    boundaries, p = _plan("linear_probe")
    assert boundaries == [POOL] * 10
    assert _spans(p) == [(0, 10, POOL, None)]


def test_full_and_bn_train_cache_nothing():
    assert _spans(_plan("full")[1]) == [] and _plan("full")[1].skipped == []
    assert _spans(_plan("linear_probe", bn="train")[1]) == []


def test_freeze_unfreeze_caches_the_head_only_epochs_only_where_it_pays():
    boundaries, train = _plan("freeze_unfreeze", unfreeze_at_epoch=2)
    assert boundaries == [POOL, POOL] + [0] * 8
    assert _spans(train) == [] and train.skipped == [Segment(0, 2, POOL)]  # 2 views for 2 epochs: no gain
    assert _spans(_plan("freeze_unfreeze", views=1, unfreeze_at_epoch=2)[1]) == [(0, 2, POOL, None)]  # val
    assert _spans(_plan("freeze_unfreeze", unfreeze_at_epoch=3)[1]) == [(0, 3, POOL, None)]
    assert _spans(_plan("freeze_unfreeze", forced=True, unfreeze_at_epoch=1)[1]) == [(0, 1, POOL, None)]


def test_a_cache_already_on_disk_is_used_even_for_one_epoch():
    schedule = Schedule(build_phases("freeze_unfreeze", STAGES[:5], unfreeze_at_epoch=1))
    boundaries = frozen_boundaries(schedule, HAS_PARAMS, STAGES, 10)
    assert plan(boundaries, 2, COSTS, forced=False).segments == []
    assert _spans(plan(boundaries, 2, COSTS, forced=False, free_from=[POOL])) == [(0, 1, POOL, None)]


def test_gradual_builds_once_below_the_moving_boundary_and_derives_a_deeper_cache_from_it():
    boundaries, train = _plan("gradual", every=1)
    assert boundaries == [POOL, LAYER4_IN, LAYER3_IN, LAYER2_IN, 1] + [0] * 5
    # stem+layer1 cached once for epochs 0-3 (layer2.. run on it); layer2's output derived for epochs 0-2
    assert _spans(train) == [(0, 4, LAYER2_IN, None), (0, 3, LAYER3_IN, LAYER2_IN)]
    assert train.segment(2) == train.segments[1] and train.segment(3) == train.segments[0]
    assert train.segment(4) is None and train.skipped == [Segment(4, 5, 1)]  # stem only: not worth 2 views


def test_last_stage_plus_head_caches_layer3_output_for_every_epoch():
    """The main-job recipe: layer4 + head train on cached layer3 activations from epoch 0 to the end."""
    for views in (1, 2):
        _, p = _plan("last_stages", views=views, top_k=1, unfreeze_at_epoch=0)
        assert _spans(p) == [(0, 10, LAYER4_IN, None)]
        _, p = _plan("last_stages", views=views, top_k=2, unfreeze_at_epoch=0)
        assert _spans(p) == [(0, 10, LAYER3_IN, None)]
    # one head-only epoch first: layer4 runs frozen on the layer3 cache, nothing is built twice
    _, p = _plan("last_stages", top_k=1, unfreeze_at_epoch=1)
    assert _spans(p) == [(0, 10, LAYER4_IN, None)]


@pytest.mark.parametrize("views", [1, 2])
def test_pooled_features_of_head_only_epochs_are_derived_from_the_layer3_cache(views):
    _, p = _plan(
        "custom",
        views=views,
        phases=[{"at_epoch": 0, "trainable": "none"}, {"at_epoch": 3, "trainable": "top-1"}],
    )
    assert _spans(p) == [(0, 10, LAYER4_IN, None), (0, 3, POOL, LAYER4_IN)]


def test_custom_phases_cache_until_everything_trains():
    phases = [
        {"at_epoch": 0, "trainable": "none"},
        {"at_epoch": 1, "trainable": "top-2"},
        {"at_epoch": 3, "trainable": "all"},
    ]
    boundaries, train = _plan("custom", phases=phases)
    assert boundaries == [POOL, LAYER3_IN, LAYER3_IN] + [0] * 7
    assert _spans(train) == [(0, 3, LAYER3_IN, None)]
    # a stage that trains first and is frozen later: its cache starts only once it stops training
    phases = [{"at_epoch": 0, "trainable": "top-1"}, {"at_epoch": 2, "trainable": "none"}]
    assert _spans(_plan("custom", views=1, phases=phases)[1]) == [
        (0, 10, LAYER4_IN, None),
        (2, 10, POOL, LAYER4_IN),
    ]
