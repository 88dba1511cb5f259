"""One training run from a composed config: sources, model, schedule, cache, Trainer; fit; metrics."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ftlab.callbacks.schedule import FinetuneSchedule
from ftlab.callbacks.summary import EpochSummary
from ftlab.config.schemas import checked
from ftlab.config.types import check_types
from ftlab.data import build_datamodule, build_source
from ftlab.errors import FtlabError
from ftlab.features import attach_feature_cache
from ftlab.finetune.phases import build_phases
from ftlab.inference.checkpoint import require_same_classes
from ftlab.models.module import Classifier
from ftlab.training import preflight, recipes


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a config group such as `callbacks` or `logger`."""
    if not node:
        return []
    return [instantiate(entry) for entry in node.values() if entry and "_target_" in entry]


def _optional(node: DictConfig | None) -> Any:
    return instantiate(node) if node and "_target_" in node else None


def _numeric_trainer_hints() -> dict[str, Any]:
    """Trainer arguments annotated with plain int/float/bool (optional): the ones a typo can break."""
    plain = {int, float, bool, type(None)}
    hints = typing.get_type_hints(L.Trainer.__init__)
    return {k: h for k, h in hints.items() if k != "return" and set(typing.get_args(h) or (h,)) <= plain}


def split_trainer_config(node: DictConfig) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Trainer's own arguments, and ftlab's `trainer.compile` option (None when off)."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    trainer_cfg = {str(k): v for k, v in container.items()}
    check_types(trainer_cfg, _numeric_trainer_hints(), prefix="trainer")
    compile_cfg = trainer_cfg.pop("compile", False)
    trainer_cfg.pop("channels_last", None)
    if not compile_cfg:
        return trainer_cfg, None
    return trainer_cfg, dict(compile_cfg) if isinstance(compile_cfg, dict) else {}


def build_schedule(finetune: Any, stage_names: list[str]) -> FinetuneSchedule:
    """The schedule callback from the checked `finetune` config and the backbone's trainable stages."""
    phases = build_phases(
        finetune.strategy,
        stage_names,
        unfreeze_at_epoch=finetune.unfreeze_at_epoch,
        every=finetune.every,
        milestones=finetune.milestones,
        min_stage=finetune.min_stage,
        phases=finetune.phases,
        top_k=finetune.top_k,
    )
    return FinetuneSchedule(phases, bn=finetune.bn, warmup_epochs=finetune.warmup_epochs)


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
    ckpt_path = resolve_ckpt_path(cfg)
    source = build_source(cfg.data, cfg.seed)
    if ckpt_path:
        require_same_classes(ckpt_path, source.classes)
    preflight.check(source, model_cfg.backbone, model_cfg.weights)
    L.seed_everything(cfg.seed, workers=True)

    scheduler_node = cfg.get("scheduler")
    scheduler_cfg = OmegaConf.to_container(scheduler_node, resolve=True) if scheduler_node else {}
    assert isinstance(scheduler_cfg, dict)
    interval, monitor = scheduler_cfg.pop("interval", "epoch"), scheduler_cfg.pop("monitor", None)
    module = Classifier(
        backbone=model_cfg.backbone,
        class_names=source.classes,
        weights=model_cfg.weights,
        image_size=cfg.data.get("image_size"),
        backbone_lr_mult=finetune_cfg.backbone_lr_mult,
        lr_decay=finetune_cfg.lr_decay,
        no_decay_norm_bias=finetune_cfg.no_decay_norm_bias,
        optimizer=_optional(cfg.get("optimizer")),
        scheduler=instantiate(scheduler_cfg) if "_target_" in scheduler_cfg else None,
        scheduler_interval=interval,
        scheduler_monitor=monitor,
        channels_last=bool(cfg.trainer.get("channels_last", False)),
        **recipes.loss_options(cfg),
    )
    schedule = build_schedule(finetune_cfg, module.trainable_stage_names)
    datamodule = build_datamodule(cfg.data, source, module.preprocessing, seed=cfg.seed)
    cache = attach_feature_cache(
        module, schedule, datamodule, checked(cfg, "features"), str(cfg.paths.data_dir)
    )
    trainer_cfg, compile_cfg = split_trainer_config(cfg.trainer)
    trainer_cfg.update(cache.trainer_options)  # loaders follow the planned cache segments
    if compile_cfg is not None:
        module.compile_stages(**compile_cfg)
    summary = EpochSummary()
    callbacks = _instantiate_all(cfg.get("callbacks")) + [schedule, summary]
    callbacks += recipes.recipe_callbacks(cfg, schedule)  # early stopping, EMA
    loggers = _instantiate_all(cfg.get("logger"))
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
