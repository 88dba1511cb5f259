"""Image sources: one module per source, the registry, and what every source provides."""

from ftlab.data.sources.base import Asset, Source
from ftlab.data.sources.registry import SOURCES

__all__ = ["SOURCES", "Asset", "Source"]
