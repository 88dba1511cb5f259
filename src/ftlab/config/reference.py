"""The configuration reference, generated from the registered settings types (their fields, types, defaults
and one-line comments), so it cannot go stale: `docs/reference/configuration.md` is built from
`markdown()`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any

from ftlab.config.registry import SCHEMA_ROOT, groups, registered

FIELD = re.compile(r"^\s+(\w+)\s*:")


@functools.cache
def _class_comments(cls: type) -> dict[str, str]:
    """name -> comment of the annotated fields written in `cls`'s own body: the comment at the end of the
    field's line, or the comment lines right above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    above: list[str] = []
    lines = source.splitlines()
    trailing: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            trailing[token.start[0]] = token.string.lstrip("#").strip()
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = FIELD.match(line)
        if match and line.startswith("    ") and not line.startswith("     "):
            own = re.sub(r"^type: ignore(\[[\w-]+\])?\s*#?\s*", "", trailing.get(number, ""))
            text = own or " ".join(above)
            if text:
                comments[match.group(1)] = text
        above = []
    return comments


def field_comments(cls: type) -> dict[str, str]:
    """name -> one-line description of every field of the settings type `cls` (own body, bases, and for a
    data source's settings the source dataclass it was derived from)."""
    comments: dict[str, str] = {}
    owners = [*reversed(cls.__mro__), getattr(cls, "source_class", None)]
    for owner in owners:
        if owner is not None and owner is not object:
            comments.update(_class_comments(owner))
    return comments


def _type_text(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    text = text or str(hint).replace("typing.", "")
    return text.replace("NoneType", "null")


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(group)"
    else:
        return "required"
    if value == "???":
        return "required"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return "null" if value is None else f"`{value!r}`".replace("'", "")


def table(cls: type, prefix: str = "") -> str:
    """A Markdown table of the fields of settings type `cls`, keys written as `<prefix><field>`."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows = ["| key | type | default | what it does |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        description = comments.get(f.name, "").replace("|", "\\|")
        type_text = _type_text(hints[f.name]).replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | {type_text} | {_default_text(f)} | {description} |")
    return "\n".join(rows)


def markdown() -> str:
    """The whole reference: every registered group and command, each option with its table."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra imports its plugins; hydra_plugins.ftlab_settings registers the settings
    parts: list[str] = []
    order = ["command", *sorted(g for g in groups() if g != "command")]
    for group in order:
        options = registered(group)
        title = "Commands (top-level keys)" if group == "command" else f"`{group}`"
        parts.append(f"## {title}\n")
        for name, cls in options.items():
            heading = f"`python -m ftlab.{name}`" if group == "command" else f"`{group}={name}`"
            if name == "settings":
                heading = f"`{group}`"
            prefix = "" if group == "command" else f"{group}."
            doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
            parts.append(
                f"### {heading}\n\n{doc}\n\nSettings type: `{cls.__module__}.{cls.__qualname__}` "
                f"(schema `/{SCHEMA_ROOT}/{group}/{name}`).\n\n{table(cls, prefix)}\n"
            )
    return "\n".join(parts)
