"""Your own images listed in a CSV file: one row per image, its path and its label(s).

```
path,label            path,labels,split
cats/1.jpg,cat        1.jpg,cat dog,train
dogs/7.jpg,dog        2.jpg,dog,val
```

A `label` column gives one class per image; a `labels` column gives several (separated by
`data.label_separator`, default whitespace), which makes the task multi-label (`data.multi_label=auto`).
An optional `split` column (train / val / test) fixes the split; rows without one are split by a seeded
stratified draw (`data.val_fraction`). An optional `fold` column fixes the k-fold folds (`data.folds`).
Images are read by the one loader and decode-checked before training, like `data=imagefolder`'s.
"""

from __future__ import annotations

import csv as csvlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftlab.config.types import check_field_types
from ftlab.data.datasets import FileImages, LabeledImages
from ftlab.data.folds import multi_label_split
from ftlab.data.sampling import stratified_subset
from ftlab.data.sources.base import Asset
from ftlab.data.sources.files import (
    Split,
    class_counts_text,
    label_counts,
    load_checked,
)
from ftlab.errors import FtlabError, did_you_mean

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MULTI_LABEL = ("auto", True, False)


@dataclass
class Row:
    """One image of the CSV: its line in the file, path (as the run reads it), classes, split and fold."""

    line: int
    path: str
    classes: tuple[int, ...]
    split: str  # train | val | test | "" (drawn by the seeded split)
    fold: int | None


def multi_hot(rows: list[Row], num_classes: int) -> torch.Tensor:
    """float32 (N, C) 0/1 labels, columns in class order."""
    labels = torch.zeros(len(rows), num_classes, dtype=torch.float32)
    for i, row in enumerate(rows):
        labels[i, list(row.classes)] = 1.0
    return labels


@dataclass
class CsvSource:
    """Images listed in a CSV file (`data.csv`): a path column and a `label` (one class) or `labels`
    (several) column; optional `split` and `fold` columns. Column names are keys of their own."""

    csv: str  # the CSV file (required); paths in it are relative to its folder, or to data.root
    root: str | None = None  # folder the CSV's paths are relative to; null = the CSV's own folder
    path_column: str = "path"  # column of image paths
    label_column: str = "label"  # column of one class per image (single-label)
    labels_column: str = "labels"  # column of several classes per image (multi-label)
    label_separator: str = " "  # between the classes of a labels cell; " " = any whitespace (e.g. ";")
    split_column: str = "split"  # optional column: train | val | test (empty: drawn by data.val_fraction)
    fold_column: str = "fold"  # optional column: the image's fold 0..K-1 for data.folds=K
    classes: list[str] | None = None  # the classes in this order; null = every class found, sorted
    multi_label: Any = "auto"  # auto = multi-label when the labels column is used | true | false
    val_fraction: float = 0.2  # share of the rows without a split held out for validation (stratified)
    train_size: int | None = None  # optional stratified cap on training images
    val_size: int | None = None  # optional stratified cap on validation images
    seed: int = 0
    # unreadable/corrupt/missing images: false = stop before training naming them; true = skip, log them
    skip_bad_images: bool = False
    fixed_size: bool = field(default=False, init=False)
    skipped: list[tuple[str, str]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        for key in ("csv", "root"):  # data.root=2024: Hydra reads a folder named by digits as a number
            if isinstance(getattr(self, key), int | float) and not isinstance(getattr(self, key), bool):
                setattr(self, key, str(getattr(self, key)))
        check_field_types(self)
        if self.multi_label not in MULTI_LABEL:
            raise FtlabError(f"data.multi_label={self.multi_label!r}: give auto, true or false.")
        if not isinstance(self.label_separator, str) or not self.label_separator:
            raise FtlabError(
                f"data.label_separator={self.label_separator!r}: give the character between the classes "
                "of a labels cell, e.g. ' ' (any whitespace) or ';'."
            )
        self.rows, self.names, self.multi_label = self._read()
        self.classes = self.names  # data.classes, resolved: the class order of the labels
        self.folds: dict[str, int] | None = (
            {row.path: row.fold for row in self.rows if row.fold is not None} if self._has_folds else None
        )

    def assets(self) -> list[Asset]:
        return [Asset("CSV of images and labels", Path(self.csv), None, Path(self.csv).is_file())]

    # -- reading the table -------------------------------------------------------------------------------

    def _where(self, line: int) -> str:
        return f"data.csv={self.csv}, row {line}"

    def _read(self) -> tuple[list[Row], list[str], bool]:
        """Rows, classes and whether the task is multi-label; every problem of the table is one paragraph."""
        file = Path(self.csv).expanduser()
        if not file.is_file():
            raise FtlabError(
                f"data.csv={self.csv!r}: no such file. Give a CSV file with a {self.path_column!r} column "
                f"and a {self.label_column!r} (one class) or {self.labels_column!r} (several) column."
            )
        base = Path(self.root).expanduser() if self.root else file.parent
        try:
            with open(file, newline="", encoding="utf-8-sig") as f:
                reader = csvlib.DictReader(f)
                columns = [c.strip() for c in reader.fieldnames or []]
                reader.fieldnames = columns
                records = [(reader.line_num, record) for record in reader]
        except (OSError, UnicodeDecodeError, csvlib.Error) as err:
            raise FtlabError(f"data.csv={self.csv}: cannot read it as a CSV file ({err}).") from err
        found = f"The columns found are: {', '.join(repr(c) for c in columns) or 'none'}."
        if self.path_column not in columns:
            raise FtlabError(
                f"data.csv={self.csv} has no {self.path_column!r} column (data.path_column)."
                f"{did_you_mean(self.path_column, columns)} {found} Name the column of image paths with "
                "data.path_column=<name>."
            )
        multi_column = self.labels_column in columns
        single_column = self.label_column in columns
        if not multi_column and not single_column:
            raise FtlabError(
                f"data.csv={self.csv} has neither a {self.label_column!r} column (one class per image, "
                f"data.label_column) nor a {self.labels_column!r} column (several, data.labels_column). "
                f"{found} Name yours with data.label_column=<name> or data.labels_column=<name>."
            )
        use_multi_column = multi_column and (self.multi_label is not False or not single_column)
        column = self.labels_column if use_multi_column else self.label_column
        multi_label = use_multi_column if self.multi_label == "auto" else bool(self.multi_label)
        self._has_split = self.split_column in columns
        self._has_folds = self.fold_column in columns
        if not records:
            raise FtlabError(f"data.csv={self.csv} has a header but no rows: list one image per row.")
        names: list[list[str]] = []
        for line, record in records:
            cell = (record.get(column) or "").strip()
            parts = cell.split() if self.label_separator == " " else cell.split(self.label_separator)
            found_names = [p.strip() for p in parts if p.strip()]
            if not found_names:
                raise FtlabError(
                    f"{self._where(line)}: the {column!r} cell is empty. Every image needs "
                    f"{'at least one class' if use_multi_column else 'a class'}; fill it in or remove the "
                    "row."
                )
            if not multi_label and len(found_names) > 1:
                raise FtlabError(
                    f"{self._where(line)}: {len(found_names)} classes ({', '.join(found_names)}) for a "
                    "single-label task (data.multi_label=false). Give one class per image, or set "
                    "data.multi_label=true."
                )
            names.append(found_names)
        classes = self._classes(names, records)
        index = {name: i for i, name in enumerate(classes)}
        rows: list[Row] = []
        seen: dict[str, Row] = {}
        for (line, record), found_names in zip(records, names, strict=True):
            raw = (record.get(self.path_column) or "").strip()
            if not raw:
                raise FtlabError(f"{self._where(line)}: the {self.path_column!r} cell is empty.")
            path = str(base / Path(raw).expanduser())
            own = tuple(sorted({index[n] for n in found_names}))
            row = Row(line, path, own, *self._split_fold(line, record))
            key = os.path.normpath(os.path.abspath(path))
            if key in seen:
                first = seen[key]
                if first.classes != row.classes:
                    raise FtlabError(
                        f"data.csv={self.csv}: {raw!r} is listed twice with different labels: row "
                        f"{first.line} says {', '.join(classes[c] for c in first.classes)}, row {line} says "
                        f"{', '.join(classes[c] for c in row.classes)}. Keep one row per image (several "
                        f"classes go in one {self.labels_column!r} cell)."
                    )
                if (first.split, first.fold) != (row.split, row.fold):
                    raise FtlabError(
                        f"data.csv={self.csv}: {raw!r} is listed twice (rows {first.line} and {line}) with a "
                        "different split or fold. Keep one row per image."
                    )
                log.info("data.csv: row %d repeats row %d (%s); using it once", line, first.line, raw)
                continue
            seen[key] = row
            rows.append(row)
        counts = label_counts([c for row in rows for c in row.classes], len(classes))
        empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
        if empty:
            raise FtlabError(
                f"data.csv={self.csv}: no image of the class(es) {', '.join(empty)} listed in data.classes. "
                "Every class needs training images; add rows or remove the class from data.classes."
            )
        return rows, classes, multi_label

    def _classes(self, names: list[list[str]], records: list[tuple[int, dict[str, Any]]]) -> list[str]:
        """`data.classes` when given (every label must be one of them), else the names found, sorted."""
        if self.classes is None:
            return sorted({n for found in names for n in found})
        classes = [str(c) for c in self.classes]
        if len(set(classes)) != len(classes) or not classes:
            raise FtlabError(f"data.classes={classes}: list each class once.")
        known = set(classes)
        for (line, _), found in zip(records, names, strict=True):
            unknown = [n for n in found if n not in known]
            if unknown:
                raise FtlabError(
                    f"{self._where(line)}: {unknown[0]!r} is not in data.classes."
                    f"{did_you_mean(unknown[0], classes)} The classes are: {', '.join(classes)}. Add it to "
                    "data.classes, fix the row, or set data.classes=null to use every class found."
                )
        return classes

    def _split_fold(self, line: int, record: dict[str, Any]) -> tuple[str, int | None]:
        split = (record.get(self.split_column) or "").strip().lower() if self._has_split else ""
        if split and split not in SPLITS:
            raise FtlabError(
                f"{self._where(line)}: split {split!r} in column {self.split_column!r} is not one of "
                f"{', '.join(SPLITS)} (or empty: drawn by data.val_fraction)."
            )
        if not self._has_folds or split == "test":
            return split, None
        cell = (record.get(self.fold_column) or "").strip()
        try:
            fold = int(cell)
        except ValueError:
            fold = -1
        if fold < 0:
            raise FtlabError(
                f"{self._where(line)}: fold {cell!r} in column {self.fold_column!r} is not a whole number "
                "0, 1, ...; every train/val row needs its fold when the CSV has a fold column."
            )
        return split, fold

    # -- splitting and loading ---------------------------------------------------------------------------

    def _labels(self, rows: list[Row]) -> Any:
        """Labels of rows: ints for a single-label task, a float32 (N, C) multi-hot tensor for multi-label."""
        if self.multi_label:
            return multi_hot(rows, len(self.names))
        return [row.classes[0] for row in rows]

    def _strata(self, rows: list[Row]) -> np.ndarray:
        """int labels (N,) of a single-label task, 0/1 (N, C) of a multi-label one."""
        return np.asarray(multi_hot(rows, len(self.names)) if self.multi_label else self._labels(rows))

    def _cap(self, rows: list[Row], size: int | None, what: str) -> list[Row]:
        if size is None or size >= len(rows):
            return rows
        if not self.multi_label:
            return [rows[i] for i in stratified_subset(self._strata(rows), size, self.seed, what)]
        _, chosen = multi_label_split(
            self._strata(rows), size / len(rows), self.seed, [row.path for row in rows]
        )
        return [rows[i] for i in chosen]

    def _split(self, rows: list[Row]) -> tuple[list[Row], list[Row]]:
        """Train and val rows: the split column where given, a seeded stratified draw for the rest."""
        train = [r for r in rows if r.split == "train"]
        val = [r for r in rows if r.split == "val"]
        free = [r for r in rows if r.split == ""]
        if free:  # iterative stratification: every class's share, whatever its count (one-hot if single)
            if not 0 < self.val_fraction < 1:
                raise FtlabError(f"data.val_fraction={self.val_fraction} must be between 0 and 1.")
            strata = np.asarray(multi_hot(free, len(self.names)))
            tr, va = multi_label_split(strata, self.val_fraction, self.seed, [r.path for r in free])
            train += [free[i] for i in tr]
            val += [free[i] for i in va]
        train.sort(key=lambda r: r.line)
        val.sort(key=lambda r: r.line)
        train = self._cap(train, self.train_size, "data.train_size")
        val = self._cap(val, self.val_size, "data.val_size")
        counts = label_counts(self._strata(train), len(self.names)) if train else np.zeros(1, np.int64)
        if not train or counts.min() == 0:
            missing = [c for c, n in zip(self.names, counts, strict=True) if n == 0] if train else []
            raise FtlabError(
                f"data.csv={self.csv}: no training image of the class(es) {', '.join(missing) or 'any'} "
                f"(train: {class_counts_text(self.names, counts) if train else 'no rows'}). Every class "
                f"needs training images: mark more of its rows train (column {self.split_column!r}), add "
                "images, or leave the split empty so data.val_fraction draws it."
            )
        return train, val

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        """Split by the table (and the seeded draw), then decode-check only the files the run uses; a
        missing or unreadable file is named with its row, then `data.skip_bad_images` decides."""
        labelled = [r for r in self.rows if r.split != "test"]
        line_of = {r.path: r.line for r in self.rows}

        def draw(bad: set[str]) -> Split:
            train, val = self._split([r for r in labelled if r.path not in bad])
            return [r.path for r in train], self._labels(train), [r.path for r in val], self._labels(val)

        (tr_paths, tr_labels, va_paths, va_labels), self.skipped = load_checked(
            draw, self.skip_bad_images, f"data.csv={self.csv}", lambda p: f"row {line_of[p]}: {p}"
        )
        log.info(
            "data.csv: %d train + %d val images of %d classes (%s), %d test rows kept out",
            len(tr_paths),
            len(va_paths),
            len(self.names),
            "multi-label" if self.multi_label else "single-label",
            len(self.rows) - len(labelled),
        )
        return FileImages(tr_paths, tr_labels), FileImages(va_paths, va_labels)

    def test_set(self) -> FileImages:
        """The rows marked test (never used for training, validation or folds)."""
        rows = [r for r in self.rows if r.split == "test"]
        return FileImages([r.path for r in rows], self._labels(rows))
