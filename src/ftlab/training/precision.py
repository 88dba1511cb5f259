"""`trainer.precision=auto`, the default of every run (`conf/trainer/default.yaml`; `trainer=cpu` and
`trainer.precision=32-true` pin fp32): bf16 autocast where the device computes bf16 natively, fp32 elsewhere.

Lightning has no `auto` precision; ftlab resolves it to one of Lightning's values before the Trainer is
built, from the accelerator the run will use, and logs the choice and the reason. The rule is one for every
device: bf16 autocast (fp32 weights, `bf16-mixed`) only where the hardware has bf16 arithmetic (a CUDA GPU
that reports bf16 support; an x86 CPU with AVX512-BF16 or AMX): on such a CPU it ran the main job 1.7x faster
than fp32, at an accuracy within noise of fp32 on its offline proxy (docs/results/main-job.md). Elsewhere bf16
would be emulated, so `auto` stays `32-true`. fp16 is never chosen: it needs loss scaling and can overflow.

Native bf16 is not always faster: on a CPU with AVX512-BF16 (no AMX) the training step of depthwise-
convolution families (EfficientNet-B0, MobileNetV3, ShuffleNetV2) measured slower in bf16 than in fp32
(`models/layout.py::MEASURED`, each in its faster memory format). For a backbone whose family that table
measured slower in bf16, `auto` on such a CPU runs fp32 and says why; on AMX, a GPU, or a family not in the
table, the rule above holds.
"""

from __future__ import annotations

import typing
from typing import Any

import torch

from ftlab.errors import FtlabError
from ftlab.models.layout import MEASURED_ON, bf16_speedup, family

AUTO = "auto"
TABLE_CPU_FEATURE = "AVX512-BF16"  # the bf16 arithmetic of the CPU the step table was measured on
BF16 = "bf16-mixed"
FP32 = "32-true"


def lightning_precisions() -> list[Any]:
    """The precision values Lightning's Trainer accepts (from its own type), or [] where it cannot be read."""
    try:
        from lightning.fabric.connector import _PRECISION_INPUT
    except ImportError:  # a Lightning that moved it: Lightning's own check still runs
        return []

    def values(hint: Any) -> list[Any]:  # a Union of Literals, flattened
        if typing.get_origin(hint) is typing.Literal:
            return list(typing.get_args(hint))
        return [v for arg in typing.get_args(hint) for v in values(arg)]

    return values(_PRECISION_INPUT)


def check_precision(precision: Any) -> None:
    """`trainer.precision` is `auto` or a value Lightning accepts; else one paragraph naming the key."""
    allowed = lightning_precisions()
    if precision is None or str(precision) == AUTO or not allowed or precision in allowed:
        return
    names = ", ".join(str(v) for v in allowed if isinstance(v, str))
    raise FtlabError(
        f"trainer.precision={precision!r} is not a precision: give `auto` (ftlab: bf16 autocast where the "
        f"device computes bf16 natively, else fp32) or one of Lightning's values ({names}), e.g. "
        "trainer.precision=bf16-mixed, or a preset: trainer=auto|bf16|fp16."
    )


def cpu_native_bf16() -> str | None:
    """The CPU feature that computes bf16 natively ("AMX", "AVX512-BF16"), or None (bf16 is emulated)."""
    cpu: Any = torch.cpu
    checks = (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
    for name, probe in checks:
        supported = getattr(cpu, probe, None)  # private torch probes; absent on non-x86 builds
        if supported is not None and supported():
            return name
    return None


def _device_kind(accelerator: Any) -> str:
    """Where Lightning's `accelerator` setting will run the model: "cuda", "cpu" or another name."""
    name = str(accelerator).lower()
    if name in ("gpu", "cuda"):
        return "cuda"
    if name == "auto":  # Lightning's own order: CUDA, then MPS, then the CPU
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    return name


def resolve_precision(
    precision: Any, accelerator: Any, backbone: str | None = None
) -> tuple[Any, str | None]:
    """(Lightning precision, reason): `auto` resolved for `accelerator` (and, on a CPU whose bf16 the step
    table measured, for `backbone`'s family); any other value unchanged, None."""
    if str(precision) != AUTO:
        return precision, None
    kind = _device_kind(accelerator)
    if kind == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return BF16, f"auto: {torch.cuda.get_device_name()} computes bf16 natively"
        return FP32, "auto: this GPU has no native bf16 (fp16 would need loss scaling), so fp32"
    if kind == "cpu":
        feature = cpu_native_bf16()
        speedup = bf16_speedup(backbone, "cpu") if backbone and feature == TABLE_CPU_FEATURE else None
        if backbone and speedup is not None and speedup < 1.0:
            return FP32, (
                f"auto: this CPU computes bf16 natively ({feature}), but a {family(backbone)} training step "
                f"measured {speedup:.2f}x the speed of fp32 in bf16 on such a CPU ({MEASURED_ON}), so fp32"
            )
        if feature is not None:
            return BF16, f"auto: this CPU computes bf16 natively ({feature})"
        return (
            FP32,
            "auto: this CPU has no native bf16 (no AVX512-BF16 or AMX; it would be emulated), so fp32",
        )
    return FP32, f"auto: no bf16 rule for the {kind} accelerator, so fp32"
