"""All of `ftlab.bench`'s measurements in one process, ratios from alternated repeats."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

import torch

from ftlab.benchmark.cache import cache_benchmark
from ftlab.benchmark.layout import LayoutOptions, layout_benchmark
from ftlab.benchmark.loops import ftlab_loop, hand_loop, pipeline, train_flops_per_image
from ftlab.benchmark.main_job import MainJobOptions, main_job_benchmark
from ftlab.benchmark.settings import Settings, device_name, peak_tflops, settings_for


def loops_benchmark(s: Settings, device: torch.device, name: str) -> dict[str, Any]:
    """Per model: median img/s of the hand loop and of ftlab, alternated; their ratio; MFU on known GPUs."""
    models = {}
    for model in s.models:
        hand, ours = [], []
        for _ in range(s.repeats):  # alternate, so drift hits both alike
            hand.append(hand_loop(model, s, device))
            ours.append(ftlab_loop(model, s, device))
        entry = {"hand_img_s": statistics.median(hand), "ftlab_img_s": statistics.median(ours)}
        entry["ratio"] = entry["ftlab_img_s"] / entry["hand_img_s"]
        peak = peak_tflops(name)
        if peak:
            flops = train_flops_per_image(model, s.image_size)
            entry["train_flops_per_image"] = flops
            entry["mfu_ftlab"] = entry["ftlab_img_s"] * flops / (peak * 1e12)
            entry["mfu_hand"] = entry["hand_img_s"] * flops / (peak * 1e12)
        models[model] = entry
    return models


def run(
    quick: bool = False,
    settings: Settings | None = None,
    main_job: MainJobOptions | None = None,
    loops: bool = True,
    layout: LayoutOptions | None = None,
) -> dict[str, Any]:
    """The throughput and cache measurements (`loops`), the memory-format table when `layout` is given,
    then the main job when `main_job` is given."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    s = settings or settings_for(device, quick)
    name = device_name(device)
    torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"device": name, "torch": torch.__version__}
    if loops:
        result["settings"] = asdict(s)
        result["models"] = loops_benchmark(s, device, name)
        result["ftlab_vs_hand"] = result["models"][s.models[0]]["ratio"]
        result.update(cache_benchmark(s, device))
        result["pipeline_img_s"] = pipeline(s, device)
    if layout is not None:
        result.update(layout_benchmark(layout, device))
    if main_job is not None:
        result.update(main_job_benchmark(main_job, device))
    return result
