"""Reading what a finished run left behind: its folder, checkpoints, logged steps, error text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def load_ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def only_run(logs: Path) -> Path:
    (run_dir,) = [p for p in (logs / "smoke").iterdir() if p.is_dir()]
    return run_dir


def val_steps(run_dir: Path) -> list[int]:
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars("val/acc")]


def one_paragraph(stderr: str) -> str:
    """The ftlab error text with line breaks removed; fails on a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "ftlab: error:" in stderr, stderr[-3000:]
    return " ".join(stderr.split())
