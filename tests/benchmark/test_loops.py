"""The hand-written loop optimises exactly what ftlab optimises: same LR and weight decay per parameter."""

from __future__ import annotations

from ftlab.benchmark.loops import ftlab_module, hand_param_groups
from ftlab.benchmark.settings import LR, WEIGHT_DECAY, Settings
from ftlab.models.backbones import build


def _per_parameter(named: dict[int, str], groups: list[dict]) -> dict[str, tuple[float, float]]:
    return {named[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_hand_loop_param_groups_equal_ftlabs():
    s = Settings("cpu", "32-true", False, 8, 32, 4, 1, 1)
    module = ftlab_module("resnet18", s)
    ours = module.configure_optimizers()
    hand_model = build("resnet18", None, 3).model
    hand = hand_param_groups(hand_model, LR, WEIGHT_DECAY)
    ftlab_settings = _per_parameter({id(p): n for n, p in module.net.named_parameters()}, ours.param_groups)
    hand_settings = _per_parameter({id(p): n for n, p in hand_model.named_parameters()}, hand)
    assert len(ours.param_groups) > 2  # ftlab's per-stage groups, against the hand loop's two
    assert ftlab_settings == hand_settings
    assert hand_settings["layer1.0.conv1.weight"] == (LR, WEIGHT_DECAY)
    assert hand_settings["layer1.0.bn1.weight"] == (LR, 0.0)
