"""The cache benchmark compares equal work: both arms end with the same weights, and its end-to-end
window holds the cache build while the steady-state epochs do not."""

from __future__ import annotations

import time

import torch

from ftlab.benchmark.cache import cache_benchmark
from ftlab.benchmark.settings import Settings
from ftlab.features.cache import FeatureCache

BUILD_DELAY = 1.5  # seconds a slow cache adds to its first training loader


class SlowFirstBuild(FeatureCache):
    """A real cache whose first training loader takes BUILD_DELAY longer, like an expensive build."""

    made: list[SlowFirstBuild] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delayed = False
        SlowFirstBuild.made.append(self)

    def loader(self, split, epoch, epochs):
        if split == "train" and not self.delayed:
            self.delayed = True
            time.sleep(BUILD_DELAY)
        return super().loader(split, epoch, epochs)


def test_cache_benchmark_same_model_and_build_in_end_to_end_window():
    s = Settings(
        "cpu", "32-true", False, 8, 32, 4, 1, repeats=1, cache_images=24, cache_image_size=32, cache_epochs=3
    )
    result = cache_benchmark(s, torch.device("cpu"), factory=SlowFirstBuild)
    cache = result["cache"]
    assert SlowFirstBuild.made and SlowFirstBuild.made[-1].entries  # the memory arm really cached
    assert cache["final_weight_max_diff"] < 1e-5
    # the delay lands in the end-to-end figure (first epoch), not in the steady-state epochs
    assert cache["first_epoch_s"]["memory"] >= BUILD_DELAY
    assert (
        cache["end_to_end_s"]["memory"]
        >= BUILD_DELAY + (s.cache_epochs - 1) * cache["steady_epoch_s"]["memory"] * 0.99
    )
    assert cache["steady_epoch_s"]["memory"] < BUILD_DELAY
    assert result["cache_speedup"] <= result["cache_speedup_steady"]
    assert result["cache_speedup"] == cache["end_to_end_ratios"][0]
    assert (
        abs(result["cache_speedup"] - cache["end_to_end_s"]["off"] / cache["end_to_end_s"]["memory"]) < 1e-9
    )
