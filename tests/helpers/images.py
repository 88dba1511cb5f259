"""Generated image folders, damaged files and hand-built PNGs for data tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ftlab.data.images import load_rgb


def write_images(root: Path, counts: dict[str, int], size: int = 32) -> None:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def damage_folder(root: Path) -> dict[str, str]:
    """Add four unusable files to class `a` of an image folder; returns path -> expected reason."""
    good = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(good, "JPEG")
    (root / "a" / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (root / "a" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "a" / "dangling.png").symlink_to(root / "does_not_exist.png")  # unreadable, even for root
    return {
        str(root / "a" / "truncated.jpg"): "truncated",
        str(root / "a" / "garbage.png"): "garbage.png",
        str(root / "a" / "empty.jpg"): "empty.jpg",
        str(root / "a" / "dangling.png"): "No such file",
    }


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG (gray or RGB) written by hand, so the reader under test is PIL's decoder alone."""
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def read_rgb(path: Path) -> np.ndarray:
    tensor = load_rgb(path)
    assert tensor.dtype == torch.uint8 and tensor.shape[0] == 3
    return tensor.permute(1, 2, 0).numpy().astype(int)


def write_synthetic_folder(root: Path, classes: list[str], count: int, seed: int) -> list[tuple[Path, int]]:
    """`count` generated 32x32 images (the smoke model's size) as PNG files in one sub-folder per class."""
    from ftlab.data.sources.synthetic import SyntheticSource

    _, val = SyntheticSource(num_classes=len(classes), train_size=3, val_size=count, seed=seed).load()
    files = []
    for i, (image, label) in enumerate(zip(val.images, val.labels.tolist(), strict=True)):
        path = root / classes[label] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        files.append((path, label))
    return files
