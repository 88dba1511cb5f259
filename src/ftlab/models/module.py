"""The LightningModule: a backbone with a fresh head, cross-entropy, accuracy, per-group learning rates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ftlab.models.backbones import Preprocessing, build

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class Classifier(L.LightningModule):
    """Fine-tunes a torchvision (or ftlab) backbone for `class_names`.

    Checkpoints keep what inference needs without the training config: class names, backbone name,
    weights id and the preprocessing (see `on_save_checkpoint`). Load one without downloading the
    pretrained weights again with `Classifier.load_from_checkpoint(path, weights=None)`.
    """

    def __init__(
        self,
        backbone: str,
        class_names: list[str],
        weights: str | None = "DEFAULT",
        image_size: int | None = None,
        backbone_lr_mult: float = 0.1,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        built = build(backbone, weights, len(class_names))
        self.net = built.model
        self.head_name = built.head_name
        self.weights_id = built.weights_id
        self.preprocessing: Preprocessing = built.preprocessing.at_size(image_size)
        self.class_names = list(class_names)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.criterion = nn.CrossEntropyLoss()
        num_classes = len(class_names)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    @property
    def head(self) -> nn.Module:
        return self.net.get_submodule(self.head_name)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter of the network except the head's."""
        head = {id(p) for p in self.head.parameters()}
        return (p for p in self.net.parameters() if id(p) not in head)

    def backbone_modules(self) -> Iterator[nn.Module]:
        """Every module of the network except the head (and the network's root container)."""
        head = {id(m) for m in self.head.modules()}
        return (m for m in self.net.modules() if id(m) not in head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        acc = self.train_acc if stage == "train" else self.val_acc
        acc(logits, labels)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Named groups (backbone at lr x backbone_lr_mult, head at lr); all exist from the start."""
        return [
            {
                "name": "backbone",
                "params": list(self.backbone_parameters()),
                "lr": lr * self.hparams["backbone_lr_mult"],
            },
            {"name": "head", "params": list(self.head.parameters()), "lr": lr},
        ]

    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory or torch.optim.AdamW
        base_lr = getattr(factory, "keywords", {}).get("lr", 1e-3)
        optimizer = factory(self.param_groups(base_lr))
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ftlab"] = {
            "class_names": self.class_names,
            "backbone": self.hparams["backbone"],
            "weights_id": self.weights_id,
            "head_name": self.head_name,
            "preprocessing": self.preprocessing.to_dict(),
        }
