"""Checkpoint writes are atomic: a failed or interrupted write never replaces a good file."""

from __future__ import annotations

import errno
import io
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.demos.boring_classes import BoringModel

from ftlab.errors import FtlabError
from ftlab.io.checkpoints import AtomicCheckpointIO
from tests.helpers.cli import CONF, TINY, run_cli
from tests.helpers.faults import FAULT_ENV, fault_args
from tests.helpers.runs import load_ckpt, one_paragraph, only_run

STEPS_PER_EPOCH = 3  # 24 training images in batches of 8


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
    assert load_ckpt(path)["epoch"] == 1 and torch.equal(load_ckpt(path)["w"], torch.arange(100_000.0))

    # The fault is real: writing in place, as a plain open(path, "wb") does, destroys the previous file.
    naive = tmp_path / "naive.ckpt"
    monkeypatch.undo()
    _naive_save({"epoch": 1}, naive)
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        _naive_save({"epoch": 2, "w": torch.zeros(100_000)}, naive)
    monkeypatch.undo()
    with pytest.raises(Exception):  # noqa: B017 (any unpickling error)
        load_ckpt(naive)


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
    assert os.listdir(tmp_path) == ["last.ckpt"] and load_ckpt(path)["epoch"] == 1


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
    assert load_ckpt(checkpoints / "best.ckpt")["global_step"] == 2  # epoch 1, never beaten
    assert load_ckpt(checkpoints / "last.ckpt")["global_step"] == 6  # epoch 3: what resume=last must find


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
    result = run_cli("ftlab.train", [*args, *fault_args("LimitFileSize", epoch=2)], tmp_path, FAULT_ENV)
    assert result.returncode == 2, result.stderr[-3000:]
    message = one_paragraph(result.stderr)
    assert "Could not write the checkpoint" in message and "File too large" in message
    checkpoints = only_run(logs) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("best.ckpt", "last.ckpt"):
        assert load_ckpt(checkpoints / name)["global_step"] == STEPS_PER_EPOCH
