"""`split(model)`: for every classifier, stages then head compute exactly `model(x)` with the same modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ftlab.errors import FtlabError
from ftlab.models import get_model, get_model_weights, list_models
from ftlab.models.backbones import AUX_LOGIT_MODELS
from ftlab.models.stages import run_stages, split

# Seconds each on 2 CPU cores: exercised by `make test-full`.
HEAVY = {
    "vit_h_14",
    "vit_l_16",
    "vit_l_32",
    "swin_v2_b",
    "swin_v2_s",
    "swin_b",
    "swin_s",
    "regnet_y_128gf",
    "efficientnet_v2_l",
    "regnet_y_32gf",
    "regnet_x_32gf",
    "convnext_large",
    "convnext_base",
    "resnext101_64x4d",
    "resnext101_32x8d",
    "wide_resnet101_2",
    "regnet_y_16gf",
    "regnet_x_16gf",
    "efficientnet_b7",
    "efficientnet_b6",
    "efficientnet_v2_m",
    "vgg19_bn",
    "vgg16_bn",
}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_models()]


def smallest_input(name: str) -> int:
    """The smallest square side the model accepts (ViT and MaxViT need their native 224)."""
    if name.startswith(("vit_", "maxvit")):
        return 224
    return max(get_model_weights(name).DEFAULT.meta.get("min_size", (1, 1)))


@pytest.mark.parametrize("name", MODELS)
def test_stages_then_head_equal_the_model(name):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False} if name in AUX_LOGIT_MODELS else {}
    model = get_model(name, weights=None, **kwargs).eval()
    stages, head = split(model)
    assert list(stages)[0] == "stem" and len(stages) >= 3
    model_modules = {id(m) for m in model.modules()}
    stage_params = [p for s in stages.values() for p in s.parameters()] + list(head.parameters())
    assert {id(p) for p in stage_params} == {id(p) for p in model.parameters()}  # the same tensors, no copies
    assert len(stage_params) == len({id(p) for p in stage_params})  # each parameter in one place
    assert id(head) in model_modules or all(
        id(m) in model_modules for m in head.children() if any(True for _ in m.parameters())
    )
    side = smallest_input(name)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(run_stages(stages, head, x), model(x), rtol=0, atol=0)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(FtlabError, match="SPLITTERS"):
        split(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
