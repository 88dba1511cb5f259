"""`python -m ftlab.predict ckpt_path=<ckpt> inputs=[<image or folder> ...]`: class probabilities per image.

Each image is read, resized, cropped and normalised exactly as the checkpoint's backbone expects (the
preprocessing recorded in the checkpoint) and classified in batches on the CPU or a GPU. Text output is one
line per image, `path  dog 0.80  cat 0.10  automobile 0.10`, most probable first; `format=json` prints one
JSON object per line with `path`, `probs` (class -> probability, most probable first) and `top1`.
Probabilities are temperature-scaled when the checkpoint holds a temperature (`ftlab.eval calibrate=true`).
A multi-label checkpoint prints each image's label set first, then every label's sigmoid probability
(`path  [dog,cat]  dog 0.91  cat 0.70  car 0.02`; JSON: `path`, `labels`, `probs`); a label is in the set when
its probability reaches the threshold tuned on the validation split (stored in the checkpoint).
`explain=true out_dir=<folder>` also writes a Grad-CAM overlay PNG per image (CNN backbones; multi-label: one
per predicted label).
An image that cannot be read is reported on stderr and skipped; the exit status is then 2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import IO, Any

import hydra
import torch
from omegaconf import DictConfig

from ftlab.config.check import check_command_line, command_options
from ftlab.config.location import config_dir
from ftlab.config.registry import register
from ftlab.errors import FtlabError, report_errors
from ftlab.inference.calibration import describe
from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.prediction import OUTPUT_FORMATS, Prediction, collect_images, explain, predict
from ftlab.inference.tta import tta_views

__all__ = ["PredictOptions", "Prediction", "collect_images", "main", "predict", "run"]


@register("command", "predict")
@dataclass
class PredictOptions:
    """`python -m ftlab.predict ckpt_path=<ckpt> inputs=[<image or folder>,...]`: class probabilities."""

    ckpt_path: str = "???"  # checkpoint written by ftlab.train (a run's checkpoints/best.ckpt or last.ckpt)
    # image files and folders (searched recursively): inputs=a.jpg or inputs=[a.jpg,photos/]
    inputs: Any = "???"
    format: str = "text"  # text: `path  dog 0.80  cat 0.15 ...`; json: one JSON object per line
    top_k: int | None = None  # classes shown per image, most probable first; null = all
    batch_size: int = 32  # images per forward pass
    num_workers: int = 2  # processes decoding images (used when there is more than one batch)
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:<index>
    explain: bool = False  # true: also write a Grad-CAM overlay PNG per image into out_dir (CNN backbones)
    out_dir: str | None = None  # folder for the explain=true overlays, e.g. out_dir=explanations/
    tta: str = "none"  # test-time augmentation: none | hflip | five_crop (mean of the views' probabilities)

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):  # inputs=a.jpg, no brackets
            self.inputs = [self.inputs]
        if not isinstance(self.inputs, list | tuple) or not self.inputs:
            raise FtlabError(
                f"inputs={self.inputs!r}: give image files or folders, e.g. inputs=[a.jpg,photos/]."
            )
        self.inputs = [str(item) for item in self.inputs]


def run(options: PredictOptions, out: IO[str]) -> None:
    """Print predictions for `options.inputs` to `out`; unreadable files go to stderr and end in an error."""
    if options.format not in OUTPUT_FORMATS:
        raise FtlabError(f"format={options.format!r}: use one of {', '.join(OUTPUT_FORMATS)}.")
    if options.top_k is not None and options.top_k < 1:
        raise FtlabError(f"top_k={options.top_k}: give a positive number of classes, or null for all.")
    if options.batch_size < 1:
        raise FtlabError(f"batch_size={options.batch_size}: give a positive number of images.")
    if options.explain and not options.out_dir:
        raise FtlabError("explain=true needs out_dir=<folder>: the folder the Grad-CAM overlay PNGs go to.")
    paths = collect_images(options.inputs)
    model = TrainedModel.load(options.ckpt_path, options.device)
    about = multi_label_note(model) if model.multi_label else describe(model.temperature)
    print(about, file=sys.stderr)  # stdout stays one line per image
    failed: list[str] = []
    tta_views(torch.zeros(1, 3, 2, 2), options.tta)  # a wrong tta= fails before any image is read
    batches = predict(model, paths, options.top_k, options.batch_size, options.num_workers, options.tta)
    for result in batches:
        if isinstance(result, Prediction):
            print(result.json() if options.format == "json" else result.text(), file=out, flush=True)
        else:
            print(f"ftlab: skipped {result[0]}: {result[1]}", file=sys.stderr)
            failed.append(result[0])
    if options.explain:
        assert options.out_dir is not None
        written = explain(model, paths, options.out_dir)
        print(f"Grad-CAM overlays: {len(written)} PNG files in {options.out_dir}", file=sys.stderr)
    if failed:
        raise FtlabError(
            f"{len(failed)} of {len(paths)} images could not be read (listed above); the others were "
            "classified."
        )


def multi_label_note(model: TrainedModel) -> str:
    """What the label sets of a multi-label checkpoint mean, for stderr."""
    if model.thresholds is None:
        return "multi-label: sigmoid probability per label; labels at p >= 0.5 (no tuned thresholds stored)"
    cuts = ", ".join(f"{n} {t:.2f}" for n, t in zip(model.class_names, model.thresholds, strict=True))
    return f"multi-label: sigmoid probability per label; labels at p >= their val-tuned thresholds ({cuts})"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
@report_errors
def _hydra_main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    options: Any = command_options(cfg, PredictOptions, "predict")
    run(options, sys.stdout)


@report_errors
def main() -> None:
    """The command line is checked (unknown keys, wrong types) before Hydra runs the command."""
    check_command_line("predict")
    _hydra_main()


if __name__ == "__main__":
    main()
