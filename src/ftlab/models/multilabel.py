"""Multi-label scores: per-label thresholds tuned for F1, and the figures of a validation epoch or an
evaluation (average precision per label and its macro mean, precision, recall and F1 per label and their
macro and micro means at the chosen thresholds), computed with torchmetrics.

A label is predicted when its sigmoid probability is at least its threshold.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multilabel_average_precision,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)
from torchmetrics.utilities import dim_zero_cat

DEFAULT_THRESHOLD = 0.5  # a label never seen positive in validation keeps this threshold


def tune_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-label thresholds (classes,) maximising each label's F1 on (probs, targets).

    Every distinct probability of a label is a candidate cut (predict the images scoring at least it); the
    best one's threshold is placed halfway to the next lower probability, so it predicts exactly that set.
    The highest cut wins ties. A label with no positive image keeps `DEFAULT_THRESHOLD`.
    """
    probs, truth = probs.detach().double().cpu(), targets.detach().cpu() > 0.5
    thresholds = torch.full((probs.shape[1],), DEFAULT_THRESHOLD, dtype=torch.float64)
    for label in range(probs.shape[1]):
        positives = int(truth[:, label].sum())
        if positives == 0:
            continue
        order = torch.argsort(probs[:, label], descending=True, stable=True)
        scores, hits = probs[order, label], truth[order, label].double()
        tp = hits.cumsum(0)
        predicted = torch.arange(1, len(scores) + 1, dtype=torch.float64)
        f1 = 2 * tp / (predicted + positives)  # 2 TP / (2 TP + FP + FN)
        last_of_tie = torch.ones(len(scores), dtype=torch.bool)
        last_of_tie[:-1] = scores[:-1] != scores[1:]  # a cut can only fall between distinct scores
        best = int(torch.where(last_of_tie, f1, -1.0).argmax())
        lower = scores[best + 1] if best + 1 < len(scores) else scores[best]
        thresholds[label] = (scores[best] + lower) / 2 if best + 1 < len(scores) else scores[best]
    return thresholds.float()


def predicted_labels(probs: torch.Tensor, thresholds: torch.Tensor | list[float] | None) -> torch.Tensor:
    """0/1 (N, classes) predictions: probability at or above the label's threshold (0.5 when None)."""
    cut = torch.as_tensor(DEFAULT_THRESHOLD if thresholds is None else thresholds, dtype=probs.dtype)
    return (probs >= cut.to(probs.device)).long()


@dataclass
class MultiLabelScores:
    """Figures of probabilities against multi-hot targets at given thresholds (lists in class order)."""

    ap: list[float]  # average precision per label (NaN for a label with no positive image)
    mean_ap: float  # macro mean of `ap` over the labels that have positives
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]  # images carrying each label
    f1_macro: float
    f1_micro: float
    precision_micro: float
    recall_micro: float

    @classmethod
    def of(
        cls, probs: torch.Tensor, targets: torch.Tensor, thresholds: torch.Tensor | list[float] | None
    ) -> MultiLabelScores:
        probs, target = probs.detach().float().cpu(), (targets.detach().cpu() > 0.5).long()
        n = probs.shape[1]
        preds = predicted_labels(probs, thresholds)
        support = target.sum(dim=0)
        with warnings.catch_warnings():  # a label without positives: masked to NaN below
            warnings.filterwarnings("ignore", "No positive samples found in target")
            ap = multilabel_average_precision(probs, target, n, average=None, thresholds=None)
        ap = torch.where(support > 0, ap, torch.tensor(float("nan")))
        seen = ap[support > 0]
        mean_ap = float(seen.mean()) if len(seen) else float("nan")

        def per_label(metric: Any, average: str | None) -> torch.Tensor:
            return metric(preds, target, n, average=average, zero_division=0)

        return cls(
            ap=ap.tolist(),
            mean_ap=mean_ap,
            precision=per_label(multilabel_precision, None).tolist(),
            recall=per_label(multilabel_recall, None).tolist(),
            f1=per_label(multilabel_f1_score, None).tolist(),
            support=[int(v) for v in support.tolist()],
            f1_macro=float(per_label(multilabel_f1_score, "macro")),
            f1_micro=float(per_label(multilabel_f1_score, "micro")),
            precision_micro=float(per_label(multilabel_precision, "micro")),
            recall_micro=float(per_label(multilabel_recall, "micro")),
        )


class ScoresAndTargets(Metric):
    """Collects a validation epoch's probabilities and multi-hot targets (gathered over DDP ranks)."""

    full_state_update = False
    probs: list[torch.Tensor]
    targets: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        self.probs.append(probs.detach().float())
        self.targets.append(targets.detach().float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.probs:
            return torch.empty(0, 0), torch.empty(0, 0)
        return dim_zero_cat(self.probs), dim_zero_cat(self.targets)
