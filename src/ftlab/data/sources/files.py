"""What the file sources (`imagefolder`, `csv`) share: the decode check of the files a run uses, the
bad-image policy (`data.skip_bad_images`), the seeded stratified train/val split, class counts in messages."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from rich.console import Console

from ftlab.data.images import image_problem
from ftlab.errors import FtlabError

log = logging.getLogger(__name__)

# train paths, train labels, val paths, val labels (labels: a list of ints, or a multi-hot tensor)
Split = tuple[list[str], Any, list[str], Any]


def class_counts_text(classes: Sequence[str], counts: Sequence[int] | np.ndarray) -> str:
    """'cat=12, dog=3': images per class, for error messages."""
    return ", ".join(f"{c}={int(n)}" for c, n in zip(classes, counts, strict=True))


def label_counts(labels: Any, num_classes: int) -> np.ndarray:
    """Images per class of int labels (N,) or multi-hot labels (N, C): a multi-label image counts once for
    every class it carries."""
    array = np.asarray(labels)
    if array.ndim == 2:
        return (array > 0).sum(axis=0).astype(np.int64)
    return np.bincount(array.astype(np.int64).reshape(-1), minlength=num_classes)


def check_images(paths: list[str]) -> list[tuple[str, str]]:
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


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int, classes: Sequence[str], where: str, remedy: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and val indices of a seeded split stratified by class (`val_fraction` held out).

    `where` names the data (e.g. `data.root=photos`) and `remedy` the extra way out (e.g. "set
    data.val_root") in the messages."""
    if not 0 < val_fraction < 1:
        raise FtlabError(f"data.val_fraction={val_fraction} must be between 0 and 1.")
    counts = label_counts(labels, len(classes))
    if counts.min() < 2:
        small = [f"{c} ({n})" for c, n in zip(classes, counts, strict=True) if n < 2]
        raise FtlabError(
            f"{where}: classes {', '.join(small)} have too few images to split into train and val (2 "
            f"needed); add images or {remedy}."
        )
    from sklearn.model_selection import train_test_split

    try:
        tr, va = train_test_split(
            np.arange(len(labels)), test_size=val_fraction, stratify=list(labels), random_state=seed
        )
    except ValueError as err:
        raise FtlabError(
            f"data.val_fraction={val_fraction} cannot split {len(labels)} images of {len(classes)} classes "
            f"({class_counts_text(classes, counts)}): {err} Every class needs at least one image on each "
            f"side: add images, change data.val_fraction, or {remedy}."
        ) from err
    return np.sort(tr), np.sort(va)


def load_checked(
    draw: Callable[[set[str]], Split], skip_bad: bool, where: str, name: Callable[[str], str] = str
) -> tuple[Split, list[tuple[str, str]]]:
    """The split `draw(bad)` makes of the readable files, and the (path, reason) of the files left out.

    Only the files a split uses are decode-checked. A file that does not decode stops the run (naming it
    with `name(path)`) unless `skip_bad` (`data.skip_bad_images`): then the split is drawn again without
    the bad files, checking only newly drawn ones, and the skipped files are listed in the log.
    """
    checked: set[str] = set()
    bad: dict[str, str] = {}
    while True:
        split = draw(set(bad))
        used = split[0] + split[2]
        new = check_images([p for p in used if p not in checked])
        checked.update(used)
        if new and not skip_bad:
            shown = "\n".join(f"- {name(path)}: {why}" for path, why in new[:10])
            more = f"\n- ... and {len(new) - 10} more" if len(new) > 10 else ""
            raise FtlabError(
                f"{len(new)} of {len(used)} images under {where} cannot be read:\n{shown}{more}\nRemove or "
                "replace them, or set data.skip_bad_images=true to train without them (they are then listed "
                "in the log)."
            )
        if not new:
            break
        bad.update(new)
    skipped = sorted(bad.items())
    if skipped:
        listing = "\n".join(f"  {name(path)}: {why}" for path, why in skipped)
        log.warning("Skipped %d unreadable images (data.skip_bad_images=true):\n%s", len(skipped), listing)
    return split, skipped
