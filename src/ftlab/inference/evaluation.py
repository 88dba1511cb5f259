"""Evaluate a checkpoint on labelled data: accuracy, per-class metrics, confusion matrix and calibration;
for a multi-label checkpoint, per-label precision, recall, F1, AP and support at its stored thresholds, with
macro and micro means and mAP.

Without a `data` config the checkpoint is evaluated on its own training run's validation split (read from the
run's `.hydra/config.yaml`, same seed). Images go through the DataModule's validation pipeline with the
checkpoint's preprocessing. Calibration (ECE, NLL, Brier, reliability diagram) is measured on the
probabilities the checkpoint gives, i.e. after its temperature when it has one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.table import Table
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from ftlab.config.check import group_settings, run_config_values
from ftlab.data import build_datamodule, build_source
from ftlab.data.settings import DataSettings
from ftlab.errors import FtlabError
from ftlab.inference.calibration import (
    ECE_BINS,
    MULTI_LABEL_REFUSAL,
    Calibration,
    fit_temperature,
    store_temperature,
)
from ftlab.inference.checkpoint import class_mismatch, read_record
from ftlab.inference.exported import Model, file_kind, load_model, read_any_record
from ftlab.inference.plots import confusion_figure, reliability_figure, row_normalized, save_figure
from ftlab.inference.tta import tta_logits, tta_multilabel_logits
from ftlab.models.multilabel import DEFAULT_THRESHOLD, MultiLabelScores

SPLITS = ("val", "all")
DEFAULT_SEED = 42  # train.yaml's seed, for checkpoints whose run config is gone


@dataclass
class Report:
    """Evaluation results in the checkpoint's class order (confusion rows: true class, columns: predicted)."""

    class_names: list[str]
    accuracy: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]
    calibration: Calibration | None = None
    temperature: float | None = None
    confidence: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # top-1 probability per image
    correct: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))

    @property
    def headline(self) -> float:
        """Top-1 accuracy (what ftlab.eval returns)."""
        return self.accuracy

    @classmethod
    def from_logits(
        cls, class_names: list[str], logits: torch.Tensor, target: torch.Tensor, temperature: float | None
    ) -> Report:
        """Metrics and calibration of logits (divided by `temperature` when given) against true classes."""
        scaled = logits.float() / (temperature or 1.0)
        preds = scaled.argmax(dim=1)
        report = cls.from_predictions(class_names, preds, target)
        report.calibration = Calibration.of(scaled, target)
        report.temperature = temperature
        report.confidence = scaled.softmax(dim=1).amax(dim=1)
        report.correct = preds == target
        return report

    @classmethod
    def from_predictions(cls, class_names: list[str], preds: torch.Tensor, target: torch.Tensor) -> Report:
        """Metrics of predicted vs true class indices, computed with torchmetrics."""
        n = len(class_names)
        per_class = {
            name: metric(n, average=None)(preds, target).tolist()
            for name, metric in (
                ("precision", MulticlassPrecision),
                ("recall", MulticlassRecall),
                ("f1", MulticlassF1Score),
            )
        }
        return cls(
            class_names=class_names,
            accuracy=float(MulticlassAccuracy(n, average="micro")(preds, target)),
            support=torch.bincount(target, minlength=n).tolist(),
            confusion=MulticlassConfusionMatrix(n)(preds, target).tolist(),
            **per_class,
        )

    def macro(self, values: list[float]) -> float:
        """Unweighted mean over classes."""
        return sum(values) / len(values)

    def tables(self) -> list[Table]:
        """Per-class metrics and the confusion matrix as rich tables."""
        metrics = Table(title=f"accuracy {self.accuracy:.4f} on {sum(self.support)} images")
        for column in ("class", "precision", "recall", "f1", "support"):
            metrics.add_column(column, justify="left" if column == "class" else "right")
        for i, name in enumerate(self.class_names):
            metrics.add_row(
                name,
                f"{self.precision[i]:.4f}",
                f"{self.recall[i]:.4f}",
                f"{self.f1[i]:.4f}",
                str(self.support[i]),
            )
        macro = (self.macro(v) for v in (self.precision, self.recall, self.f1))
        metrics.add_row("macro avg", *(f"{v:.4f}" for v in macro), str(sum(self.support)), style="bold")
        confusion = Table(title="confusion matrix (rows: true class, columns: predicted)")
        confusion.add_column("true \\ predicted")
        for name in self.class_names:
            confusion.add_column(name, justify="right")
        for name, row in zip(self.class_names, self.confusion, strict=True):
            confusion.add_row(name, *(str(v) for v in row))
        shares = Table(title="confusion matrix, rows normalised (the share of each true class)")
        shares.add_column("true \\ predicted")
        for name in self.class_names:
            shares.add_column(name, justify="right")
        for name, shares_row in zip(self.class_names, self.confusion_normalized, strict=True):
            shares.add_row(name, *(f"{v:.3f}" for v in shares_row))
        return [metrics, confusion, shares]

    @property
    def confusion_normalized(self) -> list[list[float]]:
        """The confusion matrix with each row divided by its sum (a class without images: zeros)."""
        shares: list[list[float]] = row_normalized(self.confusion).tolist()
        return shares

    def write(self, folder: Path, about: dict[str, Any]) -> list[Path]:
        """metrics.json, per_class.csv, confusion_matrix.csv (+ _normalized.csv, rows summing to 1) and their
        PNGs in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        names = ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix_normalized.csv")
        paths = [folder / n for n in names]
        summary = {**about, "accuracy": self.accuracy, "class_names": self.class_names}
        summary["macro"] = {k: self.macro(getattr(self, k)) for k in ("precision", "recall", "f1")}
        summary["per_class"] = {
            name: {"precision": p, "recall": r, "f1": f, "support": s}
            for name, p, r, f, s in zip(
                self.class_names, self.precision, self.recall, self.f1, self.support, strict=True
            )
        }
        summary["confusion_matrix"] = self.confusion
        summary["confusion_matrix_normalized"] = self.confusion_normalized
        if self.calibration is not None:
            summary["calibration"] = {**self.calibration.as_dict(), "ece_bins": ECE_BINS}
            summary["temperature"] = self.temperature
            summary["calibrated"] = self.temperature is not None
        paths[0].write_text(json.dumps(summary, indent=2) + "\n")
        with open(paths[1], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "precision", "recall", "f1", "support"])
            for name, values in summary["per_class"].items():
                writer.writerow([name, *values.values()])
        matrices: list[tuple[Path, list[list[Any]]]] = [
            (paths[2], self.confusion),
            (paths[3], self.confusion_normalized),
        ]
        for path, matrix in matrices:
            with open(path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["true\\predicted", *self.class_names])
                for name, row in zip(self.class_names, matrix, strict=True):
                    writer.writerow([name, *row])
        paths.append(self.plot(folder / "confusion_matrix.png"))
        paths.append(self.plot(folder / "confusion_matrix_normalized.png", normalize=True))
        if self.calibration is not None:
            paths.append(save_figure(self.reliability(), folder / "reliability_diagram.png"))
        return paths

    def plot(self, path: Path, normalize: bool = False) -> Path:
        """The confusion matrix as a PNG heat map with counts (`normalize`: each row's shares)."""
        title = f"accuracy {self.accuracy:.3f}" + (", rows normalised" if normalize else "")
        return save_figure(confusion_figure(self.confusion, self.class_names, title, normalize), path)

    def reliability(self) -> Any:
        """The reliability diagram (matplotlib Figure) of the evaluated probabilities."""
        assert self.calibration is not None
        state = f"T={self.temperature:.2f}" if self.temperature else "uncalibrated"
        title = f"ECE {self.calibration.ece:.3f} ({state})"
        return reliability_figure(self.confidence, self.correct, ECE_BINS, title)

    def calibration_table(self) -> Table:
        """ECE, NLL and Brier score as a rich table."""
        assert self.calibration is not None
        table = Table(title="calibration (lower is better)")
        for column in ("ECE (15 bins)", "NLL", "Brier"):
            table.add_column(column, justify="right")
        table.add_row(*(f"{v:.4f}" for v in self.calibration.as_dict().values()))
        return table


@dataclass
class MultiLabelReport:
    """Evaluation of a multi-label checkpoint at its stored thresholds (0.5 where it has none): per label
    precision, recall, F1, average precision and support; macro and micro means; macro mAP."""

    class_names: list[str]
    thresholds: list[float]
    scores: MultiLabelScores
    images: int
    calibration: None = None  # multi-label checkpoints are not calibrated
    temperature: None = None

    @classmethod
    def from_logits(
        cls,
        class_names: list[str],
        logits: torch.Tensor,
        target: torch.Tensor,
        thresholds: list[float] | None,
    ) -> MultiLabelReport:
        """Scores of sigmoid(logits) against multi-hot targets (checkpoint column order)."""
        cut = thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * len(class_names)
        scores = MultiLabelScores.of(torch.sigmoid(logits.float()), target, cut)
        return cls(class_names, list(cut), scores, len(target))

    @property
    def headline(self) -> float:
        """Macro mean average precision (what ftlab.eval returns)."""
        return self.scores.mean_ap

    def macro(self, values: list[float]) -> float:
        """Unweighted mean over labels."""
        return sum(values) / len(values)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per label: label, threshold, precision, recall, f1, ap, support."""
        s = self.scores
        return [
            {"label": name, "threshold": t, "precision": p, "recall": r, "f1": f, "ap": ap, "support": n}
            for name, t, p, r, f, ap, n in zip(
                self.class_names, self.thresholds, s.precision, s.recall, s.f1, s.ap, s.support, strict=True
            )
        ]

    def summary(self) -> dict[str, Any]:
        """Macro and micro means and mAP."""
        s = self.scores
        return {
            "mAP": s.mean_ap,
            "macro": {"precision": self.macro(s.precision), "recall": self.macro(s.recall), "f1": s.f1_macro},
            "micro": {"precision": s.precision_micro, "recall": s.recall_micro, "f1": s.f1_micro},
        }

    def tables(self) -> list[Table]:
        """The per-label table with its macro and micro rows."""
        summary = self.summary()
        table = Table(title=f"multi-label: mAP {summary['mAP']:.4f} on {self.images} images")
        for column in ("label", "threshold", "precision", "recall", "f1", "AP", "support"):
            table.add_column(column, justify="left" if column == "label" else "right")
        for row in self.rows():
            ap = "-" if row["ap"] != row["ap"] else f"{row['ap']:.4f}"
            values = (f"{row[k]:.4f}" for k in ("threshold", "precision", "recall", "f1"))
            table.add_row(row["label"], *values, ap, str(row["support"]))
        total = str(sum(self.scores.support))
        for kind in ("macro", "micro"):
            values = (f"{summary[kind][k]:.4f}" for k in ("precision", "recall", "f1"))
            ap = f"{summary['mAP']:.4f}" if kind == "macro" else "-"
            table.add_row(f"{kind} avg", "", *values, ap, total, style="bold")
        return [table]

    def write(self, folder: Path, about: dict[str, Any]) -> list[Path]:
        """metrics.json and per_class.csv (label, threshold, precision, recall, f1, ap, support)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "metrics.json", folder / "per_class.csv"]
        rows = self.rows()
        summary = {**about, "multi_label": True, "class_names": self.class_names, **self.summary()}
        summary["per_class"] = {row["label"]: {k: v for k, v in row.items() if k != "label"} for row in rows}
        paths[0].write_text(json.dumps(summary, indent=2) + "\n")
        with open(paths[1], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "threshold", "precision", "recall", "f1", "ap", "support"])
            for row in rows:
                writer.writerow(list(row.values()))
        return paths


def data_settings(options: Any) -> tuple[DataSettings, int, str]:
    """The data settings to evaluate on, the split seed, and where both came from.

    `data=...` on the command line wins; otherwise the training run's own config (`<run>/.hydra/config.yaml`
    next to `<run>/checkpoints/`), so the validation split is the one training reported on.
    """
    seed = options.seed
    if options.data is not None:
        return options.data, DEFAULT_SEED if seed is None else seed, "command line"
    run_config = Path(options.ckpt_path).expanduser().resolve().parent.parent / ".hydra" / "config.yaml"
    if not run_config.is_file():
        raise FtlabError(
            "No data to evaluate on: give data=<source> (e.g. data=imagefolder data.root=<folder> "
            f"split=all), or keep the checkpoint in its training run folder, where {run_config} names it."
        )
    saved = run_config_values(run_config, "data", "seed")
    if not isinstance(saved.get("data"), dict):
        raise FtlabError(f"{run_config} has no `data` section: give data=<source> on the command line.")
    data = group_settings("data", saved["data"], "source")
    run_seed = int(saved.get("seed", DEFAULT_SEED))
    return data, run_seed if seed is None else seed, str(run_config)


def evaluation_logits(
    options: Any, data: DataSettings, seed: int, split: str
) -> tuple[Model, torch.Tensor, torch.Tensor, int]:
    """The model's logits and the true classes (its class order) on `split`, and the image count; the model
    is a checkpoint or a file written by ftlab.export (`exported.load_model`), so every format is measured
    by the same code."""
    record = read_any_record(options.ckpt_path)
    source = build_source(data, seed)
    problem = class_mismatch(list(record["class_names"]), list(source.classes), options.ckpt_path)
    if problem:
        raise FtlabError(problem)
    model = load_model(options.ckpt_path, options.device)
    datamodule = build_datamodule(data, source, model.preprocessing)
    datamodule.setup("validate")
    assert datamodule.train_set is not None and datamodule.val_set is not None
    dataset: Dataset = datamodule.val_set
    if split == "all":
        datamodule.train_set.transform = datamodule.val_set.transform  # no augmentation
        dataset = ConcatDataset([datamodule.train_set, datamodule.val_set])
    loader = DataLoader(dataset, batch_size=datamodule.batch_size, num_workers=datamodule.num_workers)
    to_checkpoint = torch.tensor([model.class_names.index(name) for name in source.classes])
    from_source = torch.tensor([source.classes.index(name) for name in model.class_names])
    if model.multi_label != datamodule.multi_label:
        raise FtlabError(
            f"ckpt_path={options.ckpt_path!r} is {'multi' if model.multi_label else 'single'}-label, and the "
            f"data gives {'several labels' if datamodule.multi_label else 'one class'} per image: evaluate "
            "on data of the kind the model was trained on (for data=csv, data.multi_label says which)."
        )
    combine = tta_multilabel_logits if model.multi_label else tta_logits
    logits, target = [], []
    for images, labels in loader:
        batch = datamodule.device_transform(images.to(model.device))
        logits.append(combine(model.logits, batch, getattr(options, "tta", "none")))  # tta= hook
        target.append(labels[:, from_source] if model.multi_label else to_checkpoint[labels])
    if not logits:
        raise FtlabError(f"split={split}: the data has no images to evaluate.")
    return model, torch.cat(logits), torch.cat(target), len(dataset)  # type: ignore[arg-type]


def fit_and_store(ckpt_path: str, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Fit temperature scaling on val logits and store it in the checkpoint; T and the NLL before/after."""
    temperature = fit_temperature(logits, target)
    before, after = Calibration.of(logits, target).nll, Calibration.of(logits / temperature, target).nll
    store_temperature(ckpt_path, temperature)
    return {"temperature": temperature, "val_nll_before": before, "val_nll_after": after}


def calibrate(ckpt_path: str, data: DataSettings, seed: int, device: str = "auto") -> dict[str, float]:
    """Fit temperature scaling on the validation split and store it in the checkpoint (training's hook).

    Logits are taken without any stored temperature, so calibrating again refits from scratch.
    """
    if read_record(ckpt_path).get("multi_label"):
        raise FtlabError(MULTI_LABEL_REFUSAL)
    options = _Options(ckpt_path=ckpt_path, device=device)
    _, logits, target, _ = evaluation_logits(options, data, seed, "val")
    return fit_and_store(ckpt_path, logits, target)


@dataclass
class _Options:
    ckpt_path: str
    device: str = "auto"


def evaluate(options: Any) -> tuple[Report | MultiLabelReport, dict[str, Any]]:
    """Evaluate `options.ckpt_path` on `options.data` or the run's own data; the report and what was used.

    With `options.calibrate`, temperature scaling is first fitted on the validation split and stored.
    """
    if options.split not in SPLITS:
        raise FtlabError(f"split={options.split!r}: use one of {', '.join(SPLITS)}.")
    record = read_any_record(options.ckpt_path)
    if record.get("multi_label") and getattr(options, "calibrate", False):
        raise FtlabError(MULTI_LABEL_REFUSAL)
    exported = file_kind(Path(options.ckpt_path).expanduser()) != "checkpoint"
    if exported and getattr(options, "calibrate", False):
        raise FtlabError(
            f"calibrate=true stores a temperature in a checkpoint; {options.ckpt_path} is an exported file "
            "whose temperature is fixed. Calibrate its checkpoint, then export again."
        )
    data, seed, data_from = data_settings(options)
    about: dict[str, Any] = {}
    model, logits, target, count = evaluation_logits(options, data, seed, options.split)
    report: Report | MultiLabelReport
    if model.multi_label:
        report = MultiLabelReport.from_logits(model.class_names, logits, target, model.thresholds)
        about = {"thresholds_from": "checkpoint" if model.thresholds is not None else "0.5 (none stored)"}
        return report, _about(options, model, data, data_from, seed, count, about)
    temperature = model.temperature
    if getattr(options, "calibrate", False):
        val = (
            (logits, target) if options.split == "val" else evaluation_logits(options, data, seed, "val")[1:3]
        )
        about["calibration_fit"] = fit_and_store(options.ckpt_path, *val)
        temperature = about["calibration_fit"]["temperature"]
    report = Report.from_logits(model.class_names, logits, target, temperature)
    return report, _about(options, model, data, data_from, seed, count, about)


def _about(
    options: Any,
    model: Model,
    data: DataSettings,
    data_from: str,
    seed: int,
    count: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "ckpt_path": str(options.ckpt_path),
        "model_format": getattr(model, "format", "checkpoint"),
        "data": dataclasses.asdict(data),
        "data_config_from": data_from,
        "split": options.split,
        "seed": seed,
        "images": count,
        **extra,
    }


def tensorboard_folder(ckpt_path: str | Path) -> Path | None:
    """The checkpoint's training run TensorBoard folder (`<run>/tensorboard`) when it has event files."""
    run = Path(ckpt_path).expanduser().resolve().parent.parent
    events = sorted((run / "tensorboard").rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    return events[-1].parent if events else None


def log_to_tensorboard(report: Report, folder: Path) -> None:
    """The reliability diagram and calibration scores as `eval/*` entries in the run's TensorBoard."""
    from torch.utils.tensorboard import SummaryWriter

    from ftlab.inference.plots import figure_array

    assert report.calibration is not None
    with SummaryWriter(log_dir=str(folder)) as writer:
        writer.add_image("eval/reliability_diagram", figure_array(report.reliability()), dataformats="HWC")
        for name, value in report.calibration.as_dict().items():
            writer.add_scalar(f"eval/{name}", value)
