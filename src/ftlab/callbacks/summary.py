"""Summaries a run prints: the model (Lightning's, without a meaningless FLOPs line) and one row per epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, RichModelSummary
from rich import get_console
from rich.console import Console
from rich.table import Table

COLUMNS = ("train/loss", "train/acc", "val/loss", "val/acc")
MULTI_LABEL_COLUMNS = ("train/loss", "val/loss", "val/mAP", "val/f1_macro")  # runs on multi-label data


class EpochSummary(Callback):
    """Collects the epoch metrics (after validation) and prints `epoch  loss  acc ...` at the end."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": float(trainer.current_epoch + 1)}
        for key in COLUMNS + MULTI_LABEL_COLUMNS:
            if key in trainer.callback_metrics:
                row[key] = float(trainer.callback_metrics[key])
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def table(self) -> Table:
        """The rows as a rich table (mAP and macro F1 instead of accuracy for multi-label runs)."""
        columns = MULTI_LABEL_COLUMNS if any("val/mAP" in row for row in self.rows) else COLUMNS
        table = Table(title="ftlab: per-epoch metrics")
        table.add_column("epoch", justify="right")
        for key in columns:
            table.add_column(key, justify="right")
        for row in self.rows:
            table.add_row(f"{int(row['epoch'])}", *(f"{row[k]:.4f}" if k in row else "-" for k in columns))
        return table

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            Console().print(self.table())


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary without its "Total FLOPs: 0" line.

    Lightning counts FLOPs only with an `example_input_array`, which ftlab's Classifier does not carry (its
    batches go through the DataModule's device transform and the feature cache), so the total would always
    read 0.
    The rest of the summary prints as Lightning prints it.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        console = get_console()
        with console.capture() as captured:
            RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
        lines = captured.get().splitlines(keepends=True)
        if total_flops == 0:
            lines = [line for line in lines if "Total FLOPs" not in line]
        console.file.write("".join(lines))
        console.file.flush()
