"""Stable per-image ids and `data.exclude=<file>`: drop listed images from any source's train/val split.

An image's id is its file path for file sources (as the source lists it) and `<split>:<index>` for
in-memory sources (the index within the split the source returns, which the source's seed keeps fixed).
`ftlab.audit suspects_out=<file>` writes such a list.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ftlab.data.datasets import FileImages, LabeledImages, TensorImages
from ftlab.errors import FtlabError

log = logging.getLogger(__name__)


def image_ids(dataset: LabeledImages, split: str) -> list[str]:
    """The stable id of every image of `dataset` (one split of a source), in dataset order.

    A split that `data.exclude` thinned keeps its images' original ids, so a later list still matches.
    """
    if dataset.ids is not None:
        return list(dataset.ids)
    if isinstance(dataset, FileImages):
        return [str(path) for path in dataset.paths]
    return [f"{split}:{index}" for index in range(len(dataset))]


def _normal(image_id: str) -> str:
    """Ids compare as absolute paths for files, so `photos/a.jpg` and `/home/u/photos/a.jpg` match."""
    if ":" in image_id and image_id.split(":", 1)[0] in ("train", "val"):
        return image_id
    return os.path.abspath(os.path.expanduser(image_id))


def read_exclude(path: str | Path) -> set[str]:
    """The ids listed in an exclude file: one per line; blank lines and `#` comment lines are ignored."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FtlabError(
            f"data.exclude={str(path)!r}: no such file. Give a text file with one image id per line (a file "
            "path, or `train:<index>` / `val:<index>` for in-memory sources), e.g. the suspects file "
            "that `python -m ftlab.audit suspects_out=<file>` writes."
        )
    lines = (line.strip() for line in file.read_text(encoding="utf-8").splitlines())
    return {_normal(line) for line in lines if line and not line.startswith("#")}


def drop_excluded(dataset: LabeledImages, split: str, excluded: set[str]) -> LabeledImages:
    """`dataset` without the images whose id is in `excluded` (the same object when none is)."""
    original = image_ids(dataset, split)
    ids = [_normal(i) for i in original]
    keep = [index for index, image_id in enumerate(ids) if image_id not in excluded]
    if len(keep) == len(ids):
        return dataset
    if not keep:
        raise FtlabError(
            f"data.exclude lists every one of the {len(ids)} {split} images; nothing is left to "
            f"{'train on' if split == 'train' else 'validate on'}. Shorten the exclude file."
        )
    log.info("data.exclude: dropped %d of %d %s images", len(ids) - len(keep), len(ids), split)
    thinned: LabeledImages
    if isinstance(dataset, FileImages):
        paths, labels = dataset.paths, dataset.labels
        kept: Any = (  # multi-hot (N, C) tensors stay tensors
            labels[torch.as_tensor(keep)] if isinstance(labels, torch.Tensor) else [labels[i] for i in keep]
        )
        thinned = FileImages([paths[i] for i in keep], kept, dataset.transform)
    else:
        assert isinstance(dataset, TensorImages)
        index = torch.as_tensor(keep, dtype=torch.long)
        labels = torch.as_tensor(dataset.labels)[index]
        thinned = TensorImages(dataset.images[index], labels, dataset.transform)
    thinned.ids = [original[i] for i in keep]
    return thinned


def apply_exclude(
    train: LabeledImages, val: LabeledImages, exclude: str | None
) -> tuple[LabeledImages, LabeledImages]:
    """Both splits without the images listed in the `exclude` file (unchanged when it is None)."""
    if not exclude:
        return train, val
    excluded = read_exclude(exclude)
    known = {_normal(i) for i in image_ids(train, "train") + image_ids(val, "val")}
    unmatched = excluded - known
    if unmatched:
        log.warning(
            "data.exclude: %d of the %d listed ids name no image of this source (e.g. %s)",
            len(unmatched),
            len(excluded),
            sorted(unmatched)[0],
        )
    return drop_excluded(train, "train", excluded), drop_excluded(val, "val", excluded)
