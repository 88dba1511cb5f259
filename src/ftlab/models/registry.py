"""One namespace for classification models: torchvision's, plus the backbones ftlab adds.

`get_model`, `get_model_weights` and `list_models` behave like torchvision's functions of the same
names and pass every torchvision name through to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torchvision
from torch import nn
from torchvision.models import WeightsEnum

_EXTRA: dict[str, tuple[Callable[..., nn.Module], type[WeightsEnum]]] = {}


def register(name: str, builder: Callable[..., nn.Module], weights_enum: type[WeightsEnum]) -> None:
    """Make a non-torchvision backbone available under `name`."""
    _EXTRA[name] = (builder, weights_enum)


def _load_extras() -> None:
    """Import ftlab's own backbones so they register themselves."""
    import contextlib
    import importlib

    for module in ("ftlab.models.efficientnet_lite",):
        with contextlib.suppress(ImportError):  # an optional backbone whose module is absent stays unlisted
            importlib.import_module(module)


def list_models() -> list[str]:
    """Names of every classification backbone: torchvision's and ftlab's, sorted."""
    _load_extras()
    names = set(torchvision.models.list_models(module=torchvision.models)) | set(_EXTRA)
    return sorted(names)


def get_model_weights(name: str) -> type[WeightsEnum]:
    """The weights enum of backbone `name`."""
    _load_extras()
    if name in _EXTRA:
        return _EXTRA[name][1]
    return torchvision.models.get_model_weights(name)


def get_model(name: str, **config: Any) -> nn.Module:
    """Build backbone `name` (`weights=...` and builder keyword arguments as in torchvision)."""
    _load_extras()
    if name in _EXTRA:
        return _EXTRA[name][0](**config)
    return torchvision.models.get_model(name, **config)
