"""Lightning Trainers for in-process unit runs: CPU, no logger, checkpoints, progress bar or summary; one
process, or two gloo ranks forked from the test (skipped where gloo or fork is missing)."""

from __future__ import annotations

import multiprocessing
from typing import Any

import lightning as L
import pytest
import torch.distributed as dist

from tests.helpers.cli import free_port


def quiet_cpu_trainer(**kwargs: Any) -> L.Trainer:
    """`L.Trainer(**kwargs)` on the CPU with nothing written or printed; kwargs override the defaults."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**(options | kwargs))


FORK = "fork" in multiprocessing.get_all_start_methods()
GLOO_FORK = FORK and dist.is_available() and dist.is_gloo_available()
needs_gloo_fork = pytest.mark.skipif(not GLOO_FORK, reason="needs torch.distributed with gloo, and fork")


def two_cpu_ranks(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> L.Trainer:
    """A quiet CPU Trainer of 2 DDP ranks over gloo on a free loopback port, forked from this process
    (`strategy="ddp_fork"`: no re-imports; test-local classes need no pickling). Only rank 0's weights come
    back to this process: what each rank saw must be written to files. Mark the test `needs_gloo_fork`."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    return quiet_cpu_trainer(devices=2, strategy="ddp_fork", **kwargs)
