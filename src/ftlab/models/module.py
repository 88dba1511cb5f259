"""The LightningModule: a backbone split into stages plus a fresh head, cross-entropy, accuracy, and
optimizer groups per stage so a fine-tuning schedule can unfreeze without rebuilding the optimizer.

Multi-label data (`multi_label=True`) trains a sigmoid head with binary cross-entropy; each validation epoch
logs macro mAP (`val/mAP`), per-label AP and macro/micro F1 at per-label thresholds tuned on that epoch's
validation predictions, and the thresholds go into the checkpoint's `ftlab` record.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ftlab.config.registry import register
from ftlab.data.batches import FeatureBatch
from ftlab.data.preprocessing import Preprocessing
from ftlab.errors import FtlabError
from ftlab.finetune.param_groups import HEAD, ParamGroupsSettings, build_param_groups, stage_lr_multipliers
from ftlab.models.backbones import build
from ftlab.models.layout import resolve_channels_last
from ftlab.models.loss import LossSettings, MultiLabelLoss, dominant_label, loss_weights, positive_weights
from ftlab.models.multilabel import MultiLabelScores, ScoresAndTargets, tune_thresholds
from ftlab.models.stages import Stages, run_stages, split

log = logging.getLogger(__name__)
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]
Batch = tuple[torch.Tensor, torch.Tensor] | FeatureBatch


@register("runtime", "settings")
@dataclass
class RuntimeSettings:
    """`runtime`: how the network runs (ftlab's options, not Lightning Trainer arguments)."""

    compile: Any = False  # torch.compile the network: false | true | {backend: inductor, mode: max-autotune}
    channels_last: Any = "auto"  # NHWC: true | false | auto (faster layout for family, device, dtype; logged)

    def __post_init__(self) -> None:
        self.compile_options()
        if self.channels_last not in (True, False, "auto"):
            raise FtlabError(
                f"runtime.channels_last={self.channels_last!r}: give true (NHWC), false (NCHW) or auto (the "
                "layout that measured faster for the backbone's family on the run's device and precision, "
                "docs/guide/speed.md), e.g. runtime.channels_last=auto."
            )

    def compile_options(self) -> dict[str, Any] | None:
        """Keyword arguments of `Classifier.compile_stages` from `compile`; None when off."""
        value = self.compile
        if value is False or value is None:
            return None
        if value is True:
            return {}
        if isinstance(value, dict) and set(value) <= {"backend", "mode"}:
            return dict(value)
        raise FtlabError(
            f"runtime.compile={value!r}: give false, true or "
            "{backend: <torch.compile backend>, mode: <mode>},"
            " e.g. runtime.compile=true or runtime.compile='{backend: inductor, mode: max-autotune}'."
        )


class LrPolicy(Protocol):
    """What the module asks a fine-tuning schedule (`ftlab.finetune.phases.Schedule`) at every step."""

    def lr_factor(self, stage: str, epoch: int, progress: float) -> float: ...


S = TypeVar("S")


def _settings(cls: type[S], given: S | Mapping[str, Any] | None, flat: dict[str, Any]) -> S:
    """`given` as the settings `cls` (a checkpoint stores it as a dict); checkpoints written before the typed
    settings stored these keys flat, so they are taken (and removed) from `flat`."""
    if isinstance(given, cls):
        return given
    values: dict[str, Any] = dict(given or {})  # type: ignore[arg-type]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in flat:
            values[f.name] = flat.pop(f.name)
    return cls(**values)


def batches_per_epoch(trainer: L.Trainer) -> float:
    """Training batches per epoch; unknown-length loaders count as infinitely long (progress 0)."""
    count = float(trainer.num_training_batches)
    return max(1.0, count) if math.isfinite(count) else math.inf


class Classifier(L.LightningModule):
    """Fine-tunes a torchvision (or ftlab) backbone for `class_names`.

    The network is `self.net` (the torchvision model, so checkpoints keep torchvision's key names);
    `self.stages` / `self.head` are views of the same modules. Checkpoints also keep what inference needs
    without the training config: class names, backbone name, weights id, stages and preprocessing (see
    `on_save_checkpoint`). Load one without downloading the pretrained weights again with
    `Classifier.load_from_checkpoint(path, weights=None)`.
    """

    stages: Stages
    _head: nn.Module

    def __init__(
        self,
        backbone: str,
        class_names: list[str],
        weights: str | None = "DEFAULT",
        image_size: int | None = None,
        param_groups: ParamGroupsSettings | Mapping[str, Any] | None = None,
        loss: LossSettings | Mapping[str, Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = None,
        channels_last: bool | str = False,
        multi_label: bool = False,
        **flat: Any,
    ) -> None:
        super().__init__()
        groups, loss = _settings(ParamGroupsSettings, param_groups, flat), _settings(LossSettings, loss, flat)
        if flat:
            raise TypeError(f"Classifier got unexpected keyword arguments: {', '.join(flat)}")
        self.save_hyperparameters(
            {
                "backbone": backbone,
                "class_names": list(class_names),
                "weights": weights,
                "image_size": image_size,
                "param_groups": dataclasses.asdict(groups),
                "loss": dataclasses.asdict(loss),
                "scheduler_interval": scheduler_interval,
                "scheduler_monitor": scheduler_monitor,
                "channels_last": channels_last,
                "multi_label": multi_label,
            }
        )
        self.param_group_settings, self.loss_settings = groups, loss
        built = build(backbone, weights, len(class_names))
        self.net = built.model
        self.head_name = built.head_name
        self.weights_id = built.weights_id
        self.preprocessing: Preprocessing = built.preprocessing.at_size(image_size)
        self.class_names = list(class_names)
        stages, head = split(self.net)
        object.__setattr__(self, "stages", stages)  # views of self.net's modules: not registered twice
        object.__setattr__(self, "_head", head)
        self.lr_policy: LrPolicy | None = None  # set by `follow`; None: the optimizer's LRs as they are
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        num_classes = len(class_names)
        self.multi_label = multi_label
        self.thresholds: list[float] | None = None  # multi-label: per-label thresholds tuned on val
        self.criterion: nn.CrossEntropyLoss | MultiLabelLoss
        if multi_label:
            check_multi_label_loss(loss)
            self.criterion = MultiLabelLoss(loss.label_smoothing)
            self.criterion.weight = loss_weights(loss.class_weights, None, num_classes)
            self.criterion.pos_weight = positive_weights(loss.pos_weight, None, num_classes)
            self.val_scores = ScoresAndTargets()
        else:
            if loss.pos_weight is not None:
                raise FtlabError(
                    f"loss.pos_weight={loss.pos_weight!r} applies to multi-label data only (a sigmoid head "
                    "with binary cross-entropy); this data has one class per image. Remove loss.pos_weight "
                    "(use loss.class_weights to weigh classes)."
                )
            self.criterion = nn.CrossEntropyLoss(label_smoothing=loss.label_smoothing)  # loss.* options
            self.criterion.register_buffer(
                "weight", loss_weights(loss.class_weights, None, num_classes), persistent=False
            )
            self.train_acc = MulticlassAccuracy(num_classes, average="micro")
            self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    @property
    def head(self) -> nn.Module:
        """The final layer(s) after the last stage (the freshly initialised classifier)."""
        return self._head

    @property
    def trainable_stage_names(self) -> list[str]:
        """Stages that hold parameters, stem first: what schedules freeze and unfreeze."""
        return [name for name, stage in self.stages.items() if any(True for _ in stage.parameters())]

    def compile_stages(self, backend: str = "inductor", mode: str | None = None) -> None:
        """torch.compile the whole stage stack and head as one function (`trainer.compile=true`).

        Parameter names do not change, so checkpoints load into an uncompiled model. Dynamo guards on
        `requires_grad` and train/eval modes, so each phase of a schedule gets its own graph; the recompile
        limit is raised so that a long gradual schedule never silently falls back to eager.
        """
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        object.__setattr__(self, "_compiled", torch.compile(self._run_network, backend=backend, mode=mode))

    def _run_network(self, images: torch.Tensor, start: int = 0) -> torch.Tensor:
        return run_stages(self.stages, self.head, images, start)

    @property
    def channels_last(self) -> bool:
        """Whether the network and its batches run NHWC: `channels_last=True`, or `auto` resolved at fit
        start (`models/layout.py`); before a fit, `auto` runs the contiguous layout."""
        chosen = self.__dict__.get("_layout")
        return chosen.channels_last if chosen is not None else self.hparams.get("channels_last") is True

    def on_fit_start(self) -> None:
        if self.hparams.get("channels_last") == "auto":
            precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
            chosen = resolve_channels_last(self.hparams["backbone"], self.device.type, precision)
            self.__dict__["_layout"] = chosen
            log.info("runtime.channels_last=auto -> %s for %s", chosen.name, chosen.reason)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Logits for preprocessed images, or for stage outputs when `start` > 0 (cached features)."""
        if images.ndim == 4 and self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        compiled = self.__dict__.get("_compiled")
        return compiled(images, start) if compiled is not None else self._run_network(images, start)

    def follow(self, policy: LrPolicy | None) -> None:
        """Scale each stage's LR at every step by `policy` (the schedule callback calls this at fit start)."""
        self.lr_policy = policy

    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        if isinstance(batch, FeatureBatch):  # cached activations of stages[:start]
            logits = self(batch.features, batch.start)
            labels = batch.labels
        else:
            images, labels = batch
            logits = self(images)
        loss = self.criterion(logits, labels)
        if self.multi_label:
            size = len(labels)
            self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
            if stage == "val":
                self.val_scores.update(torch.sigmoid(logits.float()), labels)
            return loss
        acc = self.train_acc if stage == "train" else self.val_acc
        acc(logits, dominant_label(labels))  # MixUp/CutMix soft targets: accuracy against the dominant label
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def setup(self, stage: str) -> None:
        auto_pos = self.loss_settings.pos_weight == "auto"
        if isinstance(self.criterion, MultiLabelLoss) and auto_pos and self.trainer is not None:
            labels = self.trainer.datamodule.raw_labels("train")  # type: ignore[attr-defined]
            weights = positive_weights("auto", labels, len(self.class_names))
            self.criterion.pos_weight = None if weights is None else weights.to(self.device)
            return
        if self.loss_settings.class_weights == "auto" and self.trainer is not None:  # from the train split
            labels = self.trainer.datamodule.raw_labels("train")  # type: ignore[attr-defined]
            weights = loss_weights("auto", labels, len(self.class_names))
            self.criterion.weight = None if weights is None else weights.to(self.device)

    def on_validation_epoch_start(self) -> None:
        if self.multi_label:
            self.val_scores.reset()

    def on_validation_epoch_end(self) -> None:
        """Multi-label: tune the thresholds on this epoch's validation predictions and log val/mAP, macro and
        micro F1 at those thresholds and AP per label (`val/class_ap/<label>`)."""
        if not self.multi_label:
            return
        probs, targets = self.val_scores.compute()  # every rank's images under DDP
        self.val_scores.reset()
        if (self._trainer is not None and self._trainer.sanity_checking) or not len(probs):
            return
        thresholds = tune_thresholds(probs, targets)
        self.thresholds = [float(t) for t in thresholds]
        scores = MultiLabelScores.of(probs, targets, thresholds)
        self.log("val/mAP", scores.mean_ap, prog_bar=True)
        self.log("val/f1_macro", scores.f1_macro)
        self.log("val/f1_micro", scores.f1_micro)
        for name, ap in zip(self.class_names, scores.ap, strict=True):
            if ap == ap:  # NaN: no positive validation image
                self.log(f"val/class_ap/{name}", ap)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """One group per stage (plus a no-decay twin) with the per-stage LR policy, all from the start."""
        names = self.trainable_stage_names
        policy = self.param_group_settings
        mults = stage_lr_multipliers(names, policy.lr_decay, policy.backbone_lr_mult)
        parts = {name: self.stages[name] for name in names} | {HEAD: self.head}
        return build_param_groups(parts, lr, mults, weight_decay, policy.no_decay_norm_bias)

    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory or torch.optim.AdamW
        keywords = getattr(factory, "keywords", {})
        optimizer = factory(self.param_groups(keywords.get("lr", 1e-3), keywords.get("weight_decay", 0.0)))
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        config: dict[str, Any] = {
            "scheduler": self.scheduler_factory(optimizer, **kwargs),
            "interval": self.hparams["scheduler_interval"],
        }
        if self.hparams["scheduler_monitor"]:
            config["monitor"] = self.hparams["scheduler_monitor"]
        return {"optimizer": optimizer, "lr_scheduler": config}

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        """Step with the schedule's per-stage LR factors (phase multiplier, unfreeze warmup) applied.

        The factors are applied only inside the step, so the LR scheduler and checkpoints always see the
        scheduler's own values.
        """
        groups = optimizer.param_groups
        scheduled = [group["lr"] for group in groups]
        if self.lr_policy is not None:
            progress = (batch_idx + 1) / batches_per_epoch(self.trainer)
            factors: dict[str, float] = {}
            for group in groups:
                name = group.get("stage", HEAD)
                if name not in factors:
                    factors[name] = self.lr_policy.lr_factor(name, epoch, progress)
                group["lr"] = group["lr"] * factors[name]
        try:
            optimizer.step(closure=optimizer_closure)
        finally:
            for group, lr in zip(groups, scheduled, strict=True):
                group["lr"] = lr

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ftlab"] = {
            "class_names": self.class_names,
            "backbone": self.hparams["backbone"],
            "weights_id": self.weights_id,
            "head_name": self.head_name,
            "stages": list(self.stages),
            "preprocessing": self.preprocessing.to_dict(),
            "multi_label": self.multi_label,
            "thresholds": list(self.thresholds) if self.multi_label and self.thresholds else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        thresholds = (checkpoint.get("ftlab") or {}).get("thresholds")
        if self.multi_label and thresholds is not None:
            self.thresholds = [float(t) for t in thresholds]


def check_multi_label_loss(loss: LossSettings) -> None:
    """Refuse loss options that have no multi-label meaning, with what to use instead."""
    if loss.class_weights == "auto":
        raise FtlabError(
            "loss.class_weights=auto is the single-label rule (inverse class frequency); multi-label data "
            "trains one binary cross-entropy per label. Use loss.pos_weight=auto (negatives / positives per "
            "label, from the training split) to weigh rare labels, or give loss.class_weights as a list of "
            "one weight per label."
        )
