"""Image files to uint8 RGB tensors (the one loader), and checks that files decode."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ftlab.errors import FtlabError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


# What PIL raises for unreadable, truncated or malformed files (SyntaxError: some plugins' header checks).
IMAGE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def _rgb_array(img: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of an open image, whatever its mode.

    16-bit grayscale (PNG/TIFF `I;16`, PGM `I`) is scaled from 0..65535 to 0..255: PIL's own conversion
    clips it, which turns most 16-bit images white. CMYK uses PIL's conversion (JPEG's Adobe-inverted CMYK
    is undone by the decoder); palette and alpha modes go through RGBA so transparency keys are honoured.
    """
    if img.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit int holding 16-bit values)
        wide = np.asarray(img).astype(np.float64).clip(0, 65535)
        gray = np.rint(wide * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    rgb = img.convert("RGBA").convert("RGB") if img.mode in ("P", "PA", "LA") else img.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8).copy()


def load_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as uint8 (3, H, W); grayscale, 16-bit, palette, RGBA and CMYK become RGB."""
    try:
        with Image.open(path) as img:
            array = _rgb_array(img)
    except IMAGE_ERRORS as err:
        raise FtlabError(f"Cannot read image {path}: {err}. Remove or replace the file.") from err
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def image_problem(path: str | Path) -> str | None:
    """Why `path` cannot be used as an image (unreadable, truncated, corrupt), or None when it decodes."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))  # JPEG: decode at reduced scale; the whole stream is still read
            img.load()
    except IMAGE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def find_bad_images(paths: list[str]) -> list[tuple[str, str]]:
    """(path, reason) of every file in `paths` that does not decode; decoding runs in a thread pool."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(image_problem, paths))
    return [(path, why) for path, why in zip(paths, problems, strict=True) if why is not None]
