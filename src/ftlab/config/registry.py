"""Typed settings by group and name: one registration per concept.

A package declares its settings as a dataclass (defaults and a one-line comment per field, written once)
and registers it with `@register(group, name)`. The dataclass is stored in Hydra's ConfigStore as
`ftlab_schema/<group>/<name>`, which the group's YAML extends (`- /ftlab_schema/<group>/<name>@_here_` in
its defaults list), so Hydra composes a typed node: the YAML can only set fields that exist, with values of
the right type, and leaves every other default to the dataclass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore

from ftlab.errors import FtlabError, did_you_mean

SCHEMA_ROOT = "ftlab_schema"
T = TypeVar("T")

_REGISTRY: dict[str, dict[str, type]] = {}


def register(group: str, name: str) -> Any:
    """Class decorator: `cls` is the settings type of `<group>=<name>` (stored in Hydra's ConfigStore)."""

    def decorate(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass to be registered as settings")
        _REGISTRY.setdefault(group, {})[name] = cls
        ConfigStore.instance().store(group=f"{SCHEMA_ROOT}/{group}", name=name, node=cls)
        cls.__ftlab_settings__ = (group, name)  # type: ignore[attr-defined]
        return cls

    return decorate


def registered(group: str) -> dict[str, type]:
    """Every settings type registered under `group`, by name (registration order)."""
    return dict(_REGISTRY.get(group, {}))


def groups() -> list[str]:
    """The groups that have registered settings."""
    return list(_REGISTRY)


def settings_type(group: str, name: str, key: str) -> type:
    """The settings type of `<group>=<name>`; `key` names the config key in the error (e.g. data.source)."""
    options = _REGISTRY.get(group, {})
    if name not in options:
        raise FtlabError(
            f"{key}={name!r} is not one of ftlab's {group} options.{did_you_mean(str(name), options)} "
            f"Available: {', '.join(options)}."
        )
    return options[name]


def registered_name(cls: type) -> tuple[str, str] | None:
    """(group, name) under which `cls` itself was registered (not a base class it derives from)."""
    return cls.__dict__.get("__ftlab_settings__")
