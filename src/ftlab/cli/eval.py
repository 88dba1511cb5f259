"""`python -m ftlab.eval ckpt_path=<ckpt> [data=<source> ...]`: accuracy, per-class metrics, confusion matrix.

Without `data=...` the checkpoint is evaluated on its own training run's validation split (read from the run's
`.hydra/config.yaml`, same seed); `data=imagefolder data.root=<folder> split=all` evaluates every image of a
folder. Images go through the DataModule's validation pipeline with the checkpoint's preprocessing. The
tables are printed; `metrics.json`, `per_class.csv`, `confusion_matrix.csv` and `confusion_matrix.png` are
written to the eval run folder (logs/eval/<timestamp>/ unless `hydra.run.dir` says otherwise).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from ftlab.config.location import config_dir
from ftlab.config.schemas import checked_options
from ftlab.data import build_datamodule, build_source
from ftlab.errors import FtlabError, report_errors
from ftlab.inference.checkpoint import TrainedModel, class_mismatch, read_record
from ftlab.inference.tta import tta_probabilities, tta_views

SPLITS = ("val", "all")
DEFAULT_SEED = 42  # train.yaml's seed, for checkpoints whose run config is gone


@dataclass
class EvalOptions:
    """The options of `ftlab.eval` (conf/eval.yaml), besides the `data` group."""

    ckpt_path: str = MISSING
    split: str = "val"
    seed: int | None = None
    device: str = "auto"
    tta: str = "none"


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
        return [metrics, confusion]

    def write(self, folder: Path, about: dict[str, Any]) -> list[Path]:
        """metrics.json, per_class.csv, confusion_matrix.csv and confusion_matrix.png in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / n for n in ("metrics.json", "per_class.csv", "confusion_matrix.csv")]
        summary = {**about, "accuracy": self.accuracy, "class_names": self.class_names}
        summary["macro"] = {k: self.macro(getattr(self, k)) for k in ("precision", "recall", "f1")}
        summary["per_class"] = {
            name: {"precision": p, "recall": r, "f1": f, "support": s}
            for name, p, r, f, s in zip(
                self.class_names, self.precision, self.recall, self.f1, self.support, strict=True
            )
        }
        summary["confusion_matrix"] = self.confusion
        paths[0].write_text(json.dumps(summary, indent=2) + "\n")
        with open(paths[1], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "precision", "recall", "f1", "support"])
            for name, values in summary["per_class"].items():
                writer.writerow([name, *values.values()])
        with open(paths[2], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true\\predicted", *self.class_names])
            for name, row in zip(self.class_names, self.confusion, strict=True):
                writer.writerow([name, *row])
        paths.append(self.plot(folder / "confusion_matrix.png"))
        return paths

    def plot(self, path: Path) -> Path:
        """The confusion matrix as a PNG heat map with counts."""
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in any process

        n = len(self.class_names)
        side = max(4.0, 0.6 * n + 2)
        fig = Figure(figsize=(side, side), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(self.confusion, cmap="Blues")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true")
        ax.set_title(f"accuracy {self.accuracy:.3f}")
        ax.set_xticklabels(self.class_names, rotation=45, ha="right")
        ax.set_yticklabels(self.class_names)
        top = max(max(row) for row in self.confusion) or 1
        for i, row in enumerate(self.confusion):
            for j, count in enumerate(row):
                ax.text(
                    j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black"
                )
        fig.savefig(path, dpi=100)
        return path


def data_config(cfg: DictConfig, ckpt_path: str, seed: int | None) -> tuple[DictConfig, int, str]:
    """The `data` config to evaluate on, the split seed, and where both came from.

    `data=...` on the command line wins; otherwise the training run's own config (`<run>/.hydra/config.yaml`
    next to `<run>/checkpoints/`), so the validation split is the one training reported on.
    """
    if cfg.get("data"):
        return cfg.data, DEFAULT_SEED if seed is None else seed, "command line"
    run_config = Path(ckpt_path).expanduser().resolve().parent.parent / ".hydra" / "config.yaml"
    if not run_config.is_file():
        raise FtlabError(
            "No data to evaluate on: give data=<source> (e.g. data=imagefolder data.root=<folder> "
            f"split=all), or keep the checkpoint in its training run folder, where {run_config} names it."
        )
    run_cfg = OmegaConf.load(run_config)
    if not isinstance(run_cfg, DictConfig) or "data" not in run_cfg:
        raise FtlabError(f"{run_config} has no `data` section: give data=<source> on the command line.")
    data = OmegaConf.create(OmegaConf.to_container(run_cfg.data, resolve=True))
    assert isinstance(data, DictConfig)
    run_seed = int(run_cfg.get("seed", DEFAULT_SEED))
    return data, run_seed if seed is None else seed, str(run_config)


def evaluate(cfg: DictConfig) -> tuple[Report, dict[str, Any]]:
    """Evaluate `cfg.ckpt_path` on the chosen data; return the report and what was evaluated."""
    options: Any = checked_options(cfg, EvalOptions, "eval")
    if options.split not in SPLITS:
        raise FtlabError(f"split={options.split!r}: use one of {', '.join(SPLITS)}.")
    tta_views(torch.zeros(1, 3, 2, 2), options.tta)  # a wrong tta= fails before any data is loaded
    record = read_record(options.ckpt_path)
    data_cfg, seed, data_from = data_config(cfg, options.ckpt_path, options.seed)
    source = build_source(data_cfg, seed)
    problem = class_mismatch(list(record["class_names"]), list(source.classes), options.ckpt_path)
    if problem:
        raise FtlabError(problem)
    model = TrainedModel.load(options.ckpt_path, options.device)
    datamodule = build_datamodule(data_cfg, source, model.preprocessing)
    datamodule.setup("validate")
    assert datamodule.train_set is not None and datamodule.val_set is not None
    dataset: Dataset = datamodule.val_set
    if options.split == "all":
        datamodule.train_set.transform = datamodule.val_set.transform  # no augmentation
        dataset = ConcatDataset([datamodule.train_set, datamodule.val_set])
    loader = DataLoader(dataset, batch_size=datamodule.batch_size, num_workers=datamodule.num_workers)
    to_checkpoint = torch.tensor([model.class_names.index(name) for name in source.classes])
    preds, target = [], []
    for images, labels in loader:
        batch = datamodule.device_transform(images.to(model.device))
        preds.append(tta_probabilities(model.logits, batch, options.tta).argmax(dim=1))  # TTA hook
        target.append(to_checkpoint[labels])
    if not preds:
        raise FtlabError(f"split={options.split}: the data has no images to evaluate.")
    report = Report.from_predictions(model.class_names, torch.cat(preds), torch.cat(target))
    about = {
        "ckpt_path": str(options.ckpt_path),
        "data": OmegaConf.to_container(data_cfg, resolve=True),
        "data_config_from": data_from,
        "split": options.split,
        "seed": seed,
        "images": len(dataset),  # type: ignore[arg-type]
        "tta": options.tta,
    }
    return report, about


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
@report_errors
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the accuracy."""
    report, about = evaluate(cfg)
    console = Console()
    source = about["data"].get("source")
    console.print(f"{about['ckpt_path']}: {about['split']} split of {source} ({about['images']} images)")
    for table in report.tables():
        console.print(table)
    written = report.write(Path(str(cfg.paths.output_dir)), about)
    console.print(f"accuracy: {report.accuracy:.4f}")
    console.print("written: " + "  ".join(str(p) for p in written))
    return report.accuracy


if __name__ == "__main__":
    main()
