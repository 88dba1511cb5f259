"""`runtime.channels_last=auto`: the memory format that measured faster for the backbone's family, on the
device kind the run uses, in the arithmetic it computes in.

`MEASURED` is the output of `python -m ftlab.bench --layout` (`benchmark/layout.py`): one representative model
per family, a training step (forward, loss, backward) in NCHW and in NHWC, fp32 and bf16 autocast, alternated
in one run (seconds per step); `trainer.precision=auto` reads it too (`bf16_speedup`). NHWC is chosen where
it was at least `NHWC_MIN_SPEEDUP` times faster; within that margin (noise on
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

# (family, device kind, dtype) -> (NCHW, NHWC) seconds per training step (batch 32 at 128 px, median of 3
# alternated rounds) of the family's model in `FAMILIES`, from MEASURED_ON. The NHWC speed-up is their ratio;
# `trainer.precision=auto` also reads it: bf16 only where a family's faster layout steps faster in bf16.
MEASURED: dict[tuple[str, str, str], tuple[float, float]] = {
    ("resnet", "cpu", "fp32"): (0.411, 0.341),
    ("resnet", "cpu", "bf16"): (0.226, 0.196),
    ("efficientnet", "cpu", "fp32"): (0.691, 0.439),
    ("efficientnet", "cpu", "bf16"): (0.564, 0.507),
    ("efficientnet_lite", "cpu", "fp32"): (0.581, 0.365),
    ("efficientnet_lite", "cpu", "bf16"): (0.375, 0.329),
    ("mobilenet", "cpu", "fp32"): (0.297, 0.211),
    ("mobilenet", "cpu", "bf16"): (0.331, 0.304),
    ("convnext", "cpu", "fp32"): (1.887, 1.983),
    ("convnext", "cpu", "bf16"): (0.735, 0.725),
    ("regnet", "cpu", "fp32"): (0.221, 0.196),
    ("regnet", "cpu", "bf16"): (0.192, 0.154),
    ("shufflenet", "cpu", "fp32"): (0.115, 0.098),
    ("shufflenet", "cpu", "bf16"): (0.133, 0.131),
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


def nhwc_speedup(fam: str, device_kind: str, dtype: str) -> float | None:
    """NCHW step seconds / NHWC step seconds of a family from the table (> 1: NHWC is faster), or None."""
    times = MEASURED.get((fam, device_kind, dtype))
    return None if times is None else times[0] / times[1]


def bf16_speedup(backbone: str, device_kind: str) -> float | None:
    """fp32 step seconds / bf16 step seconds of the backbone's family, each in its faster layout (> 1: bf16
    autocast is faster), or None where the table lacks either."""
    fam = family(backbone)
    fp32, bf16 = (MEASURED.get((fam, device_kind, d)) if fam is not None else None for d in ("fp32", "bf16"))
    if fp32 is None or bf16 is None:
        return None
    return min(fp32) / min(bf16)


def resolve_channels_last(backbone: str, device_kind: str, precision: str) -> LayoutChoice:
    """`runtime.channels_last=auto` for `backbone` on a `device_kind` ("cpu", "cuda", ...) device running
    Lightning precision `precision`."""
    fam, dtype = family(backbone), dtype_of(precision)
    where = f"{fam or backbone} on {device_kind.upper() if device_kind == 'cpu' else device_kind} {dtype}"
    if device_kind == "cuda" and dtype in ("bf16", "fp16"):
        return LayoutChoice(True, f"{where}: tensor cores run convolutions in NHWC (not measured here)")
    ratio = nhwc_speedup(fam, device_kind, dtype) if fam is not None else None
    if ratio is None:
        return LayoutChoice(False, f"{where}: not measured, PyTorch's default layout")
    faster = ratio >= NHWC_MIN_SPEEDUP
    return LayoutChoice(
        faster, f"{where} (measured: NHWC step {ratio:.2f}x the speed of NCHW; {MEASURED_ON})"
    )
