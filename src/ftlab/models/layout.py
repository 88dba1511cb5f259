"""`runtime.channels_last=auto`: the memory format that measured faster for the backbone's family, on the
device kind the run uses, in the arithmetic it computes in.

`MEASURED` is the output of `python -m ftlab.bench --layout` (`benchmark/layout.py`): one representative model
per family, a training step (forward, loss, backward) in NCHW and in NHWC, fp32 and bf16 autocast, alternated
in one run. NHWC is chosen where it was at least `NHWC_MIN_SPEEDUP` times faster; within that margin (noise on
a shared machine) the contiguous layout stays, which is PyTorch's default. On CUDA with bf16 or fp16 autocast
NHWC is the known-good layout for tensor cores (cuDNN's guidance; not measured by this table). Everything not
in the table (a family without a measurement, MPS, fp32 on CUDA) keeps the contiguous layout.
"""

from __future__ import annotations

from dataclasses import dataclass

NHWC_MIN_SPEEDUP = 1.05  # NHWC only where it measured at least 5 % faster than NCHW

# family -> the model the bench measures for it
FAMILIES = {
    "resnet": "resnet18",
    "efficientnet": "efficientnet_b0",
    "efficientnet_lite": "efficientnet_lite0",
    "mobilenet": "mobilenet_v3_large",
    "convnext": "convnext_tiny",
    "regnet": "regnet_y_400mf",
    "shufflenet": "shufflenet_v2_x1_0",
}

# backbone name prefix -> family (first match wins, so efficientnet_lite comes before efficientnet)
_PREFIXES = (
    ("efficientnet_lite", "efficientnet_lite"),
    ("efficientnet", "efficientnet"),
    ("resnet", "resnet"),
    ("resnext", "resnet"),
    ("wide_resnet", "resnet"),
    ("mobilenet", "mobilenet"),
    ("convnext", "convnext"),
    ("regnet", "regnet"),
    ("shufflenet", "shufflenet"),
)

MEASURED_ON = "python -m ftlab.bench --layout, AMD EPYC (2 cores, AVX512-BF16), 2026-12-03"

# (family, device kind, dtype) -> NCHW seconds / NHWC seconds per training step (batch 32 at 128 px, median of
# 3 alternated rounds), from MEASURED_ON; the model each family was measured with, and the two times, follow.
MEASURED: dict[tuple[str, str, str], float] = {
    ("resnet", "cpu", "fp32"): 1.21,  # resnet18: 0.411 / 0.341 s
    ("resnet", "cpu", "bf16"): 1.15,  # resnet18: 0.226 / 0.196 s
    ("efficientnet", "cpu", "fp32"): 1.57,  # efficientnet_b0: 0.691 / 0.439 s
    ("efficientnet", "cpu", "bf16"): 1.11,  # efficientnet_b0: 0.564 / 0.507 s
    ("efficientnet_lite", "cpu", "fp32"): 1.59,  # efficientnet_lite0: 0.581 / 0.365 s
    ("efficientnet_lite", "cpu", "bf16"): 1.14,  # efficientnet_lite0: 0.375 / 0.329 s
    ("mobilenet", "cpu", "fp32"): 1.41,  # mobilenet_v3_large: 0.297 / 0.211 s
    ("mobilenet", "cpu", "bf16"): 1.09,  # mobilenet_v3_large: 0.331 / 0.304 s
    ("convnext", "cpu", "fp32"): 0.95,  # convnext_tiny: 1.887 / 1.983 s
    ("convnext", "cpu", "bf16"): 1.01,  # convnext_tiny: 0.735 / 0.725 s
    ("regnet", "cpu", "fp32"): 1.13,  # regnet_y_400mf: 0.221 / 0.196 s
    ("regnet", "cpu", "bf16"): 1.25,  # regnet_y_400mf: 0.192 / 0.154 s
    ("shufflenet", "cpu", "fp32"): 1.18,  # shufflenet_v2_x1_0: 0.115 / 0.098 s
    ("shufflenet", "cpu", "bf16"): 1.01,  # shufflenet_v2_x1_0: 0.133 / 0.131 s
}


@dataclass(frozen=True)
class LayoutChoice:
    """What `auto` resolved to, and why (the log line)."""

    channels_last: bool
    reason: str

    @property
    def name(self) -> str:
        return "NHWC" if self.channels_last else "NCHW"


def family(backbone: str) -> str | None:
    """The family of a backbone name (`resnet50` -> `resnet`), or None for one the table does not know."""
    for prefix, name in _PREFIXES:
        if backbone.startswith(prefix):
            return name
    return None


def dtype_of(precision: str) -> str:
    """The arithmetic of a Lightning precision value: "bf16", "fp16" or "fp32"."""
    text = str(precision)
    if text.startswith("bf16"):
        return "bf16"
    if text.startswith("16"):
        return "fp16"
    return "fp32"


def resolve_channels_last(backbone: str, device_kind: str, precision: str) -> LayoutChoice:
    """`runtime.channels_last=auto` for `backbone` on a `device_kind` ("cpu", "cuda", ...) device running
    Lightning precision `precision`."""
    fam, dtype = family(backbone), dtype_of(precision)
    where = f"{fam or backbone} on {device_kind.upper() if device_kind == 'cpu' else device_kind} {dtype}"
    if device_kind == "cuda" and dtype in ("bf16", "fp16"):
        return LayoutChoice(True, f"{where}: tensor cores run convolutions in NHWC (not measured here)")
    ratio = MEASURED.get((fam, device_kind, dtype)) if fam is not None else None
    if ratio is None:
        return LayoutChoice(False, f"{where}: not measured, PyTorch's default layout")
    faster = ratio >= NHWC_MIN_SPEEDUP
    return LayoutChoice(
        faster, f"{where} (measured: NHWC step {ratio:.2f}x the speed of NCHW; {MEASURED_ON})"
    )
