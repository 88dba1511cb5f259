"""Split any classifier into ordered, named stages (stem ... last block, pool) plus its head.

`split(model)` returns the model's own modules (never copies), grouped so that running the stages in order
and then the head gives exactly `model(x)`. Stage names are used by fine-tuning schedules, per-stage
learning rates, logs and the feature cache. Parameter-free glue that a model's `forward` does functionally
(flatten, global pooling, torchvision's `transform_input`) becomes small modules here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torchvision.models.swin_transformer import PatchMerging, PatchMergingV2

from ftlab.errors import FtlabError

Stages = OrderedDict[str, nn.Module]


class SpatialMean(nn.Module):
    """`x.mean([2, 3])`: global average pooling as mnasnet and shufflenet write it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean([2, 3])


class Call(nn.Module):
    """Wraps a bound method of the model (e.g. `_transform_input`) without registering the model again."""

    _fn: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        super().__init__()
        object.__setattr__(self, "_fn", fn)
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)

    def extra_repr(self) -> str:
        return self.name


class ViTEmbedding(nn.Module):
    """ViT input: patch projection, class token, position embedding and dropout (the model's own tensors)."""

    _process_input: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, vit: Any) -> None:
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout
        object.__setattr__(self, "_process_input", vit._process_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._process_input(x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class ClassToken(nn.Module):
    """The class-token row of a ViT sequence: `x[:, 0]`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def _seq(*modules: nn.Module) -> nn.Module:
    """One module for a run of modules (the module itself when there is one)."""
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def _downsamples(module: nn.Module) -> bool:
    """Whether a block lowers the spatial resolution (strided conv or pooling, or a patch merge)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and max(m.stride) > 1:
            return True
        if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            stride = m.stride if isinstance(m.stride, int) else max(m.stride)
            if stride > 1:
                return True
        if isinstance(m, PatchMerging | PatchMergingV2):
            return True
    return False


def _by_resolution(children: Iterable[nn.Module]) -> Stages:
    """Group blocks into one stage per feature resolution: a block that downsamples opens a new stage.

    The first group (up to the second downsampling block) is the `stem`; later groups are `stage1`, ...
    """
    groups: list[list[nn.Module]] = []
    seen_downsample = 0
    for child in children:
        if _downsamples(child):
            seen_downsample += 1
            if seen_downsample > 1 or not groups:
                groups.append([])
        elif not groups:
            groups.append([])
        groups[-1].append(child)
    names = ["stem"] + [f"stage{i}" for i in range(1, len(groups))]
    return OrderedDict((n, _seq(*g)) for n, g in zip(names, groups, strict=True))


def _tail(stages: Stages, pool: list[nn.Module], classifier: nn.Module | None) -> nn.Module:
    """Add the pooling glue and any pre-logits layers; return the final layer (the head)."""
    if isinstance(classifier, nn.Sequential):
        *pre, head = list(classifier)
        pre_params = [m for m in pre if any(True for _ in m.parameters())]
        if pre_params:
            stages["pool"] = _seq(*pool)
            stages["pre_logits"] = _seq(*pre)
        else:
            stages["pool"] = _seq(*pool, *pre)
        return head
    stages["pool"] = _seq(*pool)
    assert classifier is not None
    return classifier


def _resnet(model: Any) -> tuple[Stages, nn.Module]:
    stages: Stages = OrderedDict(stem=nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool))
    for name in ("layer1", "layer2", "layer3", "layer4"):
        stages[name] = getattr(model, name)
    return stages, _tail(stages, [model.avgpool, nn.Flatten(1)], model.fc)


def _regnet(model: Any) -> tuple[Stages, nn.Module]:
    stages: Stages = OrderedDict(stem=model.stem)
    for name, block in model.trunk_output.named_children():
        stages[name] = block
    return stages, _tail(stages, [model.avgpool, nn.Flatten(1)], model.fc)


def _googlenet(model: Any) -> tuple[Stages, nn.Module]:
    m = model
    stages: Stages = OrderedDict()
    stages["stem"] = nn.Sequential(
        Call(m._transform_input, "transform_input"), m.conv1, m.maxpool1, m.conv2, m.conv3, m.maxpool2
    )
    stages["inception3"] = nn.Sequential(m.inception3a, m.inception3b, m.maxpool3)
    stages["inception4"] = nn.Sequential(
        m.inception4a, m.inception4b, m.inception4c, m.inception4d, m.inception4e, m.maxpool4
    )
    stages["inception5"] = nn.Sequential(m.inception5a, m.inception5b)
    return stages, _tail(stages, [m.avgpool, nn.Flatten(1), m.dropout], m.fc)


def _inception_v3(model: Any) -> tuple[Stages, nn.Module]:
    m = model
    stages: Stages = OrderedDict()
    stages["stem"] = nn.Sequential(
        Call(m._transform_input, "transform_input"),
        m.Conv2d_1a_3x3,
        m.Conv2d_2a_3x3,
        m.Conv2d_2b_3x3,
        m.maxpool1,
        m.Conv2d_3b_1x1,
        m.Conv2d_4a_3x3,
        m.maxpool2,
    )
    stages["mixed5"] = nn.Sequential(m.Mixed_5b, m.Mixed_5c, m.Mixed_5d)
    stages["mixed6"] = nn.Sequential(m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e)
    stages["mixed7"] = nn.Sequential(m.Mixed_7a, m.Mixed_7b, m.Mixed_7c)
    return stages, _tail(stages, [m.avgpool, m.dropout, nn.Flatten(1)], m.fc)


def _shufflenet(model: Any) -> tuple[Stages, nn.Module]:
    m = model
    stages: Stages = OrderedDict(
        stem=nn.Sequential(m.conv1, m.maxpool),
        stage2=m.stage2,
        stage3=m.stage3,
        stage4=nn.Sequential(m.stage4, m.conv5),
    )
    return stages, _tail(stages, [SpatialMean()], m.fc)


def _features(model: Any) -> tuple[Stages, nn.Module]:
    """mobilenet v2/v3, efficientnet v1/v2 (and Lite), convnext, densenet, vgg, alexnet, squeezenet."""
    name = type(model).__name__
    stages = _by_resolution(model.features.children())
    if name == "SqueezeNet":  # the final conv is followed by ReLU, pooling and flatten
        dropout, conv, relu, pool = list(model.classifier)
        stages["pool"] = dropout
        return stages, nn.Sequential(conv, relu, pool, nn.Flatten(1))
    if name == "DenseNet":  # forward applies relu (not in place here: stage outputs may be cached)
        pool = [nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1)]
    elif name == "MobileNetV2":
        pool = [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1)]
    elif name == "ConvNeXt":  # its classifier flattens itself
        pool = [model.avgpool]
    else:
        pool = [model.avgpool, nn.Flatten(1)]
    return stages, _tail(stages, pool, model.classifier)


def _mnasnet(model: Any) -> tuple[Stages, nn.Module]:
    stages = _by_resolution(model.layers.children())
    return stages, _tail(stages, [SpatialMean()], model.classifier)


def _vit(model: Any) -> tuple[Stages, nn.Module]:
    stages: Stages = OrderedDict(stem=ViTEmbedding(model))
    for i, layer in enumerate(model.encoder.layers, start=1):
        stages[f"block{i}"] = layer
    stages["pool"] = nn.Sequential(model.encoder.ln, ClassToken())
    heads = list(model.heads.children())
    if len(heads) > 1:
        stages["pre_logits"] = _seq(*heads[:-1])
    return stages, heads[-1]


def _swin(model: Any) -> tuple[Stages, nn.Module]:
    stages = _by_resolution(model.features.children())
    return stages, _tail(stages, [model.norm, model.permute, model.avgpool, model.flatten], model.head)


def _maxvit(model: Any) -> tuple[Stages, nn.Module]:
    stages: Stages = OrderedDict(stem=model.stem)
    for i, block in enumerate(model.blocks, start=1):
        stages[f"stage{i}"] = block
    *rest, head = list(model.classifier)
    stages["pool"] = nn.Sequential(*rest[:3])
    stages["pre_logits"] = nn.Sequential(*rest[3:])
    return stages, head


SPLITTERS: dict[str, Callable[[nn.Module], tuple[Stages, nn.Module]]] = {
    "ResNet": _resnet,
    "RegNet": _regnet,
    "GoogLeNet": _googlenet,
    "Inception3": _inception_v3,
    "ShuffleNetV2": _shufflenet,
    "MobileNetV2": _features,
    "MobileNetV3": _features,
    "EfficientNet": _features,
    "EfficientNetLite": _features,
    "ConvNeXt": _features,
    "DenseNet": _features,
    "VGG": _features,
    "AlexNet": _features,
    "SqueezeNet": _features,
    "MNASNet": _mnasnet,
    "VisionTransformer": _vit,
    "SwinTransformer": _swin,
    "MaxVit": _maxvit,
}


def split(model: nn.Module) -> tuple[Stages, nn.Module]:
    """Ordered named stages and the head of `model`; stages then head compute exactly `model(x)`."""
    splitter = SPLITTERS.get(type(model).__name__)
    if splitter is None:
        raise FtlabError(
            f"ftlab does not know how to split {type(model).__name__} into stages. Add a splitter to "
            "ftlab.models.stages.SPLITTERS (one function returning the ordered stages and the head)."
        )
    if type(model).__name__ in ("GoogLeNet", "Inception3") and getattr(model, "aux_logits", False):
        raise FtlabError(
            f"{type(model).__name__} must be built with aux_logits=False to be split into stages."
        )
    return splitter(model)


def run_stages(stages: Stages, head: nn.Module, x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Run stages from index `start` on, then the head."""
    for stage in list(stages.values())[start:]:
        x = stage(x)
    return head(x)


class PooledFeatures(nn.Module):
    """A backbone's stages up to its pooled features (no pre-logits layers, no head), frozen in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        stages, _ = split(model)
        names = list(stages)
        end = names.index("pool") + 1 if "pool" in names else len(names)
        self.stages = nn.Sequential(*[stages[name] for name in names[:end]])
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(images).flatten(1)
