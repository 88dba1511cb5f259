"""Your own images in an ImageFolder layout (`root/<class>/<image>`)."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from ftlab.config.types import check_field_types
from ftlab.data.datasets import FileImages, LabeledImages
from ftlab.data.images import IMAGE_EXTENSIONS, image_problem
from ftlab.data.sampling import stratified_subset
from ftlab.data.sources.base import Asset
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


def _class_counts(classes: list[str], labels: list[int]) -> str:
    """'cat=12, dog=3': images per class, for error messages."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    return ", ".join(f"{c}={n}" for c, n in zip(classes, counts, strict=True))


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

    def _check(self, paths: list[str]) -> list[tuple[str, str]]:
        """(path, reason) of the files in `paths` that do not decode: a thread pool, with a progress bar."""
        from rich.progress import Progress

        if not paths:
            return []
        start = time.monotonic()
        problems: list[str | None] = []
        with (
            ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
            Progress(console=Console(stderr=True), transient=True) as progress,
        ):
            task = progress.add_task("checking images", total=len(paths))
            for why in pool.map(image_problem, paths, chunksize=64):
                problems.append(why)
                progress.advance(task)
        log.info("data: checked %d images in %.1f s", len(paths), time.monotonic() - start)
        return [(path, why) for path, why in zip(paths, problems, strict=True) if why is not None]

    def _split(
        self, paths: list[str], labels: list[int], val: tuple[list[str], list[int]] | None
    ) -> tuple[list[str], list[int], list[str], list[int]]:
        """Train and val files: val from `val_root`, else a stratified split of `root`; then the size caps."""
        classes = self.classes
        if val is not None:
            val_paths, val_labels = val
            for key, found in (("data.root", labels), ("data.val_root", val_labels)):
                if np.bincount(np.asarray(found, dtype=np.int64), minlength=len(classes)).min() == 0:
                    raise FtlabError(
                        f"{key}: a class has no readable images left ({_class_counts(classes, found)})."
                    )
        else:
            if not 0 < self.val_fraction < 1:
                raise FtlabError(f"data.val_fraction={self.val_fraction} must be between 0 and 1.")
            counts = np.bincount(labels, minlength=len(classes))
            if counts.min() < 2:
                small = [f"{c} ({n})" for c, n in zip(classes, counts, strict=True) if n < 2]
                raise FtlabError(
                    f"data.root={self.root}: classes {', '.join(small)} have too few images to "
                    "split into train and val (2 needed); add images or set data.val_root."
                )
            idx = np.arange(len(labels))
            from sklearn.model_selection import train_test_split

            try:
                tr, va = train_test_split(
                    idx, test_size=self.val_fraction, stratify=labels, random_state=self.seed
                )
            except ValueError as err:
                raise FtlabError(
                    f"data.val_fraction={self.val_fraction} cannot split {len(labels)} images of "
                    f"{len(classes)} classes ({_class_counts(classes, labels)}): {err} Every class needs "
                    "at least one image on each side: add images, change data.val_fraction, or set "
                    "data.val_root."
                ) from err
            val_paths, val_labels = [paths[i] for i in sorted(va)], [labels[i] for i in sorted(va)]
            paths, labels = [paths[i] for i in sorted(tr)], [labels[i] for i in sorted(tr)]
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
        checked: set[str] = set()
        bad: dict[str, str] = {}
        while True:
            tr_paths, tr_labels, va_paths, va_labels = self._split(paths, labels, val)
            used = tr_paths + va_paths
            new = self._check([p for p in used if p not in checked])
            checked.update(used)
            if new and not self.skip_bad_images:
                where = f"data.root={self.root}" + (f" / data.val_root={self.val_root}" if val else "")
                shown = "\n".join(f"- {path}: {why}" for path, why in new[:10])
                more = f"\n- ... and {len(new) - 10} more" if len(new) > 10 else ""
                raise FtlabError(
                    f"{len(new)} of {len(used)} images under {where} cannot "
                    f"be read:\n{shown}{more}\nRemove or replace them, or set data.skip_bad_images=true to "
                    "train without them (they are then listed in the log)."
                )
            if not new:
                break
            bad.update(new)
            keep = [i for i, p in enumerate(paths) if p not in bad]
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
            if val is not None:
                keep = [i for i, p in enumerate(val[0]) if p not in bad]
                val = ([val[0][i] for i in keep], [val[1][i] for i in keep])
        if bad:
            self.skipped = sorted(bad.items())
            listing = "\n".join(f"  {path}: {why}" for path, why in self.skipped)
            log.warning("Skipped %d unreadable images (data.skip_bad_images=true):\n%s", len(bad), listing)
        return FileImages(tr_paths, tr_labels), FileImages(va_paths, va_labels)
