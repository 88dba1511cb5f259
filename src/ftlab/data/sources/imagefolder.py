"""Your own images in an ImageFolder layout (`root/<class>/<image>`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftlab.config.types import check_field_types
from ftlab.data.datasets import FileImages, LabeledImages
from ftlab.data.images import IMAGE_EXTENSIONS
from ftlab.data.sampling import stratified_subset
from ftlab.data.sources.base import Asset
from ftlab.data.sources.files import (
    Split,
    class_counts_text,
    label_counts,
    load_checked,
    stratified_split,
)
from ftlab.errors import FtlabError

log = logging.getLogger(__name__)


def _scan_folder(root: Path, key: str) -> tuple[list[str], list[str], list[int]]:
    """Classes, file paths and labels of an ImageFolder layout (one sub-folder per class)."""
    from torchvision.datasets.folder import find_classes, make_dataset

    if not root.is_dir():
        raise FtlabError(
            f"{key}={str(root)!r} is not a folder. Point it at a folder with one sub-folder of "
            "images per class."
        )
    layout = "one sub-folder of images per class, e.g. root/cat/1.jpg, root/dog/2.jpg"
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError as err:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        found = f" It holds {len(loose)} images directly; move them into class folders." if loose else ""
        raise FtlabError(f"{key}={str(root)!r} has no class folders.{found} Expected {layout}.") from err
    samples = make_dataset(str(root), class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
    labels = [label for _, label in samples]
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [str(root / c) for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise FtlabError(
            f"{key}={str(root)!r}: no images in the class folder(s) {', '.join(empty)}. Every class folder "
            f"needs at least one image ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder."
        )
    return classes, [p for p, _ in samples], labels


@dataclass
class ImageFolderSource:
    """Your own images: `root/<class>/<image>`; val from `val_root` or a stratified split of `root`.

    Every file the run uses (after the split and `train_size`/`val_size` samples) is decoded once before
    training: an unreadable, truncated or corrupt image stops the run with its path and the reason, or, with
    `skip_bad_images`, is left out and listed in the log (`skipped` keeps the list).
    """

    root: str  # folder with one sub-folder per class (required)
    val_root: str | None = None  # separate validation folder of the same layout; null = split root
    val_fraction: float = 0.2  # share of root held out for validation (stratified, seeded) without val_root
    train_size: int | None = None  # optional stratified cap on training images
    val_size: int | None = None  # optional stratified cap on validation images
    seed: int = 0
    # unreadable/corrupt images: false = stop before training naming them; true = skip and log them
    skip_bad_images: bool = False
    fixed_size: bool = field(default=False, init=False)
    skipped: list[tuple[str, str]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if isinstance(
            self.root, int | float
        ):  # data.root=2024: Hydra reads a folder named by digits as a number
            self.root = str(self.root)
        check_field_types(self)
        start = time.monotonic()
        # file names only, nothing decoded; the first load() reuses it, later ones scan again
        self._scan: tuple[list[str], list[str], list[int]] | None = _scan_folder(Path(self.root), "data.root")
        self.scan_seconds = time.monotonic() - start
        self.classes = self._scan[0]

    def assets(self) -> list[Asset]:
        return [Asset("image folder", Path(self.root), None, Path(self.root).is_dir())]

    def _split(
        self, paths: list[str], labels: list[int], val: tuple[list[str], list[int]] | None
    ) -> tuple[list[str], list[int], list[str], list[int]]:
        """Train and val files: val from `val_root`, else a stratified split of `root`; then the size caps."""
        classes = self.classes
        if val is not None:
            val_paths, val_labels = val
            for key, found in (("data.root", labels), ("data.val_root", val_labels)):
                counts = label_counts(found, len(classes))
                if counts.min() == 0:
                    raise FtlabError(
                        f"{key}: a class has no readable images left ({class_counts_text(classes, counts)})."
                    )
        else:
            tr, va = stratified_split(
                labels, self.val_fraction, self.seed, classes, f"data.root={self.root}", "set data.val_root"
            )
            val_paths, val_labels = [paths[i] for i in va], [labels[i] for i in va]
            paths, labels = [paths[i] for i in tr], [labels[i] for i in tr]
        tr_idx = stratified_subset(np.asarray(labels), self.train_size, self.seed, "data.train_size")
        va_idx = stratified_subset(np.asarray(val_labels), self.val_size, self.seed, "data.val_size")
        return (
            [paths[i] for i in tr_idx],
            [labels[i] for i in tr_idx],
            [val_paths[i] for i in va_idx],
            [val_labels[i] for i in va_idx],
        )

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        """Scan, split and sample by file name; then decode-check only the files the run uses.

        With `skip_bad_images`, bad files are dropped and the split and samples drawn again from the rest
        (checking only newly drawn files), so the result is the split of the readable files.
        """
        self.skipped = []
        start = time.monotonic()
        classes, paths, labels = self._scan or _scan_folder(Path(self.root), "data.root")
        self._scan = None
        val: tuple[list[str], list[int]] | None = None
        if self.val_root:
            val_classes, val_paths, val_labels = _scan_folder(Path(self.val_root), "data.val_root")
            if val_classes != classes:
                raise FtlabError(
                    f"data.val_root classes {val_classes} differ from data.root classes {classes}."
                )
            val = (val_paths, val_labels)
        found = len(paths) + (len(val[0]) if val else 0)
        log.info("data: found %d images in %.1f s", found, self.scan_seconds + time.monotonic() - start)
        self.classes = classes
        where = f"data.root={self.root}" + (f" / data.val_root={self.val_root}" if val else "")

        def draw(bad: set[str]) -> Split:
            keep = [i for i, p in enumerate(paths) if p not in bad]
            readable = None
            if val is not None:
                kept = [i for i, p in enumerate(val[0]) if p not in bad]
                readable = ([val[0][i] for i in kept], [val[1][i] for i in kept])
            return self._split([paths[i] for i in keep], [labels[i] for i in keep], readable)

        (tr_paths, tr_labels, va_paths, va_labels), self.skipped = load_checked(
            draw, self.skip_bad_images, where
        )
        return FileImages(tr_paths, tr_labels), FileImages(va_paths, va_labels)
