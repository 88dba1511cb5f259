"""Build a backbone by name with a fresh head for `num_classes` and the preprocessing its weights expect."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import WeightsEnum

from ftlab.config.registry import register
from ftlab.data.preprocessing import Preprocessing
from ftlab.errors import FtlabError, did_you_mean
from ftlab.models import registry

# Where torchvision families keep their classifier, tried in order: resnet/regnet/googlenet/inception
# (fc), mobilenet/efficientnet/mnasnet/convnext/vgg/alexnet/densenet/squeezenet/maxvit (classifier),
# vit (heads.head), swin (head).
HEAD_PATHS = ("fc", "classifier", "heads.head", "head")
# Families whose auxiliary training heads ftlab drops: they would need their own classes and loss.
AUX_LOGIT_MODELS = ("googlenet", "inception_v3")


@register("model", "settings")
@dataclass
class ModelSettings:
    """`model=<name>`: which backbone, with which weights."""

    # any name from ftlab.models.list_models() (torchvision classifiers, efficientnet_lite0/1/2)
    backbone: str = "???"
    weights: str | None = "DEFAULT"  # weights enum member, null (random init) or a path to a state dict
    # momentum of every BatchNorm layer, e.g. 0.1; null = what the weights had
    bn_momentum: float | None = None

    def __post_init__(self) -> None:
        if self.bn_momentum is not None and not 0.0 <= self.bn_momentum <= 1.0:
            raise FtlabError(f"model.bn_momentum={self.bn_momentum} must be between 0 and 1, or null.")


@dataclass
class Backbone:
    """A classifier with a fresh head, the head's dotted name and the preprocessing to feed it."""

    model: nn.Module
    head_name: str
    preprocessing: Preprocessing
    weights_id: str | None


def check_name(name: str) -> None:
    """Raise a clear error for a backbone name that neither torchvision nor ftlab knows."""
    names = registry.list_models()
    if name not in names:
        raise FtlabError(
            f"Unknown backbone model.backbone={name!r}.{did_you_mean(name, names)} "
            f"Any torchvision classification model works ({len(names)} names: "
            "`python -c 'import ftlab.models as m; print(m.list_models())'`)."
        )


def resolve_weights(name: str, weights: str | None) -> WeightsEnum | Path | None:
    """Turn `model.weights` (enum member name, `Enum.MEMBER`, a state-dict path, or None) into an object."""
    if weights is None or str(weights).lower() in ("none", "null"):
        return None
    check_name(name)
    enum = registry.get_model_weights(name)
    member = str(weights).split(".")[-1]
    if member in enum.__members__:
        return enum[member]
    path = Path(str(weights)).expanduser()
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt") or path.exists():
        if not path.is_file():
            raise FtlabError(
                f"model.weights={weights!r}: no such file. Give an existing state-dict file, "
                f"a weights name ({', '.join(enum.__members__)}), or null for random init."
            )
        return path
    raise FtlabError(
        f"Unknown weights model.weights={weights!r} for {name}.{did_you_mean(member, enum.__members__)} "
        f"Valid: {', '.join(enum.__members__)}, null (random init), or a path to a state-dict file."
    )


def weights_id(weights: WeightsEnum | Path | None) -> str | None:
    """A readable id stored in checkpoints, e.g. 'ResNet18_Weights.IMAGENET1K_V1'."""
    if weights is None:
        return None
    if isinstance(weights, Path):
        return str(weights)
    return f"{type(weights).__name__}.{weights.name}"


def _builder_kwargs(name: str) -> dict[str, Any]:
    return {"aux_logits": False} if name in AUX_LOGIT_MODELS else {}


def _load_state_dict_file(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FtlabError(f"model.weights={str(path)!r} could not be read as a state dict: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    hint = "It must be a state dict of the original model (e.g. the file torchvision downloads)."
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = str(err).splitlines()[1:3]
        raise FtlabError(
            f"model.weights={str(path)!r} does not match the architecture: {detail}. {hint}"
        ) from err
    if result.missing_keys or result.unexpected_keys:
        raise FtlabError(
            f"model.weights={str(path)!r} does not match the architecture: missing keys "
            f"{result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}. {hint}"
        )


def find_head(model: nn.Module) -> str:
    """Dotted name of the final classification layer (a Linear, or squeezenet's 1x1 Conv2d)."""
    for path in HEAD_PATHS:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, nn.Linear | nn.Conv2d):
            return path
        if isinstance(module, nn.Sequential):
            for idx in reversed(range(len(module))):
                if isinstance(module[idx], nn.Linear | nn.Conv2d):
                    return f"{path}.{idx}"
    raise FtlabError(
        f"Cannot find the classifier of {type(model).__name__}: none of {', '.join(HEAD_PATHS)} "
        "holds a Linear layer. Register the backbone with its head path."
    )


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the final layer for a freshly initialised one with `num_classes` outputs; return its name."""
    path = find_head(model)
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = model.get_submodule(path)
    new: nn.Module
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        assert isinstance(old, nn.Conv2d)
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size)  # type: ignore[arg-type]
    setattr(parent, attr, new)  # Sequential children are attributes too ("1" or "head")
    return path


def default_preprocessing(name: str) -> Preprocessing:
    """Preprocessing of the backbone's DEFAULT weights (used for random init and local files too)."""
    return Preprocessing.from_weights(registry.get_model_weights(name).DEFAULT)


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Give every BatchNorm layer of `model` the running-statistics `momentum` (`model.bn_momentum`).

    Checkpoints come with their own (EfficientNet-Lite0's ImageNet weights: 0.01, TF's decay 0.99); a fair
    comparison with a random init, whose statistics must move fast, sets one value for both.
    """
    if not 0.0 <= momentum <= 1.0:
        raise FtlabError(
            f"model.bn_momentum={momentum}: give a value in [0, 1] (or null for the model's own)."
        )
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def build(name: str, weights: str | None, num_classes: int) -> Backbone:
    """Build `name` with `weights` and a fresh `num_classes` head."""
    check_name(name)
    resolved = resolve_weights(name, weights)
    kwargs = _builder_kwargs(name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*init_weights.*", category=FutureWarning)
        try:
            model = registry.get_model(
                name, weights=resolved if isinstance(resolved, WeightsEnum) else None, **kwargs
            )
        except (OSError, RuntimeError) as err:  # download or hub cache failures
            raise FtlabError(
                f"Could not load weights {weights_id(resolved)} for {name}: {err}. Run "
                "`python -m ftlab.prepare` on a connected machine and copy the file into the torch hub "
                "cache, or set model.weights=null."
            ) from err
    if isinstance(resolved, Path):
        _load_state_dict_file(model, resolved)
    head = replace_head(model, num_classes)
    prep = (
        Preprocessing.from_weights(resolved)
        if isinstance(resolved, WeightsEnum)
        else default_preprocessing(name)
    )
    return Backbone(model=model, head_name=head, preprocessing=prep, weights_id=weights_id(resolved))
