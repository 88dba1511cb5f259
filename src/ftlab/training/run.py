"""One training run from a composed config: sources, model, schedule, cache, Trainer; fit; metrics."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf import DictConfig
from rich.console import Console

from ftlab.callbacks.optuna_trial import TRIAL_ENV, OptunaTrialReport
from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.callbacks.summary import EpochSummary, ModelSummary
from ftlab.data import ImageDataModule, build_datamodule
from ftlab.errors import FtlabError, verbose_enabled
from ftlab.features import attach_feature_cache
from ftlab.finetune.phases import resolve_bn, resolve_bn_momentum
from ftlab.finetune.strategies import FinetuneSettings
from ftlab.inference.checkpoint import require_same_classes
from ftlab.models import preflight
from ftlab.models.backbones import set_bn_momentum
from ftlab.models.module import Classifier
from ftlab.training import recipes
from ftlab.training.precision import resolve_precision
from ftlab.training.settings import TrainSettings, load_settings

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


def _instantiate_all(nodes: dict[str, Any] | None) -> list[Any]:
    """Instantiate every `_target_` entry of a group such as `callbacks` or `logger`."""
    return [
        instantiate(entry, _convert_="all")
        for entry in (nodes or {}).values()
        if entry and "_target_" in entry
    ]


def trial_report(settings: TrainSettings) -> OptunaTrialReport | None:
    """In a job of ftlab's Optuna sweeper with `hydra.sweeper.pruner` set: the callback that reports
    `optimized_metric` to the job's trial each epoch and stops the job when the pruner says so."""
    if os.environ.get(TRIAL_ENV) is None:
        return None
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    sweeper = HydraConfig.get().sweeper if HydraConfig.initialized() else None
    spec = sweeper.get("pruner") if sweeper is not None else None
    pruner = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
    return OptunaTrialReport.from_environment(settings.optimized_metric, pruner)


def build_module(settings: TrainSettings, class_names: list[str], multi_label: bool = False) -> Classifier:
    """The Classifier the settings describe (model, LR policy, optimizer, scheduler, loss, runtime);
    `multi_label` (the source's attribute) gives it a sigmoid head with binary cross-entropy."""
    optimizer, factory = settings.optimizer, settings.scheduler.factory
    module = Classifier(
        backbone=settings.model.backbone,
        class_names=class_names,
        weights=settings.model.weights,
        image_size=settings.data.image_size,
        param_groups=settings.param_groups,
        loss=settings.loss,
        scheduler_interval=settings.scheduler.interval,
        scheduler_monitor=settings.scheduler.monitor,
        channels_last=settings.runtime.channels_last,
        multi_label=multi_label,
        optimizer=instantiate(optimizer) if optimizer and "_target_" in optimizer else None,
        scheduler=instantiate(factory) if factory is not None else None,
    )
    momentum, _ = resolve_bn_momentum(settings.finetune.bn, _pretrained(settings), settings.model.bn_momentum)
    if momentum is not None:
        set_bn_momentum(module.net, momentum)
    return module


def _pretrained(settings: TrainSettings) -> bool:
    """Whether `model.weights` names weights (null, or the strings none/null, mean a random init)."""
    weights = settings.model.weights
    return weights is not None and str(weights).lower() not in ("none", "null")


def build_schedule(
    finetune: FinetuneSettings,
    stage_names: list[str],
    pretrained: bool = False,
    bn_momentum: float | None = None,
) -> ScheduleCallback:
    """The schedule callback from the strategy's settings and the stages; `pretrained` resolves
    `finetune.bn=auto`, logged with the BatchNorm momentum `build_module` gave (`bn_momentum`:
    `model.bn_momentum`)."""
    bn, why = resolve_bn(finetune.bn, pretrained)
    momentum, because = resolve_bn_momentum(finetune.bn, pretrained, bn_momentum)
    shown = "as built" if momentum is None else f"{momentum:g}"
    log.info("BatchNorm policy: %s (%s); momentum %s (%s)", bn, why, shown, because)
    return ScheduleCallback(finetune.to_phases(stage_names), bn=bn, warmup_epochs=finetune.warmup)


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


def cap_log_interval(trainer_cfg: dict[str, Any], datamodule: ImageDataModule) -> None:
    """`trainer.log_every_n_steps` no larger than the training batches of an epoch, so step-level logging
    happens every epoch (with more steps Lightning warns that it logs nothing at step level)."""
    datamodule.setup("fit")  # idempotent: the Trainer's own setup call finds the splits loaded
    assert datamodule.train_set is not None
    batches = math.ceil(len(datamodule.train_set) / datamodule.batch_size)
    if "ddp" in str(trainer_cfg.get("strategy", "")) and isinstance(trainer_cfg.get("devices"), int):
        batches = math.ceil(batches / max(1, trainer_cfg["devices"] * int(trainer_cfg.get("num_nodes", 1))))
    limit = trainer_cfg.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    interval = trainer_cfg.get("log_every_n_steps")
    if interval is not None and 0 < batches < interval:
        trainer_cfg["log_every_n_steps"] = batches


CALIBRATE_MULTI_LABEL = (
    "calibrate=true: temperature scaling fits one softmax temperature, and this data is multi-label (a "
    "sigmoid per label, with per-label thresholds tuned on the validation split for F1). ftlab does not "
    "calibrate multi-label models: a temperature would move every probability off the thresholds tuned for "
    "it. Leave calibrate=false; the thresholds stored in the checkpoint decide each label."
)


def monitor_map(callbacks: list[Any]) -> None:
    """Multi-label runs log no accuracy: checkpoint and early-stopping callbacks watching `val/acc` watch
    `val/mAP` (macro mean average precision, higher is better) instead (logged)."""
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint | EarlyStopping) and callback.monitor == "val/acc":
            callback.monitor = "val/mAP"
            log.info("multi-label data: %s monitors val/mAP instead of val/acc", type(callback).__name__)


def resolve_ckpt_path(settings: TrainSettings) -> str | None:
    """`ckpt_path=<file>` as given; `resume=last`: the newest `last.ckpt` among this task's earlier runs."""
    if settings.ckpt_path:
        path = Path(settings.ckpt_path).expanduser()
        if not path.is_file():
            raise FtlabError(f"ckpt_path={str(path)!r}: no such checkpoint file.")
        return str(path)
    if not settings.resume:
        return None
    task_dir = Path(settings.paths.log_dir) / settings.task_name
    candidates = sorted(task_dir.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FtlabError(f"resume=last: no checkpoints/last.ckpt under {task_dir}; nothing to resume.")
    return str(candidates[-1])


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Run one fine-tuning job from a composed config; return its final metrics and the objects used.

    The config is checked once (`load_settings`) before any data or weights load; everything below
    receives its own typed section.
    """
    return run(load_settings(cfg))


def run(settings: TrainSettings) -> tuple[dict[str, float], dict[str, Any]]:
    """Run one fine-tuning job from checked settings; return its final metrics and the objects used."""
    ckpt_path = resolve_ckpt_path(settings)
    source = settings.data.build_source(settings.seed)
    if ckpt_path:
        require_same_classes(ckpt_path, source.classes)
    model = settings.model
    preflight.check(source, model.backbone, model.weights)
    L.seed_everything(settings.seed, workers=True)

    multi_label = bool(getattr(source, "multi_label", False))
    if multi_label and settings.calibrate:
        raise FtlabError(CALIBRATE_MULTI_LABEL)
    module = build_module(settings, source.classes, multi_label)
    schedule = build_schedule(
        settings.finetune, module.trainable_stage_names, _pretrained(settings), model.bn_momentum
    )
    trainer_cfg = settings.trainer_options
    warn_unreached_phases(schedule, trainer_cfg.get("max_epochs"))
    datamodule = build_datamodule(settings.data, source, module.preprocessing, seed=settings.seed)
    cache = attach_feature_cache(module, schedule, datamodule, settings.features, settings.paths.data_dir)
    trainer_cfg.update(cache.trainer_options)  # loaders follow the planned cache segments
    precision, why = resolve_precision(
        trainer_cfg.get("precision"), trainer_cfg.get("accelerator"), model.backbone
    )
    trainer_cfg["precision"] = precision  # `auto` becomes a Lightning value
    if why is not None:
        log.info("Precision: %s (%s)", precision, why)
    compile_cfg = settings.runtime.compile_options()
    if compile_cfg is not None:
        module.compile_stages(**compile_cfg)
    summary = EpochSummary()
    callbacks = _instantiate_all(settings.callbacks) + [schedule, summary]
    if trainer_cfg.get("enable_model_summary", True):  # ftlab's summary instead of Lightning's default one
        callbacks.append(ModelSummary())  # (Lightning's would print "Total FLOPs: 0")
        trainer_cfg["enable_model_summary"] = False
    cap_log_interval(trainer_cfg, datamodule)
    callbacks += recipes.recipe_callbacks(settings, schedule)  # early stopping, LR finder, EMA, budget
    if multi_label:
        monitor_map(callbacks)
    report = trial_report(settings)  # a pruned Optuna sweep's job
    if report is not None:
        callbacks.append(report)
    loggers = _instantiate_all(settings.logger)
    with known_noise_filtered():
        trainer: L.Trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)  # type: ignore[attr-defined]
    score = "val_mAP" if multi_label else "val_acc"
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best/{score}"] = float(checkpoint.best_model_score)
    output_dir = settings.paths.output_dir
    log_dir = trainer.log_dir or output_dir  # a collective under DDP: every rank asks
    if trainer.is_global_zero:
        console = Console()
        console.print(f"logs: {log_dir}  (tensorboard --logdir {output_dir})")
        if checkpoint is not None and checkpoint.best_model_path:
            best = metrics.get(f"best/{score}", float("nan"))
            shown = checkpoint.monitor or score.replace("_", "/", 1)
            console.print(f"best checkpoint: {checkpoint.best_model_path}  ({shown} {best:.4f})")
        if settings.calibrate and checkpoint is not None and checkpoint.best_model_path:
            from ftlab.inference.evaluation import calibrate  # temperature scaling on the val split

            fit = calibrate(checkpoint.best_model_path, settings.data, settings.seed, "auto")
            console.print(
                f"calibrated: temperature {fit['temperature']:.4f} "
                f"(val NLL {fit['val_nll_before']:.4f} -> {fit['val_nll_after']:.4f})"
            )
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule, "summary": summary}
