"""`python -m ftlab.bench --layout`: the memory-format table behind `runtime.channels_last=auto`.

For one representative backbone of every family ftlab ships (`models/layout.py::FAMILIES`), a training step
(forward, loss, backward; the network in train mode) in NCHW (contiguous) and in NHWC (channels_last), in
fp32 and under bf16 autocast, on this machine's device. The four arms of a family alternate A/B/A/B over
`rounds` rounds, so load from other processes hits them alike; each arm's figure is the median round. The
output is the table `models/layout.py::MEASURED` ships (ratio = NCHW seconds / NHWC seconds, > 1: NHWC is
faster).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ftlab.benchmark.settings import sync
from ftlab.models.backbones import build
from ftlab.models.layout import FAMILIES, NHWC_MIN_SPEEDUP

DTYPES = ("fp32", "bf16")
LAYOUTS = ("nchw", "nhwc")


@dataclass
class LayoutOptions:
    """Sizes of the layout benchmark (defaults: a few minutes on a 2-core CPU)."""

    batch_size: int = 32
    image_size: int = 128
    steps: int = 2  # timed steps per arm and round
    rounds: int = 3  # A/B/A/B rounds; the median round counts
    families: list[str] = field(default_factory=lambda: list(FAMILIES))


def _arm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, dtype: str) -> Any:
    """One training step of `model` on (x, y) in `dtype` (fp32, or bf16 autocast with fp32 weights)."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with autocast:
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def measure_family(family: str, opts: LayoutOptions, device: torch.device) -> dict[str, Any]:
    """Median seconds per training step of the family's model in each (dtype, layout), alternated."""
    name = FAMILIES[family]
    torch.manual_seed(0)
    nets = {}
    for layout in LAYOUTS:
        model = build(name, None, 3).model.to(device).train()
        if layout == "nhwc":
            model = model.to(memory_format=torch.channels_last)
        nets[layout] = model
    x = torch.randn(opts.batch_size, 3, opts.image_size, opts.image_size, device=device)
    y = torch.randint(0, 3, (opts.batch_size,), device=device)
    inputs = {"nchw": x, "nhwc": x.contiguous(memory_format=torch.channels_last)}
    steps = {(d, lay): _arm(nets[lay], inputs[lay], y, device, d) for d in DTYPES for lay in LAYOUTS}
    for step in steps.values():  # warm-up: kernel selection, allocator
        step()
    times: dict[tuple[str, str], list[float]] = {arm: [] for arm in steps}
    for _ in range(opts.rounds):
        for arm, step in steps.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(opts.steps):
                step()
            sync(device)
            times[arm].append((time.perf_counter() - start) / opts.steps)
    entry: dict[str, Any] = {"model": name}
    for dtype in DTYPES:
        nchw, nhwc = (statistics.median(times[(dtype, lay)]) for lay in LAYOUTS)
        entry[dtype] = {
            "nchw_s": nchw,
            "nhwc_s": nhwc,
            "ratio": nchw / nhwc,
            "channels_last": nchw / nhwc >= NHWC_MIN_SPEEDUP,
            "rounds": {f"{lay}_s": times[(dtype, lay)] for lay in LAYOUTS},
        }
    return entry


def layout_benchmark(opts: LayoutOptions, device: torch.device) -> dict[str, Any]:
    """Every family's entry, and the options and threads it ran with."""
    families = {family: measure_family(family, opts, device) for family in opts.families}
    return {"layout": {"options": asdict(opts), "threads": torch.get_num_threads(), "families": families}}
