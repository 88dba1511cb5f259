"""What one benchmark run measures and at which sizes, and the device it runs on."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

import torch

# Dense bf16 tensor-core peaks (TFLOP/s) used for model FLOP utilisation; the vendor's published figures.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}

LR = 1e-3  # both training loops: AdamW learning rate
WEIGHT_DECAY = 0.01  # both training loops: AdamW weight decay (norm weights and biases get none)


@dataclass
class Settings:
    """What one benchmark run uses; recorded in the JSON."""

    device: str
    precision: str
    channels_last: bool
    batch_size: int
    image_size: int
    steps: int
    warmup: int  # untimed steps (at least 1)
    repeats: int
    models: list[str] = field(default_factory=lambda: ["resnet18"])
    cache_images: int = 512
    cache_image_size: int = 112
    cache_epochs: int = 4
    cache_dtype: str = "float32"  # float32: both cache arms train exactly the same model


def settings_for(device: torch.device, quick: bool) -> Settings:
    """Sizes that finish in minutes on a 2-core CPU (quick: about a minute) or fill an accelerator."""
    if device.type == "cuda":
        return Settings(
            "cuda",
            "bf16-mixed",
            True,
            256,
            224,
            60 if not quick else 30,
            15 if not quick else 10,
            3,
            ["resnet18", "resnet50"],
            cache_images=1000,
            cache_image_size=224,
            cache_epochs=4,
        )
    if quick:
        return Settings("cpu", "32-true", False, 16, 64, 12, 3, 3, cache_images=128, cache_image_size=64)
    return Settings("cpu", "32-true", False, 32, 112, 12, 3, 3, cache_images=384, cache_image_size=112)


def device_name(device: torch.device) -> str:
    """`torch.cuda.get_device_name()` on CUDA; the CPU and its torch thread count otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a known accelerator, by its device name."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def sync(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock stamps mean finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize()
