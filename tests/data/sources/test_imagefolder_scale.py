"""Big ImageFolders: only the files a run uses are decoded before training; 100,000 images start fast."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback
from PIL import Image

from ftlab.data.sources import files
from ftlab.data.sources.imagefolder import ImageFolderSource
from tests.helpers.cli import run_cli
from tests.helpers.images import damage_folder, write_images


def _record_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the source decode-checks (the real check still runs)."""
    seen: list[str] = []
    real = files.image_problem

    def recording(path: str) -> str | None:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(files, "image_problem", recording)
    return seen


def test_only_the_sampled_files_are_checked(tmp_path, monkeypatch):
    write_images(tmp_path / "imgs", {"a": 30, "b": 30}, size=8)
    seen = _record_checks(monkeypatch)
    train, val = ImageFolderSource(root=str(tmp_path / "imgs"), train_size=6, val_size=4).load()
    assert len(train) == 6 and len(val) == 4
    assert sorted(seen) == sorted(train.paths + val.paths)  # 10 of 60 files decoded, each once


def test_skipped_files_are_replaced_by_readable_ones_of_their_class(tmp_path, monkeypatch):
    write_images(tmp_path / "imgs", {"a": 8, "b": 8}, size=8)
    bad = damage_folder(tmp_path / "imgs")  # 4 more files in class a, none of them decodes
    seen = _record_checks(monkeypatch)
    sampled = ImageFolderSource(root=str(tmp_path / "imgs"), train_size=10, skip_bad_images=True, seed=3)
    train, val = sampled.load()
    assert not set(bad) & set(train.paths + val.paths) and len(train) == 10
    assert np.bincount(train.labels).tolist() == [5, 5]  # stratified, from the readable files
    assert len(seen) == len(set(seen))  # no file decoded twice
    # using every file: the result is the split of a folder that never had the bad files
    whole = ImageFolderSource(root=str(tmp_path / "imgs"), skip_bad_images=True, seed=3)
    train, val = whole.load()
    assert sorted(p for p, _ in whole.skipped) == sorted(bad)
    for path in bad:
        Path(path).unlink()
    clean_train, clean_val = ImageFolderSource(root=str(tmp_path / "imgs"), seed=3).load()
    assert clean_train.paths == train.paths and clean_val.paths == val.paths


class FirstStepClock(Callback):
    """Writes time.time() to `path` when the first training batch starts (for the 100k-image test)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == 0:
            Path(self.path).write_text(repr(time.time()))


def _write_big_folder(root: Path, n: int, classes: int) -> None:
    """`n` 16x16 PNGs in `classes` class folders (256 distinct encoded images, written as bytes)."""
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(256):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        encoded.append(buf.getvalue())
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True)
    for i in range(n):
        (root / f"class_{i % classes:02d}" / f"{i:06d}.png").write_bytes(encoded[i % 256])


@pytest.mark.slow  # writes 100,000 files, then one short training run
def test_100k_image_folder_reaches_the_first_step_within_60_s(tmp_path: Path) -> None:
    root = tmp_path / "big"
    _write_big_folder(root, 100_000, 10)
    (root / "class_03" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # never sampled
    clock = tmp_path / "first_step.txt"
    args = [
        "data=imagefolder",
        f"data.root={root}",
        "data.train_size=5000",
        "data.val_size=1000",
        "data.image_size=32",
        "data.num_workers=2",
        "model=resnet18",
        "model.weights=null",
        "finetune=full",
        "features.cache=off",
        "trainer=cpu",
        "+trainer.max_steps=1",
        "+trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "callbacks.rich_progress_bar=null",
        "callbacks.tensorboard_review=null",
        "+callbacks.clock._target_=tests.data.sources.test_imagefolder_scale.FirstStepClock",
        f"+callbacks.clock.path={clock}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    start = time.time()
    result = run_cli("ftlab.train", args, cwd=Path(__file__).resolve().parents[3])
    assert result.returncode == 0, result.stderr[-3000:]
    first_step = float(clock.read_text()) - start
    log = (tmp_path / "run" / "train.log").read_text()
    found = re.search(r"found (\d+) images in ([\d.]+) s", log)
    checked = re.search(r"checked (\d+) images in ([\d.]+) s", log)
    assert found and checked, log
    print(f"scan {found[2]} s ({found[1]} files), check {checked[2]} s ({checked[1]} files)")
    print(f"first training step {first_step:.1f} s after the command started")
    assert int(found[1]) == 100_001 and int(checked[1]) == 6000
    assert first_step <= 60
