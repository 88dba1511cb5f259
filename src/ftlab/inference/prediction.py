"""Class probabilities for image files from a trained model, in input order, unreadable files reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ftlab.data.datasets import FileImages
from ftlab.data.images import IMAGE_EXTENSIONS, load_rgb
from ftlab.data.transforms import preprocess, resize_and_crop
from ftlab.errors import FtlabError
from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.exported import Model
from ftlab.inference.gradcam import Explainer, overlay, save_png
from ftlab.inference.tta import tta_mean
from ftlab.models.multilabel import predicted_labels

OUTPUT_FORMATS = ("text", "json")  # how ftlab.predict prints a prediction


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


class TolerantFiles(Dataset[Item]):
    """`FileImages` that yields a file's read error instead of raising, so one bad file skips only itself."""

    def __init__(self, files: FileImages) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> Item:
        try:
            return idx, self.files[idx][0], None
        except FtlabError as err:
            return idx, None, str(err)


def _collate(items: list[Item]) -> list[Item]:
    return items  # tensors are stacked after dropping the unreadable ones


@dataclass
class Prediction:
    """One image's class probabilities, most probable first; multi-label: every label's sigmoid probability
    and `labels`, the set at or above their thresholds (in class order)."""

    path: str
    probs: dict[str, float]
    labels: list[str] | None = None  # multi-label checkpoints only

    @property
    def top1(self) -> str:
        return next(iter(self.probs))

    def text(self) -> str:
        """`path  dog 0.80  cat 0.10`; multi-label: `path  [dog,cat]  dog 0.91  cat 0.70  car 0.02`."""
        shown = [f"{name} {p:.2f}" for name, p in self.probs.items()]
        if self.labels is not None:
            shown.insert(0, "[" + ",".join(self.labels) + "]")
        return "  ".join([self.path, *shown])

    def as_dict(self) -> dict[str, Any]:
        """`{"path", "probs", "top1"}` (+ `"labels"` for a multi-label checkpoint)."""
        out: dict[str, Any] = {"path": self.path, "probs": self.probs, "top1": self.top1}
        if self.labels is not None:
            out["labels"] = self.labels
        return out

    def json(self) -> str:
        """`{"path": ..., "probs": {...}, "top1": ...}` on one line (+ `"labels"`: multi-label)."""
        return json.dumps(self.as_dict())


def scores(model: Model, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """What ftlab.predict and ftlab.serve report for preprocessed `images`, (N, classes) on the CPU: class
    probabilities softmax(logits / T) (T: the calibrated temperature, else 1), or for a multi-label model
    each label's sigmoid probability. `tta` averages over the views."""
    return tta_mean(model.probabilities, images, tta)


def to_prediction(model: Model, path: str, row: torch.Tensor, top_k: int | None) -> Prediction:
    """One image's `Prediction` from its row of `scores`: the top_k classes (null: all), most probable
    first; a multi-label model also lists every label at or above its threshold (in class order)."""
    k = len(model.class_names) if top_k is None else min(top_k, len(model.class_names))
    values, order = row.topk(k)
    names = [model.class_names[int(i)] for i in order]
    probs = {n: float(v) for n, v in zip(names, values, strict=True)}
    if not model.multi_label:
        return Prediction(path, probs)
    chosen = predicted_labels(row[None], model.thresholds)[0]
    return Prediction(
        path, probs, [n for n, on in zip(model.class_names, chosen.tolist(), strict=True) if on]
    )


def predict(
    model: TrainedModel,
    paths: list[str],
    top_k: int | None,
    batch_size: int,
    num_workers: int = 0,
    tta: str = "none",
) -> Iterator[Prediction | tuple[str, str]]:
    """Predictions in input order (calibrated when the checkpoint holds a temperature); (path, error) for a
    file that cannot be read."""
    files = FileImages(paths, list(range(len(paths))), partial(preprocess, prep=model.preprocessing))
    loader = DataLoader(
        TolerantFiles(files),
        batch_size=batch_size,
        num_workers=num_workers if len(paths) > batch_size else 0,
        collate_fn=_collate,
    )
    for batch in loader:
        good = [(idx, image) for idx, image, _ in batch if image is not None]
        images = torch.stack([image for _, image in good]) if good else None
        probs = scores(model, images, tta) if images is not None else None  # tta= hook
        rows = {idx: row for (idx, _), row in zip(good, probs if probs is not None else [], strict=True)}
        for idx, _, error in batch:
            if error is not None:
                yield paths[idx], error
                continue
            yield to_prediction(model, paths[idx], rows[idx], top_k)


def gradcam_overlays(explainer: Explainer, images: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) Grad-CAM overlays for the predicted class of each preprocessed image in `images`,
    drawn over `shown` (the same images resized and cropped, uint8)."""
    cams = explainer.maps(images)
    return torch.stack([overlay(image, cam) for image, cam in zip(shown, cams, strict=True)])


def explain(model: TrainedModel, paths: list[str], out_dir: str | Path) -> list[Path]:
    """Write a Grad-CAM overlay PNG per readable image (for its predicted class) into `out_dir`; multi-label:
    one PNG per predicted label (`<name>.<label>.gradcam.png`; the most probable label when none passes
    its threshold)."""
    explainer = Explainer(model.module)  # refuses transformer families with the reason
    folder = Path(out_dir).expanduser()
    written: list[Path] = []
    used: set[str] = set()
    for path in paths:
        try:
            raw = load_rgb(path)
        except FtlabError:
            continue  # predict reports it
        images = preprocess(raw, model.preprocessing)[None].to(model.device)
        name = Path(path).stem
        while name in used:  # same file name in two folders
            name += "_"
        used.add(name)
        shown = resize_and_crop(raw, model.preprocessing)
        if not model.multi_label:
            drawn = gradcam_overlays(explainer, images, shown[None])[0]
            written.append(save_png(drawn, folder / f"{name}.gradcam.png"))
            continue
        probs = model.probabilities(images)
        chosen = torch.nonzero(predicted_labels(probs, model.thresholds)[0]).flatten().tolist()
        for label in chosen or [int(probs[0].argmax())]:
            cam = explainer.maps(images, torch.tensor([label]))[0]
            target = folder / f"{name}.{_safe(model.class_names[label])}.gradcam.png"
            written.append(save_png(overlay(shown, cam), target))
    return written


def _safe(label: str) -> str:
    """A label as a file-name part (path separators and spaces replaced)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
