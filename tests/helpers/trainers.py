"""A Lightning Trainer for in-process unit runs: CPU, no logger, checkpoints, progress bar or summary."""

from __future__ import annotations

from typing import Any

import lightning as L


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
