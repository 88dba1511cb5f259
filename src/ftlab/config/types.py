"""The one type check of config values against annotations (data, trainer, source fields)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from ftlab.errors import FtlabError


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` fits a simple annotation: a class, `X | None`, `list[X]` (bool is not an int here)."""
    if hint is Any:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_matches(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_types(values: Mapping[str, Any], hints: Mapping[str, Any], prefix: str = "data") -> None:
    """One clear error naming `<prefix>.<key>` when a value does not fit its annotation."""
    for key, value in values.items():
        if key in hints and not _matches(value, hints[key]):
            options = typing.get_args(hints[key]) or (hints[key],)
            expected = " or ".join(
                getattr(h, "__name__", str(h)).replace("NoneType", "null") for h in options
            )
            raise FtlabError(
                f"{prefix}.{key}={value!r} has the wrong type: expected {expected}, "
                f"got {type(value).__name__}."
            )


def check_field_types(source: Any, prefix: str = "data") -> None:
    """`check_types` over a dataclass instance's init fields."""
    values = {f.name: getattr(source, f.name) for f in dataclasses.fields(source) if f.init}
    check_types(values, typing.get_type_hints(type(source)), prefix)
