"""Per-epoch summary: one row per epoch, printed as a table when training ends."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table

COLUMNS = ("train/loss", "train/acc", "val/loss", "val/acc")


class EpochSummary(Callback):
    """Collects the epoch metrics (after validation) and prints `epoch  loss  acc ...` at the end."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": float(trainer.current_epoch + 1)}
        for key in COLUMNS:
            if key in trainer.callback_metrics:
                row[key] = float(trainer.callback_metrics[key])
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def table(self) -> Table:
        """The rows as a rich table."""
        table = Table(title="ftlab: per-epoch metrics")
        table.add_column("epoch", justify="right")
        for key in COLUMNS:
            table.add_column(key, justify="right")
        for row in self.rows:
            table.add_row(f"{int(row['epoch'])}", *(f"{row[k]:.4f}" if k in row else "-" for k in COLUMNS))
        return table

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            Console().print(self.table())
