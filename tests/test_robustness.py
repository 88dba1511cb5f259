"""Bad input and interruptions: one test (or more) per row of issue 7's table.

Training runs are real subprocesses with the network blocked. Faults are injected from outside the code
under test: damaged files, a self-sent signal or NaN weights from a callback added on the command line
(`+callbacks.fault=...`, importable from this module), a failing `torch.save` or a file-size limit.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import struct
import zlib
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONF, TINY, offline_env, run_cli, run_clis
from ftlab.checkpoint_io import AtomicCheckpointIO
from ftlab.data import build_source
from ftlab.data.sources import ImageFolderSource, load_rgb
from ftlab.errors import FtlabError
from ftlab.models.backbones import resolve_weights

TESTS = Path(__file__).resolve().parent
FAULT_ENV = offline_env(PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
# 24 training images in batches of 8: 3 steps per epoch.
STEPS_PER_EPOCH = 3


# ---------------------------------------------------------------- fault injection (used by subprocesses)


class SignalDuringStep(Callback):
    """Send this process `signum` during training step `step` (1-based), between loss and backward."""

    def __init__(self, step: int, signum: str) -> None:
        self.step, self.signum = step, signal.Signals[signum]

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signum)


class PoisonWeights(Callback):
    """Fill the first weight tensor with NaN before training step `step` (1-based): a diverged model."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if trainer.global_step + 1 == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class LimitFileSize(Callback):
    """From epoch `epoch` (1-based) on, no file of this process may grow past 1 MiB: writes fail (EFBIG)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 == self.epoch:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _fault(name: str, **kwargs: Any) -> list[str]:
    args = [f"+callbacks.fault._target_=test_robustness.{name}"]
    return args + [f"+callbacks.fault.{k}={v}" for k, v in kwargs.items()]


# ---------------------------------------------------------------- helpers


def _write_images(root: Path, counts: dict[str, int], size: int = 32) -> None:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def _damage(root: Path) -> dict[str, str]:
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


def _ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def _only_run(logs: Path) -> Path:
    (run_dir,) = [p for p in (logs / "smoke").iterdir() if p.is_dir()]
    return run_dir


def _val_steps(run_dir: Path) -> list[int]:
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars("val/acc")]


def _one_paragraph(stderr: str) -> str:
    """The ftlab error text with line breaks removed; fails on a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "ftlab: error:" in stderr, stderr[-3000:]
    return " ".join(stderr.split())


# ---------------------------------------------------------------- corrupt or truncated image files


def test_bad_images_are_found_before_training_with_path_and_reason(tmp_path):
    _write_images(tmp_path / "imgs", {"a": 6, "b": 6})
    expected = _damage(tmp_path / "imgs")
    with pytest.raises(FtlabError) as err:
        ImageFolderSource(root=str(tmp_path / "imgs")).load()
    message = str(err.value)
    assert "4 of 16 images" in message and "data.skip_bad_images=true" in message
    for path, reason in expected.items():
        line = next(line for line in message.splitlines() if path in line)
        assert reason in line, line


def test_skip_bad_images_counts_and_logs_them(tmp_path, caplog):
    _write_images(tmp_path / "imgs", {"a": 6, "b": 6})
    expected = _damage(tmp_path / "imgs")
    source = ImageFolderSource(root=str(tmp_path / "imgs"), skip_bad_images=True, val_fraction=0.5)
    with caplog.at_level("WARNING"):
        train, val = source.load()
    assert sorted(p for p, _ in source.skipped) == sorted(expected)
    assert len(train) + len(val) == 12 and not set(expected) & set(train.paths + val.paths)
    assert "Skipped 4 unreadable images" in caplog.text
    assert all(path in caplog.text for path in expected)


def test_bad_images_cli_stops_before_training_or_skips_and_logs(tmp_path):
    _write_images(tmp_path / "imgs", {"a": 6, "b": 6})
    expected = _damage(tmp_path / "imgs")
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
    message = _one_paragraph(stop.stderr)
    assert all(path in stop.stderr.replace("\n", "") for path in expected), stop.stderr
    assert "truncated" in message and "skip_bad_images" in message
    assert not (tmp_path / "stop" / "checkpoints").exists()  # stopped before training

    assert skip.returncode == 0, skip.stderr[-3000:]
    log = (tmp_path / "skip" / "train.log").read_text()
    assert "Skipped 4 unreadable images" in log and all(path in log for path in expected)
    assert (tmp_path / "skip" / "checkpoints" / "best.ckpt").is_file()


# ---------------------------------------------------------------- grayscale, palette, RGBA, CMYK, 16-bit


def _png16(path: Path, pixels: np.ndarray) -> None:
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


def _rgb(path: Path) -> np.ndarray:
    tensor = load_rgb(path)
    assert tensor.dtype == torch.uint8 and tensor.shape[0] == 3
    return tensor.permute(1, 2, 0).numpy().astype(int)


def test_grayscale_palette_rgba_become_the_right_rgb(tmp_path):
    Image.fromarray(np.full((4, 6), 77, np.uint8), "L").save(tmp_path / "gray.png")
    assert (_rgb(tmp_path / "gray.png") == 77).all()

    palette = Image.new("P", (6, 4))
    palette.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    palette.putdata([0, 1] * 12)
    palette.save(tmp_path / "palette.png")
    pixels = _rgb(tmp_path / "palette.png")
    assert (pixels[0, 0] == [10, 20, 30]).all() and (pixels[0, 1] == [200, 100, 0]).all()

    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[...] = [200, 30, 60, 128]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert (_rgb(tmp_path / "rgba.png") == [200, 30, 60]).all()


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
    assert np.abs(_rgb(path) - expected).max() <= tolerance
    assert (_rgb(path)[2, 2] - [255, 0, 0]).__abs__().max() <= tolerance


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    expected = np.rint(ramp / 257.0)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")  # PIL mode I;16
    (tmp_path / "gray16.pgm").write_bytes(b"P5\n64 64\n65535\n" + ramp.astype(">u2").tobytes())  # mode I
    for name in ("gray16.png", "gray16.pgm"):
        pixels = _rgb(tmp_path / name)
        assert np.abs(pixels - expected[..., None]).max() <= 1, name
        assert (pixels == 255).mean() < 0.01, name  # PIL's own conversion makes ~99% of this ramp white
    rgb16 = np.stack([ramp, 65535 - ramp, ramp // 2], -1)
    _png16(tmp_path / "rgb16.png", rgb16)
    assert np.abs(_rgb(tmp_path / "rgb16.png") - rgb16 / 257.0).max() <= 1


# ---------------------------------------------------------------- empty folders, too few images, unreadable


def test_empty_class_folder_and_folder_without_images_name_the_folder(tmp_path):
    _write_images(tmp_path / "imgs", {"a": 3, "b": 3})
    (tmp_path / "imgs" / "c").mkdir()
    with pytest.raises(FtlabError, match=str(tmp_path / "imgs" / "c")):
        ImageFolderSource(root=str(tmp_path / "imgs"))
    (tmp_path / "loose").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "loose" / f"{i}.png")
    with pytest.raises(FtlabError, match=r"loose'? has no class folders\. It holds 3 images directly"):
        ImageFolderSource(root=str(tmp_path / "loose"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FtlabError, match=r"nothing'? has no class folders"):
        ImageFolderSource(root=str(tmp_path / "nothing"))
    _write_images(tmp_path / "train", {"a": 2, "b": 2})
    _write_images(tmp_path / "val", {"a": 1, "b": 0})
    with pytest.raises(FtlabError, match=r"data\.val_root.*" + str(tmp_path / "val" / "b")):
        ImageFolderSource(root=str(tmp_path / "train"), val_root=str(tmp_path / "val")).load()


def test_too_few_images_name_the_class_and_counts(tmp_path):
    _write_images(tmp_path / "few", {"ants": 5, "bees": 1})
    with pytest.raises(FtlabError, match=r"bees \(1\)"):
        ImageFolderSource(root=str(tmp_path / "few")).load()
    _write_images(tmp_path / "three", {"a": 3, "b": 3, "c": 3})
    with pytest.raises(FtlabError, match=r"a=3, b=3, c=3"):  # 10% of 9 images cannot hold 3 classes
        ImageFolderSource(root=str(tmp_path / "three"), val_fraction=0.1).load()


def test_unreadable_file_names_the_path(tmp_path):
    _write_images(tmp_path / "imgs", {"a": 3, "b": 3})
    locked = tmp_path / "imgs" / "b" / "0.png"
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # running as root: permissions do not stop reads
        locked.unlink()
        locked.symlink_to(tmp_path / "gone.png")
    with pytest.raises(FtlabError) as err:
        ImageFolderSource(root=str(tmp_path / "imgs")).load()
    assert str(locked) in str(err.value) and (
        "Permission denied" in str(err.value) or "No such file" in str(err.value)
    )
    with pytest.raises(FtlabError, match=str(locked)):
        load_rgb(locked)


# ---------------------------------------------------------------- config errors through the CLI


def test_config_errors_are_one_paragraph_with_close_matches(tmp_path, smoke_run):
    base = ["+experiment=smoke", f"paths.log_dir={tmp_path / 'logs'}"]
    missing = tmp_path / "no_such_folder"
    ckpt = smoke_run / "checkpoints" / "best.ckpt"  # trained on class_0, class_1, class_2
    cases = [  # (overrides, exit status, expected text)
        (  # resuming from a checkpoint whose classes differ from the data's
            [f"ckpt_path={ckpt}", "+data.classes=[cat,dog,bird]"],
            2,
            "trained on the classes ['class_0', 'class_1', 'class_2']; the data has ['cat', 'dog', 'bird']",
        ),
        (
            ["model.backbone=resnet181"],
            2,
            "Unknown backbone model.backbone='resnet181'. Did you mean: resnet18",
        ),
        (["data=cifar100"], 1, "Could not find 'data/cifar100'"),  # Hydra, listing the sources
        (["foo=1"], 1, "Key 'foo' is not in struct"),  # Hydra: unknown key, suggests +foo=1
    ]
    calls = [("ftlab.train", [*base, *overrides]) for overrides, _, _ in cases]
    missing_root = ("ftlab.train", [*base, "data=imagefolder", f"data.root={missing}"])
    envs = [None] * len(cases) + [None, offline_env(HYDRA_FULL_ERROR="1")]
    *results, missing_result, full_result = run_clis([*calls, missing_root, missing_root], tmp_path, envs)
    for (overrides, status, text), result in zip(cases, results, strict=True):
        assert result.returncode == status, (overrides, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (overrides, result.stderr[-2000:])
        assert text in " ".join(result.stderr.split()), (overrides, result.stderr)
        assert len(result.stderr.strip().splitlines()) <= 15, result.stderr
    assert all(name in results[2].stderr for name in ("cifar10", "imagefolder", "synthetic"))
    assert "+foo=1" in results[3].stderr
    assert missing_result.returncode == 2
    assert f"data.root='{missing}' is not a folder" in _one_paragraph(missing_result.stderr)
    full = full_result.stderr  # HYDRA_FULL_ERROR=1: the traceback, ending in the same message
    assert "Traceback" in full and "FtlabError" in full and str(missing) in full


def test_close_matches_and_wrong_types_in_process(compose_cfg, tmp_path):
    with pytest.raises(FtlabError, match=r"Did you mean: IMAGENET1K_V1"):
        resolve_weights("resnet18", "IMAGENET1K_V9")
    cfg = compose_cfg(["data=synthetic", "+data.trian_size=5"])
    with pytest.raises(FtlabError, match=r"data.trian_size.*Did you mean: train_size"):
        build_source(cfg.data, 0)
    _write_images(tmp_path / "imgs", {"a": 3, "b": 3})
    cfg = compose_cfg(["data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.val_fraction=abc"])
    with pytest.raises(
        FtlabError, match=r"data.val_fraction='abc' has the wrong type: expected float, got str"
    ):
        build_source(cfg.data, 0)
    cfg = compose_cfg(
        ["data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.skip_bad_images=sometimes"]
    )
    with pytest.raises(
        FtlabError, match=r"data.skip_bad_images='sometimes' has the wrong type: expected bool"
    ):
        build_source(cfg.data, 0)


# ---------------------------------------------------------------- NaN loss


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path):
    logs = tmp_path / "logs"
    args = ["+experiment=smoke", *TINY, "trainer.max_epochs=3", f"paths.log_dir={logs}"]
    result = run_cli("ftlab.train", [*args, *_fault("PoisonWeights", step=5)], cwd=tmp_path, env=FAULT_ENV)
    assert result.returncode == 2, result.stderr[-3000:]
    message = _one_paragraph(result.stderr)
    assert "loss became nan at epoch 2, step 5 (batch 2 of epoch 2" in message, message
    checkpoints = _only_run(logs) / "checkpoints"
    assert str(checkpoints / "last.ckpt") in message.replace(" ", "")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = _ckpt(checkpoints / name)
        assert ckpt["global_step"] == STEPS_PER_EPOCH and ckpt["epoch"] == 0  # written after epoch 1
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())


# ---------------------------------------------------------------- Ctrl-C and SIGTERM, then resume=last


def test_ctrl_c_and_sigterm_save_a_checkpoint_and_resume_last_continues(tmp_path):
    logs = tmp_path / "logs"
    args = ["+experiment=smoke", *TINY, "trainer.max_epochs=3", f"paths.log_dir={logs}"]
    total = 3 * STEPS_PER_EPOCH

    # Ctrl-C during step 5 (epoch 2): 4 steps done.
    first = run_cli(
        "ftlab.train", [*args, *_fault("SignalDuringStep", step=5, signum="SIGINT")], tmp_path, FAULT_ENV
    )
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "Ctrl-C at epoch 2, step 4: saved" in first.stderr
    first_dir = _only_run(logs)
    assert _ckpt(first_dir / "checkpoints" / "last.ckpt")["global_step"] == 4

    # resume=last continues from it; SIGTERM during step 8: steps 5-8 done, then the checkpoint.
    second = run_cli(
        "ftlab.train",
        [*args, "resume=last", *_fault("SignalDuringStep", step=8, signum="SIGTERM")],
        tmp_path,
        FAULT_ENV,
    )
    assert second.returncode == 143, second.stderr[-3000:]
    assert "Traceback" not in second.stderr and "SIGTERM at epoch 3, step 8: saved" in second.stderr
    (second_dir,) = [p for p in (logs / "smoke").iterdir() if p != first_dir]
    state = _ckpt(second_dir / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 8
    assert len(_val_steps(second_dir)) == 1  # epoch 2 ended (validated once) in the resumed run

    # resume=last again: the last step and the final validation, nothing repeated.
    third = run_cli("ftlab.train", [*args, "resume=last"], tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    (third_dir,) = [p for p in (logs / "smoke").iterdir() if p not in (first_dir, second_dir)]
    final = _ckpt(third_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == total and final["epoch"] == 2
    assert len(_val_steps(third_dir)) == 1  # epoch 3's validation; Lightning may shift its logged step by one
    # The optimizer state went through all three runs: the head's Adam step count is the total.
    head_steps = {int(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert max(head_steps) == total


# ---------------------------------------------------------------- write errors while saving a checkpoint


def _naive_save(checkpoint: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(checkpoint, f)


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "best.ckpt"
    io_plugin = AtomicCheckpointIO()
    io_plugin.save_checkpoint({"epoch": 1, "w": torch.arange(100_000.0)}, path)
    real_save = torch.save

    def disk_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        """Write half of the real bytes, then fail as a full disk does."""
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(FtlabError, match=r"No space left on device.*previous best.ckpt.*intact"):
        io_plugin.save_checkpoint({"epoch": 2, "w": torch.zeros(100_000)}, path)
    assert os.listdir(tmp_path) == ["best.ckpt"]  # no temporary file left behind
    assert _ckpt(path)["epoch"] == 1 and torch.equal(_ckpt(path)["w"], torch.arange(100_000.0))

    # The fault is real: writing in place, as a plain open(path, "wb") does, destroys the previous file.
    naive = tmp_path / "naive.ckpt"
    monkeypatch.undo()
    _naive_save({"epoch": 1}, naive)
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        _naive_save({"epoch": 2, "w": torch.zeros(100_000)}, naive)
    monkeypatch.undo()
    with pytest.raises(Exception):  # noqa: B017 (any unpickling error)
        _ckpt(naive)


def test_file_size_limit_during_save_keeps_the_previous_file(tmp_path):
    """A real OS write error (EFBIG from RLIMIT_FSIZE) half-way through torch.save's zip writer."""
    resource = pytest.importorskip("resource")
    path = tmp_path / "last.ckpt"
    io_plugin = AtomicCheckpointIO()
    io_plugin.save_checkpoint({"epoch": 1}, path)
    limit, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**16, limit[1]))
    try:
        with pytest.raises(FtlabError, match=r"File too large.*Nothing was replaced"):
            io_plugin.save_checkpoint({"epoch": 2, "w": torch.zeros(100_000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert os.listdir(tmp_path) == ["last.ckpt"] and _ckpt(path)["epoch"] == 1


class _ConstantAccuracy(BoringModel):
    """Validation accuracy that never improves: only the first epoch is ever the best."""

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.log("val/acc", 0.5)
        return super().validation_step(batch, batch_idx)


def test_last_ckpt_is_written_every_epoch_not_only_on_improvement(compose_cfg, tmp_path):
    cfg = compose_cfg(["+experiment=smoke"])
    callbacks = [instantiate(cfg.callbacks[k]) for k in ("model_checkpoint", "last_checkpoint")]
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_ConstantAccuracy())
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert _ckpt(checkpoints / "best.ckpt")["global_step"] == 2  # epoch 1, never beaten
    assert _ckpt(checkpoints / "last.ckpt")["global_step"] == 6  # epoch 3: what resume=last must find


@pytest.mark.parametrize("preset", sorted(f.stem for f in (CONF / "trainer").glob("*.yaml")))
def test_every_trainer_preset_saves_through_the_atomic_plugin(compose_cfg, preset):
    cfg = compose_cfg(["+experiment=smoke", f"trainer={preset}"])
    plugins = instantiate(cfg.trainer.plugins)
    assert [type(p) for p in plugins] == [AtomicCheckpointIO]


@pytest.mark.slow
def test_disk_full_during_training_keeps_previous_checkpoints(tmp_path):
    """A real write error (file-size limit, EFBIG) while saving after epoch 2 of a training subprocess."""
    logs = tmp_path / "logs"
    args = ["+experiment=smoke", *TINY, "trainer.max_epochs=2", f"paths.log_dir={logs}"]
    result = run_cli("ftlab.train", [*args, *_fault("LimitFileSize", epoch=2)], tmp_path, FAULT_ENV)
    assert result.returncode == 2, result.stderr[-3000:]
    message = _one_paragraph(result.stderr)
    assert "Could not write the checkpoint" in message and "File too large" in message
    checkpoints = _only_run(logs) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("best.ckpt", "last.ckpt"):
        assert _ckpt(checkpoints / name)["global_step"] == STEPS_PER_EPOCH
