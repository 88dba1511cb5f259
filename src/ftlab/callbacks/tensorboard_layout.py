"""TensorBoard that opens on what matters: a custom-scalars layout (train and val loss on one chart, train and
val accuracy on another, then the per-stage transfer charts) and epoch-level scalars against the epoch.
The logger that names sweep runs by their swept overrides is `loggers/tensorboard.py`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

# Category -> chart -> tag regexes, in the order TensorBoard's Custom Scalars tab shows them.
LAYOUT: dict[str, dict[str, list[str]]] = {
    "loss and accuracy": {
        "loss (train vs val)": [r"^train/loss$", r"^val/loss$"],
        "accuracy (train vs val)": [r"^train/acc$", r"^val/acc$"],
    },
    "transfer per stage": {
        "weight drift ||W - W0|| / ||W0||": [r"^drift/"],
        "gradient norm": [r"^grad_norm/"],
        "learning rate": [r"^lr/"],
    },
}


# Multi-label runs log no accuracy: their first category charts loss, mAP and F1, then AP per label.
MULTI_LABEL_LAYOUT: dict[str, dict[str, list[str]]] = {
    "loss and mAP": {
        "loss (train vs val)": [r"^train/loss$", r"^val/loss$"],
        "val mAP and F1 (macro, micro)": [r"^val/mAP$", r"^val/f1_macro$", r"^val/f1_micro$"],
        "val AP per label": [r"^val/class_ap/"],
    },
    "transfer per stage": LAYOUT["transfer per stage"],
}


def custom_scalars_layout(multi_label: bool = False) -> dict[str, dict[str, list[Any]]]:
    """`LAYOUT` (or `MULTI_LABEL_LAYOUT`) in the form `SummaryWriter.add_custom_scalars` takes (every chart
    a multiline chart)."""
    layout = MULTI_LABEL_LAYOUT if multi_label else LAYOUT
    return {
        category: {title: ["Multiline", tags] for title, tags in charts.items()}
        for category, charts in layout.items()
    }


class TensorBoardLayout(Callback):
    """Writes the custom-scalars layout at the start of fitting; logs epoch-level scalars at step = epoch.

    Lightning logs a metric called `step` as the x-value of the metrics flushed with it (its documented way
    to plot against something other than the global step); logging the epoch there at the end of each
    train and val epoch puts loss, accuracy, learning rates and diagnostics on an epoch axis.
    """

    def __init__(self, epoch_axis: bool = True) -> None:
        self.epoch_axis = epoch_axis

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                multi_label = bool(getattr(pl_module, "multi_label", False))
                logger.experiment.add_custom_scalars(custom_scalars_layout(multi_label))

    def _log_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch_axis and not trainer.sanity_checking:
            pl_module.log("step", float(trainer.current_epoch), on_step=False, on_epoch=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module)
