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

# (family, device kind, dtype) -> NCHW seconds / NHWC seconds per training step, from MEASURED_ON. Empty until
# that run completes on a quiet machine (docs/guide/speed.md, "Status of the table"): every CPU run is NCHW.
MEASURED: dict[tuple[str, str, str], float] = {}


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
