"""Faults injected from outside the code under test, by callbacks added on the command line
(`+callbacks.fault._target_=tests.helpers.faults.<name>`)."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from tests.helpers.cli import REPO, offline_env

FAULT_ENV = offline_env(PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


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


def fault_args(name: str, **kwargs: Any) -> list[str]:
    args = [f"+callbacks.fault._target_=tests.helpers.faults.{name}"]
    return args + [f"+callbacks.fault.{k}={v}" for k, v in kwargs.items()]
