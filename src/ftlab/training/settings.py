"""The typed settings of one training run (`conf/train.yaml` after composition): every group as the settings
type its package registered, checked once by `load_settings` before anything heavy starts."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import lightning as L

from ftlab.callbacks.early_stopping import EarlyStoppingSettings
from ftlab.callbacks.ema import EmaSettings
from ftlab.callbacks.time_budget import parse_duration
from ftlab.config.check import to_settings
from ftlab.config.moved import check_moved
from ftlab.config.registry import register
from ftlab.config.types import check_types
from ftlab.data.settings import DataSettings
from ftlab.data.sources.registry import SETTINGS as DATA_SETTINGS  # registers every source's settings
from ftlab.errors import FtlabError
from ftlab.features.settings import CacheSettings
from ftlab.finetune.lr import SchedulerSettings
from ftlab.finetune.param_groups import ParamGroupsSettings
from ftlab.finetune.strategies import FinetuneSettings
from ftlab.models.backbones import ModelSettings
from ftlab.models.loss import LossSettings
from ftlab.models.module import RuntimeSettings
from ftlab.training.precision import check_precision

__all__ = ["DATA_SETTINGS", "FTLAB_TRAINER_KEYS", "PathsSettings", "TrainSettings"]

# ftlab's own keys of the `trainer` node, resolved by ftlab and never passed to Lightning's Trainer
FTLAB_TRAINER_KEYS = ("time_budget",)


@register("paths", "settings")
@dataclass
class PathsSettings:
    """`paths`: folders; relative paths are relative to where the command runs."""

    data_dir: str = "data"  # datasets (CIFAR-10 archive, ...) and the shared feature cache
    log_dir: str = "logs"  # root of all run folders
    output_dir: str | None = None  # this run's folder (paths/default.yaml: hydra.run.dir)


def _numeric_trainer_hints() -> dict[str, Any]:
    """Trainer arguments annotated with plain int/float/bool (optional): the ones a typo can break."""
    plain = {int, float, bool, type(None)}
    hints = typing.get_type_hints(L.Trainer.__init__)
    return {k: h for k, h in hints.items() if k != "return" and set(typing.get_args(h) or (h,)) <= plain}


@register("command", "train")
@dataclass
class TrainSettings:
    """`python -m ftlab.train`: one fine-tuning run."""

    task_name: str = "train"  # names the log folder: logs/<task_name>/<timestamp>/
    seed: int = 42  # seeds torch, numpy, python and dataloader workers; also the data split
    ckpt_path: str | None = None  # resume from this Lightning checkpoint file
    resume: str | None = None  # last = resume the newest run of this task from its checkpoints/last.ckpt
    optimized_metric: str | None = "val/acc"  # value returned to Hydra sweepers
    calibrate: bool = False  # true: after training, fit temperature scaling on the val split into best.ckpt
    data: DataSettings = field(default_factory=DataSettings)  # data=<source>
    model: ModelSettings = field(default_factory=ModelSettings)  # model=<backbone>
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)  # finetune=<strategy>
    features: CacheSettings = field(default_factory=CacheSettings)  # features=default
    param_groups: ParamGroupsSettings = field(default_factory=ParamGroupsSettings)  # per-stage LR policy
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)  # compile, channels_last
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)  # scheduler=<name>
    loss: LossSettings = field(default_factory=LossSettings)  # loss=default
    ema: EmaSettings = field(default_factory=EmaSettings)  # ema=default
    # early_stopping=default
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)
    paths: PathsSettings = field(default_factory=PathsSettings)  # paths=default
    optimizer: Any = None  # a torch optimizer node (`_target_`, `_partial_: true`), built by Hydra
    trainer: Any = None  # Lightning Trainer arguments (`_target_: lightning.pytorch.Trainer`)
    logger: Any = None  # Lightning loggers by name (`_target_` nodes)
    callbacks: Any = None  # Lightning callbacks by name (`_target_` nodes)
    hparams_search: Any = None  # hparams_search=optuna: the sweeper's search space (with -m)
    debug: Any = None  # debug=fast: a few batches

    def __post_init__(self) -> None:
        if self.resume not in (None, "last"):
            raise FtlabError(f"resume={self.resume!r}: the only value is `last` (or give ckpt_path=<file>).")
        trainer = dict(self.trainer or {})
        check_moved(f"trainer.{k}" for k in trainer)
        check_types(trainer, _numeric_trainer_hints(), prefix="trainer")
        check_precision(trainer.get("precision"))
        parse_duration(trainer.get("time_budget"))
        self.trainer = trainer

    @property
    def trainer_options(self) -> dict[str, Any]:
        """A copy of the Trainer's arguments (the caller may add to it), without ftlab's own keys."""
        return {k: v for k, v in self.trainer.items() if k not in FTLAB_TRAINER_KEYS}

    @property
    def time_budget_s(self) -> float | None:
        """`trainer.time_budget` in seconds (`10m`, `90s`, `1h30m`); None when off."""
        return parse_duration(self.trainer.get("time_budget"))


def group_types() -> dict[str, Any]:
    """The settings type of every typed group of the run (for the configuration reference)."""
    return {f.name: f.type for f in dataclasses.fields(TrainSettings)}


def load_settings(cfg: Any) -> TrainSettings:
    """The one check of a composed training config: typed settings, or one `FtlabError` naming the key."""
    return to_settings(cfg, TrainSettings)
