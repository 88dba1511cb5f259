"""Data audit: duplicates, train/val leakage, likely label errors, class counts, sizes and modes.

Everything is computed from one forward pass per image through a feature extractor (the command passes a
pretrained backbone's frozen stages up to the pooled features, `models.stages.PooledFeatures`) plus content
hashes. Nothing is deleted or moved: the audit reports, and can write the suspects as ids that
`data.exclude=<file>` leaves out.
"""

from __future__ import annotations

import hashlib
import html
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ftlab.data.datasets import FileImages, LabeledImages
from ftlab.data.exclude import image_ids
from ftlab.data.images import load_rgb
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.transforms import preprocess
from ftlab.errors import FtlabError

SPLITS = ("train", "val")
MULTI_LABEL_NOTE = (
    "label check skipped: the data is multi-label. The label-error finder fits a probe that picks one class "
    "per image and flags images whose confident class is not their label; with several labels per image "
    "that rule has no meaning, so it does not run. Class counts (images carrying each label), duplicates and "
    "train/val leakage above are checked as for single-label data."
)


@dataclass
class AuditImage:
    """One image of a split: its id, label, decoded size and mode, and content hashes."""

    id: str
    split: str
    label: int | list[int]  # class index; multi-label data: the indices of the image's labels
    width: int
    height: int
    mode: str
    pixel_hash: str
    file_hash: str | None


@dataclass
class Pair:
    """Two images that look the same: `kind` is file/pixels (exact) or near (feature cosine similarity)."""

    a: str
    b: str
    where: str  # train | val | train/val (leakage: the same picture on both sides)
    kind: str
    similarity: float


@dataclass
class LabelSuspect:
    """An image whose out-of-fold probe prediction confidently disagrees with its label."""

    id: str
    split: str
    label: str
    predicted: str
    label_prob: float
    predicted_prob: float


@dataclass
class AuditResult:
    """What the audit found; `suspects` are the ids it proposes to leave out (data.exclude)."""

    classes: list[str]
    counts: dict[str, dict[str, int]]
    sizes: dict[str, int]
    modes: dict[str, int]
    pairs: list[Pair] = field(default_factory=list)
    label_suspects: list[LabelSuspect] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    probe_accuracy: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def suspects(self) -> dict[str, str]:
        """id -> reason: the second image of every duplicate pair (the train copy for leakage), and
        every label suspect."""
        found: dict[str, str] = {}
        for pair in self.pairs:
            drop, keep = (pair.a, pair.b) if pair.where == "train/val" else (pair.b, pair.a)
            found.setdefault(drop, f"{pair.kind} duplicate of {keep} ({pair.where})")
        for s in self.label_suspects:
            found.setdefault(s.id, f"labelled {s.label}, looks like {s.predicted} ({s.predicted_prob:.2f})")
        return found

    def to_json(self) -> dict[str, Any]:
        """Plain types for `format=json`."""
        data = asdict(self)
        data["suspects"] = self.suspects
        return data


def _decoded(dataset: LabeledImages, index: int) -> tuple[torch.Tensor, str]:
    """uint8 (3, H, W) pixels of one image, and its stored mode (PIL's for files)."""
    if isinstance(dataset, FileImages):
        path = dataset.paths[index]
        try:
            with Image.open(path) as img:
                mode = img.mode
        except OSError as err:
            raise FtlabError(f"Cannot read image {path}: {err}. Remove or replace the file.") from err
        return load_rgb(path), mode
    images = dataset.images  # type: ignore[attr-defined]
    gray = bool((images[index] == images[index][:1]).all())
    return images[index], "L (in memory)" if gray else "RGB (in memory)"


def describe(dataset: LabeledImages, split_name: str) -> Iterator[tuple[AuditImage, torch.Tensor]]:
    """Each image of a split with its facts and decoded pixels, in dataset order."""
    ids = image_ids(dataset, split_name)
    for index, image_id in enumerate(ids):
        pixels, mode = _decoded(dataset, index)
        shape = "x".join(str(d) for d in pixels.shape).encode()
        pixel_hash = hashlib.sha256(shape + pixels.contiguous().numpy().tobytes()).hexdigest()
        file_hash = None
        if isinstance(dataset, FileImages):
            file_hash = hashlib.sha256(Path(dataset.paths[index]).read_bytes()).hexdigest()
        row = dataset.labels[index]
        label: int | list[int] = (
            [int(i) for i in torch.nonzero(torch.as_tensor(row) > 0.5).flatten()]
            if torch.as_tensor(row).ndim == 1
            else int(row)
        )
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        yield AuditImage(image_id, split_name, label, width, height, mode, pixel_hash, file_hash), pixels


def _small(pixels: torch.Tensor, side: int) -> torch.Tensor:
    """A copy of uint8 (3, H, W) pixels no larger than `side` (kept for the report's thumbnails)."""
    if max(pixels.shape[1:]) <= side:
        return pixels.clone()
    image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def scan(
    splits: dict[str, LabeledImages],
    extractor: nn.Module,
    preprocessing: Preprocessing,
    batch_size: int = 32,
    device: torch.device | None = None,
    thumb_size: int = 96,
) -> tuple[list[AuditImage], torch.Tensor, dict[str, torch.Tensor]]:
    """Facts, pooled features (float32, CPU; one forward pass per image) and thumbnails of every image."""
    device = device or torch.device("cpu")
    extractor.to(device).eval()
    images: list[AuditImage] = []
    thumbs: dict[str, torch.Tensor] = {}
    features: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            features.append(extractor(torch.stack(batch).to(device)).float().cpu())
            batch.clear()

    for split_name, dataset in splits.items():
        for info, pixels in describe(dataset, split_name):
            images.append(info)
            thumbs[info.id] = _small(pixels, thumb_size)
            batch.append(preprocess(pixels, preprocessing))
            if len(batch) == batch_size:
                flush()
    flush()
    return images, (torch.cat(features) if features else torch.zeros(0, 0)), thumbs


def exact_pairs(images: list[AuditImage]) -> list[Pair]:
    """Pairs with identical file bytes, or identical decoded pixels (e.g. a PNG and its lossless copy)."""
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for kind, key in (("file", "file_hash"), ("pixels", "pixel_hash")):
        groups: dict[str, list[AuditImage]] = {}
        for image in images:
            value = getattr(image, key)
            if value is not None:
                groups.setdefault(value, []).append(image)
        for members in groups.values():
            first = members[0]
            for other in members[1:]:
                if (first.id, other.id) not in seen:
                    seen.add((first.id, other.id))
                    pairs.append(Pair(first.id, other.id, _where(first, other), kind, 1.0))
    return pairs


def _where(a: AuditImage, b: AuditImage) -> str:
    return a.split if a.split == b.split else "train/val"


def near_pairs(
    images: list[AuditImage], features: torch.Tensor, threshold: float, exclude: set[tuple[str, str]]
) -> list[Pair]:
    """Pairs whose feature cosine similarity is at least `threshold`, most similar first."""
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    similarity = unit @ unit.T
    rows, cols = torch.triu_indices(len(images), len(images), offset=1)
    values = similarity[rows, cols]
    hits = torch.nonzero(values >= threshold).flatten()
    order = hits[torch.argsort(values[hits], descending=True)]
    pairs = []
    for k in order.tolist():
        a, b = images[int(rows[k])], images[int(cols[k])]
        if (a.id, b.id) in exclude:
            continue
        if a.split == "val" and b.split == "train":
            a, b = b, a
        pairs.append(Pair(a.id, b.id, _where(a, b), "near", float(values[k])))
    return pairs


def confident_label_errors(
    features: np.ndarray, labels: np.ndarray, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold probe probabilities, per-class thresholds and the indices of confident disagreements.

    A linear probe (unit-length features, logistic regression) is fitted `folds` times; each image is
    scored by the probe that did not see it. Class j's threshold is the mean probability of j over images
    labelled j (confident learning's self-confidence); an image is suspect when the most probable class
    among those above their thresholds is not its label.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    probe = make_pipeline(Normalizer(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(probe, features, labels, cv=cv, method="predict_proba")
    num_classes = probs.shape[1]
    thresholds = np.array([probs[labels == j, j].mean() for j in range(num_classes)])
    above = probs >= thresholds[None, :]
    masked = np.where(above, probs, -1.0)
    confident = masked.argmax(axis=1)
    suspect = np.flatnonzero(above.any(axis=1) & (confident != labels))
    suspect = suspect[np.argsort(-(probs[suspect, confident[suspect]] - probs[suspect, labels[suspect]]))]
    return probs, thresholds, suspect


def _counts(images: list[AuditImage], classes: list[str]) -> dict[str, dict[str, int]]:
    table = {name: {s: 0 for s in SPLITS} for name in classes}
    for image in images:
        for label in image.label if isinstance(image.label, list) else [image.label]:
            table[classes[label]][image.split] += 1
    return table


def audit(
    splits: dict[str, LabeledImages],
    classes: list[str],
    extractor: nn.Module,
    preprocessing: Preprocessing,
    near_threshold: float = 0.95,
    folds: int = 5,
    batch_size: int = 32,
    device: torch.device | None = None,
    seed: int = 0,
    thumb_size: int = 96,
) -> tuple[AuditResult, dict[str, torch.Tensor]]:
    """Audit a source's train and val splits; returns the findings and every image's thumbnail by id."""
    images, features, pixels = scan(splits, extractor, preprocessing, batch_size, device, thumb_size)
    if not images:
        raise FtlabError("The data source gave no images to audit; check data.root / data sizes.")
    result = AuditResult(
        classes=list(classes),
        counts=_counts(images, classes),
        sizes=dict(Counter(f"{i.width}x{i.height}" for i in images).most_common()),
        modes=dict(Counter(i.mode for i in images).most_common()),
    )
    result.pairs = exact_pairs(images)
    exact = {(p.a, p.b) for p in result.pairs} | {(p.b, p.a) for p in result.pairs}
    result.pairs += near_pairs(images, features, near_threshold, exact)
    if any(isinstance(i.label, list) for i in images):
        result.notes.append(MULTI_LABEL_NOTE)
        return result, pixels
    labels = np.array([i.label for i in images])
    smallest = min(Counter(labels.tolist()).values())
    if len(set(labels.tolist())) < 2 or smallest < 2:
        result.notes.append("label check skipped: it needs two classes with at least two images each")
        return result, pixels
    folds = min(folds, smallest)
    probs, thresholds, suspects = confident_label_errors(features.numpy(), labels, folds, seed)
    result.thresholds = {classes[j]: float(t) for j, t in enumerate(thresholds)}
    result.probe_accuracy = float((probs.argmax(axis=1) == labels).mean())
    for k in suspects.tolist():
        image, predicted = images[k], int(np.where(probs[k] >= thresholds, probs[k], -1).argmax())
        assert isinstance(image.label, int)
        result.label_suspects.append(
            LabelSuspect(
                image.id,
                image.split,
                classes[image.label],
                classes[predicted],
                float(probs[k, image.label]),
                float(probs[k, predicted]),
            )
        )
    return result, pixels


def _thumbnail(pixels: torch.Tensor, path: Path, side: int) -> None:
    image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    if max(image.size) < side:  # tiny images (CIFAR's 32 px) are enlarged, blocky, to be seen
        scale = side / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.Resampling.NEAREST)
    image.save(path)


def write_markdown(
    result: AuditResult,
    pixels: dict[str, torch.Tensor],
    out_dir: Path,
    thumb_size: int = 96,
    max_rows: int = 50,
) -> Path:
    """`report.md` with thumbnails (under `thumbs/`) beside every reported pair and label suspect."""
    thumbs = out_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}

    def img(image_id: str) -> str:
        if image_id not in names:
            names[image_id] = f"thumbs/{len(names)}.png"
            _thumbnail(pixels[image_id], out_dir / names[image_id], thumb_size)
        return f'<img src="{names[image_id]}" title="{html.escape(image_id)}">'

    lines = ["# Data audit", ""]
    lines += ["## Images per class", "", "| class | train | val |", "|---|---:|---:|"]
    lines += [f"| {name} | {c['train']} | {c['val']} |" for name, c in result.counts.items()]
    lines += ["", "## Sizes and modes", "", "| size (WxH) | images |", "|---|---:|"]
    lines += [f"| {size} | {n} |" for size, n in list(result.sizes.items())[:20]]
    lines += ["", "| mode | images |", "|---|---:|"] + [f"| {m} | {n} |" for m, n in result.modes.items()]
    for title, where in (
        ("Leakage: the same image in train and val", "train/val"),
        ("Duplicates within train", "train"),
        ("Duplicates within val", "val"),
    ):
        pairs = [p for p in result.pairs if p.where == where]
        lines += ["", f"## {title} ({len(pairs)})", ""]
        if not pairs:
            lines.append("None found.")
            continue
        lines += ["| image | duplicate | kind | cosine |", "|---|---|---|---:|"]
        for p in pairs[:max_rows]:
            lines.append(f"| {img(p.a)}<br>`{p.a}` | {img(p.b)}<br>`{p.b}` | {p.kind} | {p.similarity:.4f} |")
    lines += ["", f"## Likely label errors ({len(result.label_suspects)})", ""]
    if result.probe_accuracy is not None:
        lines.append(
            f"Out-of-fold linear probe accuracy {result.probe_accuracy:.3f}; per-class thresholds "
            + ", ".join(f"{k} {v:.2f}" for k, v in result.thresholds.items())
            + "."
        )
        lines.append("")
    if result.label_suspects:
        lines += ["| image | label | looks like | p(label) | p(looks like) |", "|---|---|---|---:|---:|"]
        for s in result.label_suspects[:max_rows]:
            lines.append(
                f"| {img(s.id)}<br>`{s.id}` | {s.label} | {s.predicted} | {s.label_prob:.2f} | "
                f"{s.predicted_prob:.2f} |"
            )
    else:
        lines.append("None found.")
    lines += [""] + [f"Note: {n}" for n in result.notes]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def write_suspects(result: AuditResult, path: Path) -> int:
    """The suspects' ids, one per line with the reason as a comment above it (a `data.exclude` file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# ftlab.audit suspects: review, delete lines to keep images, then train with data.exclude="]
    for image_id, reason in result.suspects.items():
        lines += [f"# {reason}", image_id]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(result.suspects)
