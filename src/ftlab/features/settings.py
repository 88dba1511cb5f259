"""`features=`: where and how the frozen-prefix activations are kept."""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.config.registry import register
from ftlab.errors import FtlabError, did_you_mean

CACHE_MODES = ("auto", "off", "memory", "disk")
CACHE_DTYPES = ("auto", "float16", "bfloat16", "float32")  # auto: float32 when it fits max_memory_gb


@register("features", "settings")
@dataclass
class CacheSettings:
    """Cache of frozen-prefix activations, planned once from the schedule: each image runs the frozen stages
    once."""

    # auto | off | memory | disk (auto: where it pays; memory within max_memory_gb, else disk)
    cache: str = "auto"
    dtype: str = "auto"  # auto | float16 | bfloat16 | float32 (auto: float32 when it fits max_memory_gb)
    views: int | None = None  # augmented views cached per training image (null: 2 for hflip, 1 for none)
    max_memory_gb: float = 4.0  # memory budget; beyond it auto goes to disk (or no cache, logged)
    dir: str | None = None  # disk cache folder; null = <paths.data_dir>/.ftlab_features (shared across runs)

    def __post_init__(self) -> None:
        for key, value, options in (("cache", self.cache, CACHE_MODES), ("dtype", self.dtype, CACHE_DTYPES)):
            if value not in options:
                raise FtlabError(
                    f"features.{key}={value!r} is not one of {', '.join(options)}."
                    f"{did_you_mean(value, options)}"
                )
        if self.views is not None and self.views < 1:
            raise FtlabError(f"features.views={self.views} must be >= 1, or null (2 for hflip, 1 for none).")
        if self.max_memory_gb < 0:
            raise FtlabError(f"features.max_memory_gb={self.max_memory_gb} must be >= 0.")
