"""Hydra command-line overrides as key -> value: the one parser (run reports, the HParams tab)."""

from __future__ import annotations

from collections.abc import Iterable


def parse_overrides(lines: Iterable[object]) -> dict[str, str]:
    """Override strings (`key=value`, `+key=value`, `++key=value`, `~key`) as key -> value ('' for `~key`)."""
    parsed: dict[str, str] = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed
