"""Image files become the right uint8 RGB tensors; files that do not decode are found before training."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from ftlab.data.images import load_rgb
from ftlab.data.sources.imagefolder import ImageFolderSource
from ftlab.errors import FtlabError
from tests.helpers.cli import run_clis
from tests.helpers.images import damage_folder, read_rgb, write_images, write_png16
from tests.helpers.runs import one_paragraph

STEPS_PER_EPOCH = 3  # 24 training images in batches of 8


def test_bad_images_are_found_before_training_with_path_and_reason(tmp_path):
    write_images(tmp_path / "imgs", {"a": 6, "b": 6})
    expected = damage_folder(tmp_path / "imgs")
    with pytest.raises(FtlabError) as err:
        ImageFolderSource(root=str(tmp_path / "imgs")).load()
    message = str(err.value)
    assert "4 of 16 images" in message and "data.skip_bad_images=true" in message
    for path, reason in expected.items():
        line = next(line for line in message.splitlines() if path in line)
        assert reason in line, line


def test_skip_bad_images_counts_and_logs_them(tmp_path, caplog):
    write_images(tmp_path / "imgs", {"a": 6, "b": 6})
    expected = damage_folder(tmp_path / "imgs")
    source = ImageFolderSource(root=str(tmp_path / "imgs"), skip_bad_images=True, val_fraction=0.5)
    with caplog.at_level("WARNING"):
        train, val = source.load()
    assert sorted(p for p, _ in source.skipped) == sorted(expected)
    assert len(train) + len(val) == 12 and not set(expected) & set(train.paths + val.paths)
    assert "Skipped 4 unreadable images" in caplog.text
    assert all(path in caplog.text for path in expected)


def test_bad_images_cli_stops_before_training_or_skips_and_logs(tmp_path):
    write_images(tmp_path / "imgs", {"a": 6, "b": 6})
    expected = damage_folder(tmp_path / "imgs")
    base = [
        "data=imagefolder",
        f"data.root={tmp_path / 'imgs'}",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=8",
        "model.weights=null",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "callbacks.rich_progress_bar=null",
    ]
    stop, skip = run_clis(
        [
            ("ftlab.train", [*base, f"hydra.run.dir={tmp_path / 'stop'}"]),
            ("ftlab.train", [*base, "data.skip_bad_images=true", f"hydra.run.dir={tmp_path / 'skip'}"]),
        ],
        cwd=tmp_path,
    )
    assert stop.returncode == 2
    message = one_paragraph(stop.stderr)
    assert all(path in stop.stderr.replace("\n", "") for path in expected), stop.stderr
    assert "truncated" in message and "skip_bad_images" in message
    assert not (tmp_path / "stop" / "checkpoints").exists()  # stopped before training

    assert skip.returncode == 0, skip.stderr[-3000:]
    log = (tmp_path / "skip" / "train.log").read_text()
    assert "Skipped 4 unreadable images" in log and all(path in log for path in expected)
    assert (tmp_path / "skip" / "checkpoints" / "best.ckpt").is_file()


def test_grayscale_palette_rgba_become_the_right_rgb(tmp_path):
    Image.fromarray(np.full((4, 6), 77, np.uint8), "L").save(tmp_path / "gray.png")
    assert (read_rgb(tmp_path / "gray.png") == 77).all()

    palette = Image.new("P", (6, 4))
    palette.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    palette.putdata([0, 1] * 12)
    palette.save(tmp_path / "palette.png")
    pixels = read_rgb(tmp_path / "palette.png")
    assert (pixels[0, 0] == [10, 20, 30]).all() and (pixels[0, 1] == [200, 100, 0]).all()

    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[...] = [200, 30, 60, 128]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert (read_rgb(tmp_path / "rgba.png") == [200, 30, 60]).all()


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_becomes_the_right_rgb(tmp_path, fmt):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[:8] = [0, 255, 255, 0]  # red
    cmyk[8:] = [100, 0, 0, 50]  # a darkened cyan tint
    path = tmp_path / f"cmyk.{fmt.lower()}"
    Image.fromarray(cmyk, "CMYK").save(path, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    c, m, y, k = (cmyk[..., i].astype(float) for i in range(4))
    expected = np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], -1) / 255
    tolerance = 1 if fmt == "TIFF" else 6  # JPEG is lossy
    assert np.abs(read_rgb(path) - expected).max() <= tolerance
    assert (read_rgb(path)[2, 2] - [255, 0, 0]).__abs__().max() <= tolerance


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    expected = np.rint(ramp / 257.0)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")  # PIL mode I;16
    (tmp_path / "gray16.pgm").write_bytes(b"P5\n64 64\n65535\n" + ramp.astype(">u2").tobytes())  # mode I
    for name in ("gray16.png", "gray16.pgm"):
        pixels = read_rgb(tmp_path / name)
        assert np.abs(pixels - expected[..., None]).max() <= 1, name
        assert (pixels == 255).mean() < 0.01, name  # PIL's own conversion makes ~99% of this ramp white
    rgb16 = np.stack([ramp, 65535 - ramp, ramp // 2], -1)
    write_png16(tmp_path / "rgb16.png", rgb16)
    assert np.abs(read_rgb(tmp_path / "rgb16.png") - rgb16 / 257.0).max() <= 1


def _with_orientation(pixels: np.ndarray, path, orientation: int, fmt: str) -> None:
    """Save `pixels` with an EXIF Orientation tag (0x0112), as a camera that leaves the pixels unrotated."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pil_exif_transpose(tmp_path, orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for fmt, suffix in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")):  # torchvision, torchvision, PIL
        path = tmp_path / f"sideways.{suffix}"
        _with_orientation(pixels, path, orientation, fmt)
        with Image.open(path) as img:
            expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        got = load_rgb(path).permute(1, 2, 0).numpy()
        assert got.shape == expected.shape, (fmt, orientation)  # 5-8 swap height and width
        assert np.array_equal(got, expected), (fmt, orientation)
    if orientation in (5, 6, 7, 8):
        assert got.shape[:2] == (40, 24)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_fast_decoders_give_pils_pixels(tmp_path, mode):
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = np.random.default_rng(7).integers(0, 256, (20, 30, channels), dtype=np.uint8).squeeze()
    for fmt in ("PNG", "JPEG") if mode != "RGBA" else ("PNG",):
        path = tmp_path / f"image.{fmt.lower()}"
        Image.fromarray(pixels, mode).save(path, fmt)
        with Image.open(path) as img:
            expected = np.asarray(img.convert("RGB"))
        assert np.array_equal(load_rgb(path).permute(1, 2, 0).numpy(), expected), (mode, fmt)
