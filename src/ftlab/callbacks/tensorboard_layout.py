"""TensorBoard that opens on what matters: a custom-scalars layout (train and val loss on one chart, train and
val accuracy on another, then the per-stage transfer charts), epoch-level scalars against the epoch, and in
a sweep, runs named by their swept overrides (`optimizer.lr=0.001,finetune=gradual`), not `0/tensorboard`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning as L
import yaml
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


def custom_scalars_layout() -> dict[str, dict[str, list[Any]]]:
    """`LAYOUT` in the form `SummaryWriter.add_custom_scalars` takes (every chart a multiline chart)."""
    return {
        category: {title: ["Multiline", tags] for title, tags in charts.items()}
        for category, charts in LAYOUT.items()
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
                logger.experiment.add_custom_scalars(custom_scalars_layout())

    def _log_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch_axis and not trainer.sanity_checking:
            pl_module.log("step", float(trainer.current_epoch), on_step=False, on_epoch=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module)


def _key(override: Any) -> str:
    return str(override.get_key_element()).lstrip("+~")


def swept_overrides() -> str:
    """In a Hydra multirun, this job's values of the swept keys (`optimizer.lr=0.001,finetune=gradual`);
    "" outside a sweep. Swept keys: sweep syntax on the sweep's command line (its `multirun.yaml`) and the
    sweeper's `params` (Optuna's search space)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    parser = OverridesParser.create()
    swept = {str(k).lstrip("+~") for k in (hydra_cfg.sweeper.get("params") or {})}
    multirun = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
    if multirun.is_file():
        sweep_args = list(yaml.safe_load(multirun.read_text())["hydra"]["overrides"]["task"])
        swept |= {_key(o) for o in parser.parse_overrides(sweep_args) if o.is_sweep_override()}
    job = parser.parse_overrides(list(hydra_cfg.overrides.task))
    parts = [f"{_key(o)}={o.get_value_element_as_str()}" for o in job if _key(o) in swept]
    return re.sub(r"[/\\]", "_", ",".join(parts))


class RunNamedTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger whose `version` folder, in a sweep, is named by the swept overrides.

    TensorBoard names a run by its folder below `--logdir`, so a sweep shows `0/tensorboard/lr=0.001,...`
    rather than `0/tensorboard`; a single run keeps its events in `tensorboard/` itself.
    """

    def __init__(self, save_dir: str, name: str = "tensorboard", version: str | None = None, **kwargs: Any):
        super().__init__(
            save_dir, name=name, version=swept_overrides() if version is None else version, **kwargs
        )
