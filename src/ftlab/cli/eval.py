"""`python -m ftlab.eval ckpt_path=<ckpt> [data=<source> ...]`: accuracy, per-class metrics, confusion matrix,
calibration (ECE, NLL, Brier) and a reliability diagram.

Without `data=...` the checkpoint is evaluated on its own training run's validation split (read from the run's
`.hydra/config.yaml`, same seed); `data=imagefolder data.root=<folder> split=all` evaluates every image of a
folder. `ckpt_path` may also name a file written by `ftlab.export` (ONNX, int8 ONNX, TorchScript): the same
metrics, from the preprocessing, classes and temperature in its metadata. `calibrate=true` first fits
temperature scaling on the validation split and stores it in the checkpoint; predict, eval and export apply
it from then on. The tables are printed; `metrics.json`, `per_class.csv`, `confusion_matrix.csv`,
`confusion_matrix.png` and `reliability_diagram.png` are written to the eval run folder
(logs/eval/<timestamp>/ unless `hydra.run.dir` says otherwise), and the reliability diagram also goes to
the training run's TensorBoard when the checkpoint sits in its run folder.
A multi-label checkpoint gets the per-label table instead (threshold, precision, recall, F1, AP, support, then
macro and micro means and mAP) in `metrics.json` and `per_class.csv`; it is not calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from rich.console import Console

from ftlab.config.check import check_command_line, command_options
from ftlab.config.location import config_dir
from ftlab.config.registry import register
from ftlab.data.settings import DataSettings
from ftlab.errors import report_errors
from ftlab.inference import evaluation
from ftlab.inference.calibration import describe
from ftlab.inference.evaluation import MultiLabelReport, Report, log_to_tensorboard, tensorboard_folder
from ftlab.inference.tta import tta_views
from ftlab.training.settings import PathsSettings

__all__ = ["EvalOptions", "Report", "evaluate", "main"]


@register("command", "eval")
@dataclass
class EvalOptions:
    """`python -m ftlab.eval ckpt_path=<ckpt> [data=<source> data.root=<folder> split=all]`."""

    task_name: str = "eval"  # names the run folder: logs/eval/<timestamp>/
    # checkpoint written by ftlab.train (a run's checkpoints/best.ckpt), or a file written by ftlab.export
    ckpt_path: str = "???"
    split: str = "val"  # val: the validation split, as in training; all: every image of the source
    seed: int | None = None  # seed of the train/val split; null = the training run's seed (42 when unknown)
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:<index>
    # true: fit temperature scaling on the val split and store it in the checkpoint first
    calibrate: bool = False
    tta: str = "none"  # test-time augmentation: none | hflip | five_crop (mean of the views' probabilities)
    # data=<source>: evaluate on it; null = the training run's own data config
    data: DataSettings | None = None
    # paths=default: data, logs and output folders
    paths: PathsSettings = field(default_factory=PathsSettings)


def evaluate(cfg: DictConfig) -> tuple[Report | MultiLabelReport, dict[str, Any]]:
    """Evaluate `cfg.ckpt_path` on the chosen data; return the report and what was evaluated."""
    options = command_options(cfg, EvalOptions, "eval")
    tta_views(torch.zeros(1, 3, 2, 2), options.tta)  # a wrong tta= fails before any data is loaded
    report, about = evaluation.evaluate(options)
    return report, about | {"tta": options.tta}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
@report_errors
def _hydra_main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the accuracy (multi-label: the macro mAP)."""
    report, about = evaluate(cfg)
    console = Console()
    source = about["data"].get("source")
    console.print(f"{about['ckpt_path']}: {about['split']} split of {source} ({about['images']} images)")
    if isinstance(report, MultiLabelReport):
        return _multi_label(report, about, Path(str(cfg.paths.output_dir)), console)
    fit = about.get("calibration_fit")
    if fit:
        console.print(
            f"calibrated: temperature {fit['temperature']:.4f} fitted on the val split (val NLL "
            f"{fit['val_nll_before']:.4f} -> {fit['val_nll_after']:.4f}), stored in {about['ckpt_path']}",
            soft_wrap=True,
        )
    for table in [*report.tables(), report.calibration_table()]:
        console.print(table)
    written = report.write(Path(str(cfg.paths.output_dir)), about)
    board = tensorboard_folder(about["ckpt_path"])
    if board is not None:
        log_to_tensorboard(report, board)
        console.print(f"reliability diagram added to TensorBoard: {board} (eval/reliability_diagram)")
    console.print(describe(report.temperature), soft_wrap=True)
    console.print(f"accuracy: {report.accuracy:.4f}")
    console.print("written: " + "  ".join(str(p) for p in written))
    return report.accuracy


def _multi_label(report: MultiLabelReport, about: dict[str, Any], folder: Path, console: Console) -> float:
    """Print and write a multi-label checkpoint's per-label table; return its macro mAP."""
    for table in report.tables():
        console.print(table)
    written = report.write(folder, about)
    console.print(f"thresholds: {about['thresholds_from']}; a label is predicted at p >= its threshold")
    summary = report.summary()
    console.print(
        f"mAP: {summary['mAP']:.4f}  macro F1: {summary['macro']['f1']:.4f}  "
        f"micro F1: {summary['micro']['f1']:.4f}"
    )
    console.print("written: " + "  ".join(str(p) for p in written))
    return report.headline


@report_errors
def main() -> None:
    """The command line is checked (unknown keys, wrong types) before Hydra runs the command."""
    check_command_line("eval")
    _hydra_main()


if __name__ == "__main__":
    main()
