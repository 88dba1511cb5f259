"""TensorBoard review of a run: a confusion matrix and per-class accuracy each validation epoch, a grid of the
worst misclassified validation images (each beside
its Grad-CAM overlay) and the HParams entry (hyperparameters with final metrics) at the end. Multi-label runs
get the HParams entry only (with val/mAP): they have no confusion matrix or single misclassification, and the
module logs AP per label each epoch.

The callback reads the logits of the module's own validation forward pass (a forward hook), so it adds no
extra pass, and it works whether the validation batches are images or cached frozen-prefix features: the grid
is drawn from the datamodule's raw validation images, located by their position in the unshuffled loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from ftlab.config.overrides import parse_overrides
from ftlab.data.transforms import preprocess
from ftlab.errors import FtlabError
from ftlab.inference.gradcam import Explainer, overlay
from ftlab.inference.plots import confusion_figure, figure_array

CONFUSION_TAG = "val/confusion_matrix"
CONFUSION_NORMALIZED_TAG = "val/confusion_matrix_normalized"  # rows sum to 1
CLASS_ACC_PREFIX = "val/class_acc/"
CLASS_SCORE_PREFIXES = {  # per-class scores of each validation epoch, from its confusion matrix
    "precision": "val/class_precision/",
    "recall": "val/class_recall/",
    "f1": "val/class_f1/",
}
WORST_TAG = "val/worst_misclassified"
HPARAM_METRICS = {
    "val/acc": "hparams/val_acc",
    "val/loss": "hparams/val_loss",
    "train/acc": "hparams/train_acc",
    "val/mAP": "hparams/val_mAP",  # multi-label runs
}
BEST_METRICS = {"val/acc": "hparams/best_val_acc", "val/mAP": "hparams/best_val_mAP"}


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Recall of each class (correct / seen) from a confusion matrix; NaN for a class with no samples."""
    seen = matrix.sum(dim=1).float()
    return matrix.diagonal().float() / seen.where(seen > 0, torch.tensor(float("nan"), device=seen.device))


def per_class_scores(matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall and F1 of each class from a confusion matrix (rows: true, columns: predicted); a
    division by zero gives 0, as scikit-learn's `zero_division=0` and torchmetrics do."""
    counts = matrix.double()
    hits = counts.diagonal()
    predicted, seen = counts.sum(dim=0), counts.sum(dim=1)
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(seen > 0, hits / seen.clamp(min=1), 0.0)
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both.clamp(min=1e-12), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1}


class TensorBoardReview(Callback):
    """Confusion matrix (counts and row-normalised) and per-class accuracy, precision, recall and F1 per val
    epoch; worst-misclassified grid + HParams at the end.

    Args:
        hparams: what the HParams tab compares (the run's Hydra overrides are added to it).
        worst_k: number of misclassified validation images in the final grid (0: no grid).
        min_tile: images smaller than this side are upscaled (nearest) in the grid, so CIFAR stays readable.
        explain: put a Grad-CAM overlay (predicted class) beside each image of the grid (CNN backbones).
    """

    def __init__(
        self,
        hparams: Mapping[str, Any] | None = None,
        worst_k: int = 16,
        min_tile: int = 64,
        explain: bool = True,
    ) -> None:
        super().__init__()
        self.hparams = dict(hparams or {})
        self.worst_k, self.min_tile, self.explain = worst_k, min_tile, explain
        self.confusion: MulticlassConfusionMatrix | None = None
        self._hook: RemovableHandle | None = None
        self._logits: torch.Tensor | None = None
        self._offset = 0
        self._wrong: list[torch.Tensor] = []  # rows of (index, true, predicted, true-class probability)
        self.worst: torch.Tensor = torch.empty(0, 4)  # the last validation epoch's worst rows

    # -- collecting ----------------------------------------------------------------------------------------

    def _capture(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        # Under DDP, Lightning routes validation_step itself through the module's __call__ (output None)
        if isinstance(output, torch.Tensor):
            self._logits = output.detach()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or getattr(pl_module, "multi_label", False):
            return  # multi-label: no confusion matrix; the module logs AP per label itself
        if self.confusion is None:
            self.confusion = MulticlassConfusionMatrix(len(pl_module.class_names))  # type: ignore[arg-type]
        self.confusion = self.confusion.to(pl_module.device)
        self.confusion.reset()
        self._offset, self._wrong, self._logits = 0, [], None
        self._hook = pl_module.register_forward_hook(self._capture)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._hook is None or self._logits is None or self.confusion is None:
            return
        logits, labels = self._logits.float(), batch[1]
        self._logits = None
        preds = logits.argmax(dim=1)
        self.confusion.update(preds, labels)
        index = torch.arange(self._offset, self._offset + len(labels), device=labels.device)
        self._offset += len(labels)
        wrong = preds != labels
        if self.worst_k and wrong.any():
            true_prob = logits.softmax(dim=1).gather(1, labels[:, None])[:, 0]
            rows = torch.stack([index, labels, preds, true_prob], dim=1)[wrong].cpu()
            self._wrong.append(rows.float())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is None or self.confusion is None:
            return
        self._hook.remove()
        self._hook = None
        matrix = self.confusion.compute()  # summed over ranks under DDP
        names: list[str] = list(pl_module.class_names)  # type: ignore[arg-type]
        scores = per_class_scores(matrix)
        for i, (name, value) in enumerate(zip(names, per_class_accuracy(matrix).tolist(), strict=True)):
            if value == value:  # not NaN: the class had validation samples
                pl_module.log(f"{CLASS_ACC_PREFIX}{name}", value, on_epoch=True)
                for score, prefix in CLASS_SCORE_PREFIXES.items():
                    pl_module.log(f"{prefix}{name}", float(scores[score][i]), on_epoch=True)
        wrong = torch.cat(self._wrong) if self._wrong else torch.empty(0, 4)
        self.worst = wrong[wrong[:, 3].argsort()[: self.worst_k]]
        logger = _tensorboard(trainer)
        if logger is not None and trainer.is_global_zero:
            for tag, normalize in ((CONFUSION_TAG, False), (CONFUSION_NORMALIZED_TAG, True)):
                image = figure_array(confusion_figure(matrix, names, normalize=normalize))
                logger.experiment.add_image(tag, image, trainer.global_step, dataformats="HWC")

    # -- at the end ----------------------------------------------------------------------------------------

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = _tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        self._log_worst(trainer, pl_module, logger, list(pl_module.class_names))  # type: ignore[arg-type]
        logger.log_hyperparams(self.params(), self.final_metrics(trainer))

    def _explainer(self, pl_module: L.LightningModule) -> Explainer | None:
        if not self.explain:
            return None
        try:
            return Explainer(pl_module)
        except FtlabError:  # transformer families: the grid shows the images alone
            return None

    @staticmethod
    def _overlay(
        explainer: Explainer, pl_module: L.LightningModule, tile: torch.Tensor, pred: int
    ) -> torch.Tensor:
        images = preprocess(tile.to(pl_module.device), pl_module.preprocessing)  # type: ignore[arg-type]
        cam = explainer.maps(images, torch.tensor([pred]))[0]
        cam = F.interpolate(cam[None, None], size=tile.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        return overlay(tile[0], cam.clamp(0, 1))

    def _log_worst(
        self, trainer: L.Trainer, pl_module: L.LightningModule, logger: TensorBoardLogger, names: list[str]
    ) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if not len(self.worst) or datamodule is None or not hasattr(datamodule, "raw_images"):
            return
        if trainer.world_size > 1:  # a rank sees a strided share of the val set: positions are not indices
            return
        images, labels = datamodule.raw_images("val"), datamodule.raw_labels("val")
        explainer = self._explainer(pl_module)
        tiles, lines = [], ["| item | val index | true | predicted | p(true) |", "|---:|---:|---|---|---:|"]
        for index, true, pred, prob in self.worst.tolist():
            i = int(index)
            if i >= len(labels) or int(labels[i]) != int(true):  # loader order differs: never mislabel a tile
                continue
            tile = images[i : i + 1]
            pair = [tile[0].to(torch.uint8)]
            if explainer is not None:  # Grad-CAM of the predicted class, at the image's stored size
                pair.append(self._overlay(explainer, pl_module, tile, int(pred)))
            for image in pair:
                if image.shape[-1] < self.min_tile:
                    image = F.interpolate(
                        image[None].float(), scale_factor=self.min_tile / image.shape[-1], mode="nearest"
                    )[0]
                tiles.append(image.to(torch.uint8))
            item = len(lines) - 2  # with overlays, item k fills tiles 2k (image) and 2k+1 (its Grad-CAM)
            lines.append(f"| {item} | {i} | {names[int(true)]} | {names[int(pred)]} | {prob:.3f} |")
        if not tiles:
            return
        # 8 per row (an even number): an image and its overlay always share a row
        grid = make_grid(torch.stack(tiles), nrow=min(8, len(tiles)), padding=2, pad_value=255)
        logger.experiment.add_image(WORST_TAG, grid, trainer.global_step)
        logger.experiment.add_text(WORST_TAG, "\n".join(lines), trainer.global_step)

    def params(self) -> dict[str, Any]:
        """The configured hparams plus this run's command-line overrides (what differs between sweep jobs)."""
        from hydra.core.hydra_config import HydraConfig

        params = dict(self.hparams)
        if HydraConfig.initialized():
            params.update(parse_overrides(HydraConfig.get().overrides.task))
        return params

    @staticmethod
    def final_metrics(trainer: L.Trainer) -> dict[str, float]:
        """Last-epoch metrics and the best val accuracy, named hparams/* so no curve gets a stray point."""
        logged = trainer.callback_metrics
        metrics = {name: float(logged[key]) for key, name in HPARAM_METRICS.items() if key in logged}
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None)
        monitor = getattr(checkpoint, "monitor", None)
        if best is not None and monitor in BEST_METRICS:
            metrics[BEST_METRICS[monitor]] = float(best)
        return metrics


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
