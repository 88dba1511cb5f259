"""Lightning Trainers for in-process unit runs: CPU, no logger, checkpoints, progress bar or summary; one
process, or two gloo ranks started from the test (skipped where gloo is missing)."""

from __future__ import annotations

import multiprocessing
from typing import Any

import lightning as L
import pytest
import torch
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


needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)


def two_cpu_ranks(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> L.Trainer:
    """A quiet CPU Trainer of 2 DDP ranks over gloo on a free loopback port (mark the test `needs_gloo`).

    The ranks are forked from this process (`ddp_fork`: no re-imports, seconds instead of tens); where fork
    is missing, or CUDA is already initialised here (Lightning refuses to fork then: an earlier test on a
    GPU machine), they are spawned (`ddp_spawn`: the model and callbacks must be importable, module-level
    classes). Only rank 0's weights come back to this process: what each rank saw must go to files.
    """
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    fork = "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized()
    return quiet_cpu_trainer(devices=2, strategy="ddp_fork" if fork else "ddp_spawn", **kwargs)
