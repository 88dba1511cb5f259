"""Test helper loaded by CLI runs (`+callbacks.rank_dump._target_=tests.helpers.rank_dump.SaveRankWeights`):
each DDP rank saves its network's weights at the start and the end of fitting."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class SaveRankWeights(Callback):
    """Writes `<out_dir>/rank<r>_{start,end}.pt` with the rank's `net` state dict."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def _save(self, trainer, pl_module, when: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}
        torch.save(state, self.out_dir / f"rank{trainer.global_rank}_{when}.pt")

    def on_fit_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "start")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "end")
