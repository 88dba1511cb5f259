"""One training run from a composed config: sources, model, schedule, cache, Trainer; fit; metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.callbacks.summary import EpochSummary
from ftlab.config.schemas import (
    FinetuneSchema,
    RuntimeSchema,
    SchedulerSchema,
    check_moved,
    checked,
)
from ftlab.config.types import check_types
from ftlab.data import build_datamodule, build_source
from ftlab.errors import FtlabError, verbose_enabled
from ftlab.features import attach_feature_cache
from ftlab.finetune.phases import build_phases, resolve_bn
from ftlab.inference.checkpoint import require_same_classes
from ftlab.models import preflight
from ftlab.models.backbones import set_bn_momentum
from ftlab.models.module import Classifier
from ftlab.training import recipes
from ftlab.training.precision import check_precision, resolve_precision

log = logging.getLogger(__name__)


class _DropTips(logging.Filter):
    """Drops Lightning's advertising lines ("💡 Tip: For seamless cloud logging ... litlogger/litmodels")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


@contextlib.contextmanager
def known_noise_filtered() -> Iterator[None]:
    """Hide library messages a user cannot act on while the Trainer is built and runs.

    FTLAB_VERBOSE=1 (or HYDRA_FULL_ERROR=1) shows everything. Only these known lines are hidden; any other
    warning still prints.
    """
    if verbose_enabled():
        yield
        return
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    tips = _DropTips()
    with warnings.catch_warnings():
        # ftlab puts frozen stages (and their BatchNorm) in eval mode on purpose (`finetune.bn`): Lightning's
        # "Found N module(s) in eval mode ... may lead to unexpected behavior" describes the intended state.
        warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode", PossibleUserWarning)
        # Lightning's pytree helper uses torch's deprecated LeafSpec every epoch: nothing a user can change.
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
        # Under mixed precision the weights stay fp32, which is what Lightning's model summary then counts
        # anyway ("Precision bf16-mixed is not supported by the model summary ... Using 32 bits instead").
        warnings.filterwarnings("ignore", r"Precision \S+ is not supported by the model summary", UserWarning)
        # Lightning's tips advertise its cloud services (litlogger, litmodels); they are not about this run.
        rank_zero_log.addFilter(tips)
        try:
            yield
        finally:
            rank_zero_log.removeFilter(tips)


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a config group such as `callbacks` or `logger`."""
    if not node:
        return []
    return [instantiate(entry) for entry in node.values() if entry and "_target_" in entry]


def _optional(node: DictConfig | None) -> Any:
    return instantiate(node) if node and "_target_" in node else None


SCHEDULER_INTERVALS = ("epoch", "step")


def _numeric_trainer_hints() -> dict[str, Any]:
    """Trainer arguments annotated with plain int/float/bool (optional): the ones a typo can break."""
    plain = {int, float, bool, type(None)}
    hints = typing.get_type_hints(L.Trainer.__init__)
    return {k: h for k, h in hints.items() if k != "return" and set(typing.get_args(h) or (h,)) <= plain}


def trainer_options(node: DictConfig) -> dict[str, Any]:
    """The Trainer's arguments from the `trainer` node, numbers type-checked (old ftlab keys: "moved to")."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    trainer_cfg = {str(k): v for k, v in container.items()}
    check_moved(f"trainer.{k}" for k in trainer_cfg)
    check_types(trainer_cfg, _numeric_trainer_hints(), prefix="trainer")
    return trainer_cfg


def compile_options(runtime: RuntimeSchema) -> dict[str, Any] | None:
    """Keyword arguments of `Classifier.compile_stages` from `runtime.compile`; None when off."""
    value = runtime.compile
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if isinstance(value, dict) and set(value) <= {"backend", "mode"}:
        return dict(value)
    raise FtlabError(
        f"runtime.compile={value!r}: give false, true or {{backend: <torch.compile backend>, mode: <mode>}}, "
        "e.g. runtime.compile=true or runtime.compile='{backend: inductor, mode: max-autotune}'."
    )


def scheduler_settings(cfg: DictConfig) -> SchedulerSchema:
    """The checked `scheduler` node: its torch factory config plus Lightning's stepping options."""
    scheduler = checked(cfg, "scheduler")
    if scheduler.interval not in SCHEDULER_INTERVALS:
        raise FtlabError(
            f"scheduler.interval={scheduler.interval!r}: Lightning steps a scheduler once per `epoch` or "
            "every optimizer `step`; give one of those."
        )
    factory = scheduler.factory
    if factory is not None and not (isinstance(factory, dict) and "_target_" in factory):
        raise FtlabError(
            f"scheduler.factory={factory!r}: give a Hydra node with `_target_` (a torch LR scheduler, "
            "`_partial_: true`) or null for a constant LR (scheduler=none)."
        )
    return scheduler


def check_config(cfg: DictConfig) -> None:
    """Every ftlab-read group checked at once, before data or weights load: one clear error when wrong."""
    for group in ("model", "finetune", "param_groups", "features", "loss", "ema", "early_stopping"):
        checked(cfg, group)
    scheduler_settings(cfg)
    compile_options(checked(cfg, "runtime"))
    check_precision(trainer_options(cfg.trainer).get("precision"))


def build_module(cfg: DictConfig, class_names: list[str]) -> Classifier:
    """The Classifier the config describes (model, LR policy, optimizer, scheduler, runtime options)."""
    model_cfg, groups = checked(cfg, "model"), checked(cfg, "param_groups")
    scheduler, runtime = scheduler_settings(cfg), checked(cfg, "runtime")
    module = Classifier(
        backbone=model_cfg.backbone,
        class_names=class_names,
        weights=model_cfg.weights,
        image_size=cfg.data.get("image_size"),
        backbone_lr_mult=groups.backbone_lr_mult,
        lr_decay=groups.lr_decay,
        no_decay_norm_bias=groups.no_decay_norm_bias,
        optimizer=_optional(cfg.get("optimizer")),
        scheduler=instantiate(scheduler.factory) if scheduler.factory is not None else None,
        scheduler_interval=scheduler.interval,
        scheduler_monitor=scheduler.monitor,
        channels_last=runtime.channels_last,
        **recipes.loss_options(cfg),
    )
    if model_cfg.bn_momentum is not None:
        set_bn_momentum(module.net, model_cfg.bn_momentum)
    return module


def build_schedule(
    finetune: FinetuneSchema, stage_names: list[str], pretrained: bool = False
) -> ScheduleCallback:
    """The schedule callback from the checked `finetune` config (its strategy's own keys) and the stages;
    `pretrained` resolves `finetune.bn=auto` (logged)."""
    options = dataclasses.asdict(finetune)
    strategy = options.pop("strategy")
    bn, why = resolve_bn(options.pop("bn"), pretrained)
    log.info("BatchNorm policy: %s (%s)", bn, why)
    warmup_epochs = options.pop("warmup_epochs", 0.0)
    options.pop("lr_find", None)  # recipes: read by training/recipes.py, not a phase option
    phases = build_phases(strategy, stage_names, **options)
    return ScheduleCallback(phases, bn=bn, warmup_epochs=warmup_epochs)


def warn_unreached_phases(schedule: ScheduleCallback, max_epochs: int | None) -> None:
    """Log a warning for each phase that starts at or after `trainer.max_epochs`: its stages never train."""
    for phase in schedule.unreached(max_epochs):
        log.warning(
            "finetune: the phase from epoch %d never runs with trainer.max_epochs=%d, so %s never "
            "train%s; lower finetune.unfreeze_at_epoch (or the milestones) or raise trainer.max_epochs.",
            phase.at_epoch,
            max_epochs,
            ", ".join(sorted(phase.trainable)) or "no stages",
            "s" if len(phase.trainable) == 1 else "",
        )


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path=<file>` as given; `resume=last`: the newest `last.ckpt` among this task's earlier runs."""
    if cfg.get("ckpt_path"):
        path = Path(str(cfg.ckpt_path)).expanduser()
        if not path.is_file():
            raise FtlabError(f"ckpt_path={str(path)!r}: no such checkpoint file.")
        return str(path)
    resume = cfg.get("resume")
    if not resume:
        return None
    if resume != "last":
        raise FtlabError(f"resume={resume!r}: the only value is `last` (or give ckpt_path=<file>).")
    task_dir = Path(str(cfg.paths.log_dir)) / str(cfg.task_name)
    candidates = sorted(task_dir.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FtlabError(f"resume=last: no checkpoints/last.ckpt under {task_dir}; nothing to resume.")
    return str(candidates[-1])


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Run one fine-tuning job from a composed config; return its final metrics and the objects used."""
    model_cfg, finetune_cfg = checked(cfg, "model"), checked(cfg, "finetune")
    check_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    source = build_source(cfg.data, cfg.seed)
    if ckpt_path:
        require_same_classes(ckpt_path, source.classes)
    preflight.check(source, model_cfg.backbone, model_cfg.weights)
    L.seed_everything(cfg.seed, workers=True)

    module = build_module(cfg, source.classes)
    schedule = build_schedule(finetune_cfg, module.trainable_stage_names, model_cfg.weights is not None)
    warn_unreached_phases(schedule, cfg.trainer.get("max_epochs"))
    datamodule = build_datamodule(cfg.data, source, module.preprocessing, seed=cfg.seed)
    cache = attach_feature_cache(
        module, schedule, datamodule, checked(cfg, "features"), str(cfg.paths.data_dir)
    )
    trainer_cfg, compile_cfg = trainer_options(cfg.trainer), compile_options(checked(cfg, "runtime"))
    trainer_cfg.update(cache.trainer_options)  # loaders follow the planned cache segments
    precision, why = resolve_precision(trainer_cfg.get("precision"), trainer_cfg.get("accelerator"))
    trainer_cfg["precision"] = precision  # `auto` becomes a Lightning value
    if why is not None:
        log.info("Precision: %s (%s)", precision, why)
    if compile_cfg is not None:
        module.compile_stages(**compile_cfg)
    summary = EpochSummary()
    callbacks = _instantiate_all(cfg.get("callbacks")) + [schedule, summary]
    callbacks += recipes.recipe_callbacks(cfg, schedule)  # early stopping, EMA
    loggers = _instantiate_all(cfg.get("logger"))
    with known_noise_filtered():
        trainer: L.Trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)  # type: ignore[attr-defined]
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics["best/val_acc"] = float(checkpoint.best_model_score)
    log_dir = trainer.log_dir or cfg.paths.output_dir  # a collective under DDP: every rank asks
    if trainer.is_global_zero:
        console = Console()
        console.print(f"logs: {log_dir}  (tensorboard --logdir {cfg.paths.output_dir})")
        if checkpoint is not None and checkpoint.best_model_path:
            best = metrics.get("best/val_acc", float("nan"))
            console.print(f"best checkpoint: {checkpoint.best_model_path}  (val/acc {best:.4f})")
        if cfg.get("calibrate") and checkpoint is not None and checkpoint.best_model_path:
            from ftlab.inference.evaluation import calibrate  # temperature scaling on the val split

            fit = calibrate(checkpoint.best_model_path, cfg.data, cfg.seed, "auto")
            console.print(
                f"calibrated: temperature {fit['temperature']:.4f} "
                f"(val NLL {fit['val_nll_before']:.4f} -> {fit['val_nll_after']:.4f})"
            )
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule, "summary": summary}
