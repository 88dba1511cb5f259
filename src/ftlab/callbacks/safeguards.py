"""Training safeguards (Lightning callbacks): stop on a non-finite loss, save a checkpoint on interrupt."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ftlab.errors import FtlabError

EXIT_SIGTERM = 128 + 15  # what a shell reports for a process ended by SIGTERM: not a success


def _checkpoint_note(trainer: L.Trainer) -> str:
    """Which checkpoints exist so far, for messages."""
    saved = {
        p
        for cb in trainer.checkpoint_callbacks
        if isinstance(cb, ModelCheckpoint)
        for p in (cb.best_model_path, cb.last_model_path)
        if p
    }
    if not saved:
        return "No checkpoint had been written yet."
    return f"The last good checkpoints are intact: {', '.join(sorted(saved))}."


class NonFiniteGuard(Callback):
    """Stop the run when the training loss becomes NaN or infinite, before that step updates the weights.

    The check runs before the backward pass of every step (all ranks agree under DDP). Weights that turn
    non-finite otherwise (e.g. from overflowing gradients) are caught when a checkpoint is about to be
    saved, so no checkpoint ever holds them and the last good one stays intact.
    """

    def __init__(self) -> None:
        self.batch_idx = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batch_idx = batch_idx

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        value = float(loss.detach().float().sum())
        if not trainer.strategy.reduce_boolean_decision(not math.isfinite(value), all=False):
            return
        epoch, step = trainer.current_epoch + 1, trainer.global_step + 1
        raise FtlabError(
            f"The training loss became {value} at epoch {epoch}, step {step} (batch {self.batch_idx + 1} of "
            f"epoch {epoch}; counted from 1). The run stopped before this step changed the weights. "
            f"{_checkpoint_note(trainer)} Lower optimizer.lr, set trainer.gradient_clip_val, or check the "
            "data for extreme values; then continue with resume=last or start again."
        )

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        bad = [name for name, p in pl_module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise FtlabError(
                f"The weights became NaN or infinite at epoch {trainer.current_epoch + 1}, step "
                f"{trainer.global_step} ({len(bad)} tensors, e.g. {bad[0]}); the run stopped instead of "
                f"saving them. {_checkpoint_note(trainer)} Lower optimizer.lr or set "
                "trainer.gradient_clip_val."
            )


class SaveOnInterrupt(Callback):
    """On Ctrl-C or SIGTERM, save the current state as `<dirpath>/<filename>.ckpt`, then end the run cleanly.

    With the default `last`, the file is `checkpoints/last.ckpt`, the one `resume=last` continues from
    (mid-epoch states resume at the next batch). SIGTERM is acted on between batches, where the state is
    consistent. Ctrl-C stops at once; should it land inside an optimizer step, where weights and optimizer
    state may be half updated, nothing is saved and the checkpoint of the last epoch is kept. The process
    exits with status 1 after Ctrl-C (Lightning's) and 143 after SIGTERM, never 0.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.in_optimizer_step = False

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        self.in_optimizer_step = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.in_optimizer_step = False

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        what = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
        if isinstance(exception, SIGTERMException):
            exception.code = EXIT_SIGTERM
        where = f"epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
        if self.in_optimizer_step:
            self._say(
                trainer,
                f"{what} during an optimizer step ({where}): nothing saved. {_checkpoint_note(trainer)}",
            )
            return
        try:
            trainer.save_checkpoint(self.path)
        except (OSError, FtlabError) as err:
            self._say(trainer, f"{what} at {where}, and the checkpoint could not be saved: {err}")
            return
        self._say(
            trainer,
            f"{what} at {where}: saved {self.path}. Continue with the same command plus resume=last "
            f"(or ckpt_path={self.path}).",
        )

    @staticmethod
    def _say(trainer: L.Trainer, message: str) -> None:
        if trainer.is_global_zero:
            print(f"\nftlab: {message}", file=sys.stderr, flush=True)
