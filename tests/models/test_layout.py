"""`runtime.channels_last=auto`: the layout comes out of the measured table (family x device x dtype), reaches
the first convolution of a real run, and is logged with the measurement behind it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from ftlab.models import layout
from ftlab.models.layout import FAMILIES, NHWC_MIN_SPEEDUP, family, resolve_channels_last
from ftlab.training.precision import cpu_native_bf16
from ftlab.training.run import train
from tests.helpers.cli import CONF, TINY
from tests.helpers.probes import ConvProbe

PROBE = ["+callbacks.probe._target_=tests.helpers.probes.ConvProbe", "debug=fast", "logger=csv"]


def _first_conv(compose_cfg, overrides: list[str]) -> dict:
    ConvProbe.seen.clear()
    train(compose_cfg(["+experiment=smoke", *overrides, *PROBE]))
    assert ConvProbe.seen, "the probe saw no training step"
    return ConvProbe.seen[0]


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        ("resnet18", "resnet"),
        ("resnet50", "resnet"),
        ("wide_resnet50_2", "resnet"),
        ("efficientnet_lite0", "efficientnet_lite"),
        ("efficientnet_b0", "efficientnet"),
        ("efficientnet_v2_s", "efficientnet"),
        ("mobilenet_v3_small", "mobilenet"),
        ("convnext_tiny", "convnext"),
        ("regnet_y_400mf", "regnet"),
        ("shufflenet_v2_x0_5", "shufflenet"),
        ("vit_b_16", None),
    ],
)
def test_backbone_family(backbone, expected):
    assert family(backbone) == expected


def test_every_family_model_and_every_shipped_cnn_has_a_family():
    for f, model in FAMILIES.items():
        assert family(model) == f
    for config in Path(CONF, "model").glob("*.yaml"):
        backbone = yaml.safe_load(config.read_text())["backbone"]
        assert family(backbone) is not None or backbone.startswith("vit"), config.name


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("ratio", [1.2, 1.04, 0.9])
def test_cpu_choice_follows_the_measured_ratio(monkeypatch, dtype, ratio):
    precision = "bf16-mixed" if dtype == "bf16" else "32-true"
    for fam, model in FAMILIES.items():
        monkeypatch.setitem(layout.MEASURED, (fam, "cpu", dtype), (ratio * 0.3, 0.3))
        chosen = resolve_channels_last(model, "cpu", precision)
        assert chosen.channels_last == (ratio >= NHWC_MIN_SPEEDUP), fam
        assert f"{fam} on CPU {dtype} (measured: NHWC step {ratio:.2f}x" in chosen.reason
    assert not resolve_channels_last("vit_b_16", "cpu", precision).channels_last  # no family: NCHW


def test_cuda_mixed_precision_is_nhwc_and_unknown_cases_stay_contiguous():
    for precision in ("bf16-mixed", "16-mixed", "bf16-true"):
        assert resolve_channels_last("resnet18", "cuda", precision).channels_last
    assert "not measured" in resolve_channels_last("resnet18", "cuda", "bf16-mixed").reason
    assert not resolve_channels_last("resnet18", "cuda", "32-true").channels_last
    assert not resolve_channels_last("vit_b_16", "cpu", "bf16-mixed").channels_last
    assert not resolve_channels_last("resnet18", "mps", "32-true").channels_last


@pytest.mark.parametrize("ratio", [1.5, 0.8])
def test_auto_layout_from_the_table_reaches_the_first_convolution_and_is_logged(
    compose_cfg, monkeypatch, caplog, ratio
):
    """fp32 on the CPU (`trainer=cpu`); the table entry set both ways: each outcome shows in a real step."""
    monkeypatch.setitem(layout.MEASURED, ("resnet", "cpu", "fp32"), (ratio * 0.3, 0.3))
    with caplog.at_level(logging.INFO, logger="ftlab.models.module"):
        seen = _first_conv(compose_cfg, [*TINY, "runtime.channels_last=auto"])
    nhwc = ratio >= NHWC_MIN_SPEEDUP
    assert seen["input_channels_last"] == nhwc and seen["weight_channels_last"] == nhwc
    name = "NHWC" if nhwc else "NCHW"
    assert (
        f"runtime.channels_last=auto -> {name} for resnet on CPU fp32 (measured: NHWC step {ratio:.2f}x"
        in (caplog.text)
    )


def test_a_plain_run_defaults_to_auto_precision_and_auto_layout(compose_cfg, caplog):
    """No trainer preset, no runtime key: `precision=auto` (bf16 on a CPU with native bf16) and the table's
    layout for ResNet on the CPU in that dtype, both in the first convolution of a real step."""
    cfg = compose_cfg([])
    assert cfg.trainer.precision == "auto" and cfg.runtime.channels_last == "auto"
    assert compose_cfg(["trainer=cpu"]).trainer.precision == "32-true"
    assert compose_cfg(["trainer=ddp_cpu"]).trainer.precision == "32-true"
    tiny = [a for a in TINY if a != "trainer=cpu"] + ["trainer.accelerator=cpu"]
    with caplog.at_level(logging.INFO, logger="ftlab.models.module"):
        seen = _first_conv(compose_cfg, tiny)
    native = cpu_native_bf16() is not None
    assert seen["output_dtype"] == (torch.bfloat16 if native else torch.float32)
    dtype = "bf16" if native else "fp32"
    nhwc = (layout.nhwc_speedup("resnet", "cpu", dtype) or 0.0) >= NHWC_MIN_SPEEDUP
    assert seen["input_channels_last"] == nhwc
    assert f"-> {'NHWC' if nhwc else 'NCHW'} for resnet on CPU {dtype}" in caplog.text
