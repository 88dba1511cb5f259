"""Backbones: head replacement for every family, weights resolution, preprocessing from the weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from ftlab.data.preprocessing import Preprocessing
from ftlab.data.transforms import preprocess
from ftlab.errors import FtlabError
from ftlab.models import list_models
from ftlab.models.backbones import build, find_head, replace_head, resolve_weights
from tests.helpers.assets import write_fake_hub_weights

# One model of every torchvision classification family.
FAMILIES = [
    "resnet18",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "regnet_x_400mf",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "mnasnet0_5",
    "convnext_tiny",
    "densenet121",
    "vgg11",
    "alexnet",
    "squeezenet1_0",
    "shufflenet_v2_x0_5",
    "googlenet",
    "inception_v3",
    "vit_b_16",
    "swin_t",
    "maxvit_t",
]


def _input_size(name: str) -> int:
    min_size = torchvision.models.get_model_weights(name).DEFAULT.meta.get("min_size", (32, 32))
    return max(64, *min_size) if name not in ("vit_b_16", "maxvit_t", "swin_t") else 224


@pytest.mark.parametrize("name", FAMILIES)
def test_new_head_is_the_final_layer(name):
    """Seed the new 3-class head with 3 rows of the old head: outputs must equal the old logits' columns."""
    torch.manual_seed(0)
    kwargs = {"aux_logits": False} if name in ("googlenet", "inception_v3") else {}
    original = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    model = copy.deepcopy(original)
    old_head = model.get_submodule(find_head(model))
    head_name = replace_head(model, 3)
    new_head = model.get_submodule(head_name)
    assert new_head is not old_head
    out_features = new_head.out_features if isinstance(new_head, nn.Linear) else new_head.out_channels
    assert out_features == 3
    with torch.no_grad():
        new_head.weight.copy_(old_head.weight[:3])
        if old_head.bias is not None:  # maxvit's final Linear has none
            new_head.bias.copy_(old_head.bias[:3])
        x = torch.randn(2, 3, _input_size(name), _input_size(name))
        torch.testing.assert_close(model.eval()(x), original(x)[:, :3])


def test_build_random_init_gives_num_classes_and_preprocessing():
    backbone = build("mobilenet_v3_small", None, num_classes=5)
    assert backbone.weights_id is None
    out = backbone.model.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 5)
    ref = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.transforms()
    assert (
        backbone.preprocessing.mean == tuple(ref.mean)
        and backbone.preprocessing.crop_size == ref.crop_size[0]
    )


def test_weights_names_resolve_and_unknowns_suggest():
    assert resolve_weights("resnet18", "DEFAULT") is torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert resolve_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V2").name == "IMAGENET1K_V2"
    assert resolve_weights("resnet18", None) is None
    with pytest.raises(FtlabError, match=r"IMAGENET1K_V3.*IMAGENET1K_V1"):
        resolve_weights("resnet18", "IMAGENET1K_V3")
    with pytest.raises(FtlabError, match=r"resnet181.*resnet18"):
        build("resnet181", None, 3)
    with pytest.raises(FtlabError, match="no such file"):
        resolve_weights("resnet18", "/nonexistent/weights.pth")


def test_every_torchvision_classifier_is_listed():
    names = list_models()
    assert set(torchvision.models.list_models(module=torchvision.models)) <= set(names)


def test_hub_cache_weights_load_without_network(torch_home):
    """A state dict saved under torchvision's cache file name is what `IMAGENET1K_V1` loads."""
    path = write_fake_hub_weights(torch_home)
    saved = torch.load(path, weights_only=True)
    backbone = build("resnet18", "IMAGENET1K_V1", num_classes=3)
    torch.testing.assert_close(backbone.model.conv1.weight, saved["conv1.weight"])
    assert backbone.weights_id == "ResNet18_Weights.IMAGENET1K_V1"
    assert backbone.model.fc.out_features == 3


def test_local_state_dict_file(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "my_resnet.pth"
    torch.save(reference.state_dict(), path)
    backbone = build("resnet18", str(path), num_classes=2)
    torch.testing.assert_close(backbone.model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(FtlabError, match="does not match the architecture"):
        build("resnet18", str(tmp_path / "bad.pth"), num_classes=2)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "vit_b_16", "convnext_tiny"])
def test_preprocessing_matches_torchvision_transforms(name):
    """On an image larger than the crop, ftlab's tensor pipeline equals the weights' own transforms."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    rng = np.random.default_rng(0)
    # Smooth image, so resampling differences between PIL and tensors stay small.
    base = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((400, 300), Image.BILINEAR)
    expected = weights.transforms()(image)
    tensor = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)
    got = preprocess(tensor, Preprocessing.from_weights(weights))
    assert got.shape == expected.shape
    assert (got - expected).abs().mean() < 0.02


def test_small_source_is_resized_whole_to_the_crop():
    prep = Preprocessing.from_weights(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    cifar_like = torch.zeros(3, 32, 32, dtype=torch.uint8)
    cifar_like[:, :, :2] = 255  # a bright left border that a centre crop would cut away
    out = preprocess(cifar_like, prep)
    assert out.shape == (3, 224, 224)
    assert out[:, :, 0].mean() > 2.0  # border still there after resizing whole
    assert prep.at_size(64).crop_size == 64 and prep.at_size(64).resize_size == round(64 * 256 / 224)
