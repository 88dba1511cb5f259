"""`python -m ftlab.predict ckpt_path=<ckpt> inputs=[<image or folder> ...]`: class probabilities per image.

Each image is read, resized, cropped and normalised exactly as the checkpoint's backbone expects (the
preprocessing recorded in the checkpoint) and classified in batches on the CPU or a GPU. Text output is one
line per image, `path  dog 0.80  cat 0.10  automobile 0.10`, most probable first; `format=json` prints one
JSON object per line with `path`, `probs` (class -> probability, most probable first) and `top1`.
An image that cannot be read is reported on stderr and skipped; the exit status is then 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import hydra
import torch
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader, Dataset

from ftlab.config.location import config_dir
from ftlab.config.schemas import checked_options
from ftlab.data.images import IMAGE_EXTENSIONS, load_rgb
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.transforms import preprocess
from ftlab.errors import FtlabError, report_errors
from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.tta import tta_probabilities, tta_views

FORMATS = ("text", "json")


@dataclass
class PredictOptions:
    """The options of `ftlab.predict` (conf/predict.yaml)."""

    ckpt_path: str = MISSING
    inputs: list[str] = MISSING
    format: str = "text"
    top_k: int | None = None
    batch_size: int = 32
    num_workers: int = 2
    device: str = "auto"
    tta: str = "none"


def collect_images(inputs: list[str]) -> list[str]:
    """Image files named by `inputs`: files as given, folders searched recursively (sorted by path)."""
    found: list[str] = []
    missing = [item for item in inputs if not Path(item).expanduser().exists()]
    if missing:
        raise FtlabError(f"inputs: no such file or folder: {', '.join(missing)}.")
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            images = sorted(
                str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not images:
                raise FtlabError(
                    f"inputs: the folder {item} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
                )
            found.extend(images)
        else:
            found.append(str(path))
    return found


Item = tuple[int, torch.Tensor | None, str | None]


class ImageFiles(Dataset[Item]):
    """Image files as preprocessed tensors; a file that cannot be read yields its error instead."""

    def __init__(self, paths: list[str], preprocessing: Preprocessing) -> None:
        self.paths, self.preprocessing = paths, preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int) -> Item:
        try:
            return idx, preprocess(load_rgb(self.paths[idx]), self.preprocessing), None
        except FtlabError as err:
            return idx, None, str(err)


def _collate(items: list[Item]) -> list[Item]:
    return items  # tensors are stacked after dropping the unreadable ones


@dataclass
class Prediction:
    """One image's class probabilities, most probable first."""

    path: str
    probs: dict[str, float]

    @property
    def top1(self) -> str:
        return next(iter(self.probs))

    def text(self) -> str:
        """`path  dog 0.80  cat 0.10`."""
        return "  ".join([self.path, *(f"{name} {p:.2f}" for name, p in self.probs.items())])

    def json(self) -> str:
        """`{"path": ..., "probs": {...}, "top1": ...}` on one line."""
        return json.dumps({"path": self.path, "probs": self.probs, "top1": self.top1})


def predict(
    model: TrainedModel,
    paths: list[str],
    top_k: int | None,
    batch_size: int,
    num_workers: int = 0,
    tta: str = "none",
) -> Iterator[Prediction | tuple[str, str]]:
    """Predictions in input order; (path, error) for a file that cannot be read."""
    k = len(model.class_names) if top_k is None else min(top_k, len(model.class_names))
    loader = DataLoader(
        ImageFiles(paths, model.preprocessing),
        batch_size=batch_size,
        num_workers=num_workers if len(paths) > batch_size else 0,
        collate_fn=_collate,
    )
    for batch in loader:
        good = [(idx, image) for idx, image, _ in batch if image is not None]
        images = torch.stack([image for _, image in good]) if good else None
        probs = tta_probabilities(model.logits, images, tta) if images is not None else None  # TTA hook
        rows = {idx: row for (idx, _), row in zip(good, probs if probs is not None else [], strict=True)}
        for idx, _, error in batch:
            if error is not None:
                yield paths[idx], error
                continue
            values, order = rows[idx].topk(k)
            names = [model.class_names[int(i)] for i in order]
            yield Prediction(paths[idx], {n: float(v) for n, v in zip(names, values, strict=True)})


def run(options: PredictOptions, out: IO[str]) -> None:
    """Print predictions for `options.inputs` to `out`; unreadable files go to stderr and end in an error."""
    if options.format not in FORMATS:
        raise FtlabError(f"format={options.format!r}: use one of {', '.join(FORMATS)}.")
    if options.top_k is not None and options.top_k < 1:
        raise FtlabError(f"top_k={options.top_k}: give a positive number of classes, or null for all.")
    if options.batch_size < 1:
        raise FtlabError(f"batch_size={options.batch_size}: give a positive number of images.")
    paths = collect_images(options.inputs)
    model = TrainedModel.load(options.ckpt_path, options.device)
    failed: list[str] = []
    tta_views(torch.zeros(1, 3, 2, 2), options.tta)  # a wrong tta= fails before any image is read
    batches = predict(model, paths, options.top_k, options.batch_size, options.num_workers, options.tta)
    for result in batches:
        if isinstance(result, Prediction):
            print(result.json() if options.format == "json" else result.text(), file=out, flush=True)
        else:
            print(f"ftlab: skipped {result[0]}: {result[1]}", file=sys.stderr)
            failed.append(result[0])
    if failed:
        raise FtlabError(
            f"{len(failed)} of {len(paths)} images could not be read (listed above); the others were "
            "classified."
        )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    if not OmegaConf.is_missing(cfg, "inputs") and isinstance(cfg.inputs, str):  # inputs=a.jpg, no brackets
        with open_dict(cfg):
            cfg.inputs = [cfg.inputs]
    options: Any = checked_options(cfg, PredictOptions, "predict")
    run(options, sys.stdout)


if __name__ == "__main__":
    main()
