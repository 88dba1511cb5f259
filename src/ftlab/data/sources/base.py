"""What every image source provides: class names, a train/val split, the files it needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ftlab.data.datasets import LabeledImages


class Source(Protocol):
    """What the DataModule needs from a source."""

    classes: list[str]
    fixed_size: bool  # every image has the same stored size, so batches can be resized on the device

    def load(self) -> tuple[LabeledImages, LabeledImages]: ...

    def assets(self) -> list[Asset]: ...


@dataclass
class Asset:
    """A file an experiment needs, where it goes, and how to get it."""

    description: str
    path: Path
    url: str | None
    present: bool
    fetch: Callable[[], None] | None = None
