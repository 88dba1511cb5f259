"""Image files to uint8 RGB tensors (the one loader), and checks that files decode."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image

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


# (format, mode) pairs torchvision.io decodes to the same pixels as PIL, faster (libjpeg-turbo, libpng):
# 8-bit RGB/gray JPEG and 8-bit RGB/RGBA/gray PNG. 16-bit, CMYK, palette and other formats go through PIL.
FAST_DECODES = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L")}


def _fast_decode(path: Path | bytes, header: Image.Image) -> torch.Tensor | None:
    """uint8 (3, H, W) from torchvision.io with EXIF orientation applied, or None to let PIL decode."""
    if (header.format, header.mode) not in FAST_DECODES or header.info.get("transparency") is not None:
        return None
    data = path if isinstance(path, bytes) else path.read_bytes()
    if header.format == "PNG" and _png_bit_depth(data) != 8:
        return None  # PIL opens 16-bit RGB PNGs as mode RGB; torchvision would return uint16
    try:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image = decode_image(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:
        return None  # corrupt or truncated: PIL decodes again and names the problem
    return image if image.dtype == torch.uint8 and image.shape[0] == 3 else None


def _png_bit_depth(data: bytes) -> int:
    """The bit depth byte of a PNG's IHDR chunk (8 bytes signature + 8 chunk head + 8 width/height)."""
    return data[24] if len(data) > 24 else 8


def load_rgb(path: str | Path | bytes) -> torch.Tensor:
    """Read an image file (or an encoded file's bytes: an upload) as uint8 (3, H, W) RGB, upright as its EXIF
    orientation tag says.

    8-bit JPEG and PNG decode with torchvision.io (which applies the orientation itself); everything else
    (16-bit, CMYK, palette, TIFF, WebP ...) with PIL, whose `ImageOps.exif_transpose` applies it.
    """
    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:  # the header only
            fast = _fast_decode(path if isinstance(path, bytes) else Path(path), img)
            if fast is not None:
                return fast
            array = _rgb_array(ImageOps.exif_transpose(img))
    except IMAGE_ERRORS as err:
        name = "(uploaded bytes)" if isinstance(path, bytes) else path
        raise FtlabError(f"Cannot read image {name}: {err}. Remove or replace the file.") from err
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
