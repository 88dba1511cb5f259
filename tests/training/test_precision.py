"""Precision and memory-format options take effect in the network itself, not only in the config: the first
convolution of a real run computes in the autocast dtype and sees NHWC tensors when channels_last is on."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch

from ftlab.errors import FtlabError
from ftlab.models import layout
from ftlab.training.precision import check_precision, lightning_precisions, resolve_precision
from ftlab.training.run import train
from tests.helpers.cli import TINY
from tests.helpers.probes import ConvProbe

PROBE = ["+callbacks.probe._target_=tests.helpers.probes.ConvProbe", "debug=fast", "logger=csv"]


def _first_conv(compose_cfg, overrides: list[str]) -> dict:
    ConvProbe.seen.clear()
    train(compose_cfg(["+experiment=smoke", *overrides, *PROBE]))
    assert ConvProbe.seen, "the probe saw no training step"
    return ConvProbe.seen[0]


@pytest.mark.parametrize(
    ("overrides", "dtype", "channels_last"),
    [
        (["runtime.channels_last=false"], torch.float32, False),
        (["trainer.precision=bf16-mixed", "runtime.channels_last=true"], torch.bfloat16, True),
    ],
)
def test_cpu_precision_and_memory_format_reach_the_network(compose_cfg, overrides, dtype, channels_last):
    seen = _first_conv(compose_cfg, [*TINY, *overrides])
    assert seen["output_dtype"] == dtype
    assert seen["input_channels_last"] == channels_last
    assert seen["weight_channels_last"] == channels_last


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("preset", "dtype"), [("gpu", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_gpu_presets_autocast_dtype_and_channels_last(compose_cfg, preset, dtype):
    """`trainer=gpu` keeps the default `precision=auto`: bf16 autocast on a GPU that computes bf16."""
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float32
    tiny = [a for a in TINY if a != "trainer=cpu"]
    seen = _first_conv(compose_cfg, [*tiny, f"trainer={preset}"])
    assert seen["device"] == "cuda"
    assert seen["output_dtype"] == dtype
    assert seen["input_channels_last"] and seen["weight_channels_last"]  # the GPU presets turn NHWC on


# trainer.precision=auto: bf16 autocast where the device computes bf16 natively, fp32 elsewhere


def _cpu_features(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    """This CPU's bf16 features as torch reports them (the probes `auto` reads), set for the test."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected", "named"),
    [
        (False, False, "32-true", "no native bf16"),
        (True, False, "bf16-mixed", "AVX512-BF16"),
        (True, True, "bf16-mixed", "AMX"),
    ],
)
@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_auto_precision_on_a_cpu_follows_its_bf16_arithmetic(
    monkeypatch, avx512_bf16, amx, expected, named, accelerator
):
    _cpu_features(monkeypatch, avx512_bf16, amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    precision, why = resolve_precision("auto", accelerator)
    assert precision == expected
    assert why is not None and named in why


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_a_gpu_follows_its_bf16_support(monkeypatch, bf16, expected):
    _cpu_features(monkeypatch, True, True)  # the CPU's features do not decide a GPU run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    for accelerator in ("gpu", "cuda", "auto"):
        assert resolve_precision("auto", accelerator)[0] == expected


@pytest.mark.parametrize("value", ["32-true", "bf16-mixed", "16-mixed", 32, None])
def test_other_precisions_pass_through_unchanged(monkeypatch, value):
    _cpu_features(monkeypatch, True, False)
    assert resolve_precision(value, "cpu") == (value, None)


def test_auto_precision_on_an_unknown_accelerator_is_fp32(monkeypatch):
    _cpu_features(monkeypatch, True, True)
    precision, why = resolve_precision("auto", "mps")
    assert precision == "32-true" and why is not None and "mps" in why


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "expected"), [(0.30, 0.40, "32-true"), (0.40, 0.30, "bf16-mixed")]
)
def test_auto_on_avx512_bf16_follows_the_family_step_table(monkeypatch, fp32_s, bf16_s, expected):
    """On the table's CPU kind (AVX512-BF16, no AMX) a family whose bf16 step measured slower stays fp32, and
    the reason names the measured ratio; a family the table lacks keeps the native-bf16 rule."""
    _cpu_features(monkeypatch, True, False)
    monkeypatch.setitem(layout.MEASURED, ("mobilenet", "cpu", "fp32"), (fp32_s * 1.5, fp32_s))
    monkeypatch.setitem(layout.MEASURED, ("mobilenet", "cpu", "bf16"), (bf16_s, bf16_s * 2))
    precision, why = resolve_precision("auto", "cpu", "mobilenet_v3_small")
    assert precision == expected
    if expected == "32-true":
        assert why is not None and f"mobilenet training step measured {fp32_s / bf16_s:.2f}x" in why
    assert resolve_precision("auto", "cpu", "vit_b_16")[0] == "bf16-mixed"  # no family in the table
    assert resolve_precision("auto", "cpu")[0] == "bf16-mixed"  # no backbone given
    _cpu_features(monkeypatch, True, True)  # AMX: not the CPU the table measured
    assert resolve_precision("auto", "cpu", "mobilenet_v3_small")[0] == "bf16-mixed"


def test_the_shipped_table_keeps_bf16_for_the_main_job_and_drops_it_for_slower_families(monkeypatch):
    """The shipped measurements: ResNet (the main job) and EfficientNet-Lite step faster in bf16 on this kind
    of CPU; EfficientNet-B0, MobileNetV3 and ShuffleNetV2 slower (their faster layouts compared)."""
    _cpu_features(monkeypatch, True, False)
    for backbone in ("resnet18", "efficientnet_lite0", "convnext_tiny", "regnet_y_400mf"):
        assert resolve_precision("auto", "cpu", backbone)[0] == "bf16-mixed", backbone
    for backbone in ("efficientnet_b0", "mobilenet_v3_large", "shufflenet_v2_x1_0"):
        assert resolve_precision("auto", "cpu", backbone)[0] == "32-true", backbone


@pytest.mark.parametrize(("native", "dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_precision_reaches_the_network_and_is_logged(compose_cfg, monkeypatch, caplog, native, dtype):
    _cpu_features(monkeypatch, native, False)
    with caplog.at_level(logging.INFO, logger="ftlab.training.run"):
        seen = _first_conv(compose_cfg, [*TINY, "trainer.precision=auto"])
    assert seen["output_dtype"] == dtype
    expected = "bf16-mixed (auto: this CPU computes bf16" if native else "32-true (auto: this CPU has"
    assert f"Precision: {expected}" in caplog.text


def test_main_job_picks_auto_and_a_trainer_preset_on_the_command_line_replaces_it(compose_cfg):
    assert compose_cfg(["+experiment=cats_dogs_cars"]).trainer.precision == "auto"
    for preset, precision in (("cpu", "32-true"), ("bf16", "bf16-mixed"), ("fp16", "16-mixed")):
        cfg = compose_cfg(["+experiment=cats_dogs_cars", f"trainer={preset}"])
        assert cfg.trainer.precision == precision, preset


def test_precision_values_are_lightnings_own_plus_auto():
    """The early check agrees with Lightning's Trainer: what it lets through builds, what it stops fails."""
    allowed = lightning_precisions()
    assert "auto" not in allowed
    for value in ("32-true", "bf16-mixed", 64, "bf16"):
        check_precision(value)
        L.Trainer(precision=value, accelerator="cpu", logger=False, enable_checkpointing=False)
    for value in ("auto", None):
        check_precision(value)
    with pytest.raises(FtlabError, match=r"trainer.precision='bf17'.*`auto`.*bf16-mixed"):
        check_precision("bf17")
    with pytest.raises(ValueError, match="bf17"):
        L.Trainer(precision="bf17", accelerator="cpu", logger=False, enable_checkpointing=False)
