"""Precision and memory-format options take effect in the network itself, not only in the config: the first
convolution of a real run computes in the autocast dtype and sees NHWC tensors when channels_last is on."""

from __future__ import annotations

import pytest
import torch

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
        ([], torch.float32, False),
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
    ("preset", "dtype"), [("gpu", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_gpu_presets_autocast_dtype_and_channels_last(compose_cfg, preset, dtype):
    tiny = [a for a in TINY if a != "trainer=cpu"]
    seen = _first_conv(compose_cfg, [*tiny, f"trainer={preset}"])
    assert seen["device"] == "cuda"
    assert seen["output_dtype"] == dtype
    assert seen["input_channels_last"] and seen["weight_channels_last"]  # the GPU presets turn NHWC on
