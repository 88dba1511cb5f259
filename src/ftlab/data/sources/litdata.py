"""Streaming data: images stored as litdata chunks (`litdata.optimize`), read locally or from object storage.

`python -m ftlab.prepare +to_litdata=<dir> data=<source> ...` writes `<dir>/train/` and `<dir>/val/` (chunk
files + litdata's index.json, one item = the encoded image bytes and the label) and `<dir>/ftlab.json` (the
class names, every item's label and whether all images share one size). Training reads items through
`litdata.StreamingDataset`, which downloads and caches only the chunks a process touches; under DDP each
rank gets a disjoint share of the items from Lightning's distributed sampler.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ftlab.data.datasets import FileImages, LabeledImages, TensorImages, Transform
from ftlab.data.images import IMAGE_ERRORS, _rgb_array
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.sampling import stratified_subset
from ftlab.data.sources.base import Asset
from ftlab.errors import FtlabError, did_you_mean

META = "ftlab.json"
SPLITS = ("train", "val")


def _is_remote(root: str) -> bool:
    """An object-storage URL (s3://, gs://, ...), not a local folder."""
    return "://" in root


def decode(data: bytes | memoryview, where: str) -> torch.Tensor:
    """Encoded image bytes (PNG, JPEG, ...) as uint8 (3, H, W) RGB."""
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            array = _rgb_array(img)
    except IMAGE_ERRORS as err:
        raise FtlabError(f"Cannot decode the image {where}: {err}. Write the chunks again.") from err
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class LitdataImages(LabeledImages):
    """Items `indices` of a litdata chunk folder, relabelled; the StreamingDataset opens in each process."""

    def __init__(
        self,
        input_dir: str,
        indices: np.ndarray,
        labels: np.ndarray,
        cache_dir: str | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.input_dir, self.cache_dir = input_dir, cache_dir
        self.indices, self.labels, self.transform = indices, labels, transform
        self._stream: Any = None
        self._digest: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stream"] = None  # DataLoader workers open their own stream
        return state

    @property
    def stream(self) -> Any:
        if self._stream is None:
            from litdata import StreamingDataset

            self._stream = StreamingDataset(self.input_dir, cache_dir=self.cache_dir)
        return self._stream

    def image(self, idx: int) -> torch.Tensor:
        """The uint8 (3, H, W) image of item `idx` of this split (before any transform)."""
        stream_index = int(self.indices[idx])
        item = self.stream[stream_index]
        return decode(item["image"], f"item {stream_index} of {self.input_dir}")

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        image = self.image(idx)
        return (self.transform(image) if self.transform else image), int(self.labels[idx])

    def content_digest(self) -> str:
        """sha1 of the chunks' content (index.json, every chunk file), the items chosen, their labels."""
        if self._digest is None:
            digest = hashlib.sha1(self.indices.astype(np.int64).tobytes())
            digest.update(self.labels.astype(np.int64).tobytes())
            if _is_remote(self.input_dir):  # chunk names and sizes stand for their content (no download)
                digest.update(self.input_dir.encode())
                digest.update(json.dumps(self.stream.config, sort_keys=True, default=str).encode())
            else:
                folder = Path(self.input_dir)
                index = (folder / "index.json").read_bytes()
                digest.update(index)
                for chunk in json.loads(index)["chunks"]:
                    with open(folder / chunk["filename"], "rb") as f:
                        digest.update(hashlib.file_digest(f, "sha1").digest())
            self._digest = digest.hexdigest()
        return self._digest

    def batches(self, preprocessing: Preprocessing) -> ChunkBatches:
        """uint8 batches cut to the crop size (`batches[a:b]`), for the feature cache."""
        return ChunkBatches(self, preprocessing)


class ChunkBatches:
    """uint8 batches of a LitdataImages split cut to the crop size on the CPU (`batches[a:b]`)."""

    def __init__(self, images: LitdataImages, preprocessing: Preprocessing) -> None:
        self.images, self.preprocessing = images, preprocessing

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, window: slice) -> torch.Tensor:
        from ftlab.data.transforms import resize_and_crop

        rows = range(len(self.images))[window]
        return torch.stack([resize_and_crop(self.images.image(i), self.preprocessing) for i in rows])


def _encode(item: tuple[Any, int]) -> dict[str, Any]:
    """One litdata item: a file's bytes as they are, or a uint8 (3, H, W) array as PNG; and the label."""
    image, label = item
    if isinstance(image, str):
        data = Path(image).read_bytes()
    else:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(np.moveaxis(image, 0, -1))).save(buf, "PNG")
        data = buf.getvalue()
    return {"image": data, "label": int(label)}


def _items(images: LabeledImages) -> tuple[list[tuple[Any, int]], bool]:
    """(image file or array, label) of every image of a split, and whether they all share one size."""
    if getattr(images.labels, "ndim", 1) == 2:
        raise FtlabError(
            "+to_litdata: this data set is multi-label (several labels per image), and litdata chunks hold "
            "one class per image. Train on the CSV directly (data=csv data.csv=...), or give a `label` "
            "column with one class per image to write chunks."
        )
    labels = [int(label) for label in images.labels]
    if isinstance(images, FileImages):
        return list(zip(images.paths, labels, strict=True)), False
    if isinstance(images, TensorImages):
        return [(image.numpy(), label) for image, label in zip(images.images, labels, strict=True)], True
    raise FtlabError(f"+to_litdata: cannot write images of type {type(images).__name__} as chunks.")


def _write_split(items: list[tuple[Any, int]], folder: str, workers: int, chunk_bytes: str) -> None:
    """One split's chunks: `litdata.optimize` (worker processes, object storage), or for one worker
    writing a local folder, litdata's BinaryWriter in this process (the same format, without the
    processes' start-up)."""
    if workers > 1 or _is_remote(folder):
        from litdata import optimize

        optimize(
            fn=_encode,
            inputs=items,
            output_dir=folder,
            chunk_bytes=chunk_bytes,
            num_workers=workers,
            keep_data_ordered=True,  # item i of the chunks is item i of the labels in ftlab.json
            mode="overwrite",
            verbose=False,
        )
        return
    import shutil

    from litdata.streaming.writer import BinaryWriter

    shutil.rmtree(folder, ignore_errors=True)
    Path(folder).mkdir(parents=True)
    writer = BinaryWriter(folder, chunk_bytes=chunk_bytes)
    for index, item in enumerate(items):
        writer[index] = _encode(item)
    writer.done()
    writer.merge()


def write_chunks(
    train: LabeledImages,
    val: LabeledImages,
    classes: Sequence[str],
    out_dir: str,
    workers: int = 1,
    chunk_bytes: str = "64MB",
) -> None:
    """Write a train/val split as litdata chunks (`litdata.optimize`, item order kept) and ftlab.json."""
    if not out_dir or str(out_dir) in ("None", "???"):
        raise FtlabError("+to_litdata=<folder>: give the folder (or s3://bucket/prefix) to write chunks to.")
    meta: dict[str, Any] = {"classes": list(classes), "labels": {}}
    fixed = True
    for split, images in zip(SPLITS, (train, val), strict=True):
        items, same_size = _items(images)
        fixed = fixed and same_size
        meta["labels"][split] = [label for _, label in items]
        _write_split(items, f"{out_dir}/{split}", workers, chunk_bytes)
    meta["fixed_size"] = fixed
    text = json.dumps(meta)
    if not _is_remote(out_dir):
        Path(out_dir, META).write_text(text)
        return
    if not out_dir.startswith("s3://"):
        raise FtlabError(f"+to_litdata={out_dir}: only local folders and s3:// URLs are supported.")
    import boto3  # litdata's own dependency for S3

    bucket, _, prefix = out_dir.removeprefix("s3://").partition("/")
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/{META}".lstrip("/"), Body=text.encode())


@dataclass
class LitdataSource:
    """Images from litdata chunks written by `python -m ftlab.prepare +to_litdata=<root>` (local or s3://).

    `classes` picks a subset (in label order), `train_size`/`val_size` stratified seeded samples; only the
    chunks holding the chosen items are ever read.
    """

    root: str  # chunk folder (train/, val/, ftlab.json) or its object-storage URL, e.g. s3://bucket/set
    classes: list[str] | None = None  # subset of the stored classes, in label order (null = all)
    train_size: int | None = None  # optional stratified, seeded sample of the stored training items
    val_size: int | None = None  # optional stratified, seeded sample of the stored validation items
    cache_dir: str | None = None  # where chunks from object storage are cached (null = litdata's default)
    seed: int = 0
    fixed_size: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.root = str(self.root).rstrip("/")
        meta = self._meta()
        stored = list(meta["classes"])
        wanted = stored if self.classes is None else list(self.classes)
        for name in wanted:
            if name not in stored:
                raise FtlabError(
                    f"data.classes: {name!r} is not a class of the chunks at data.root={self.root}."
                    f"{did_you_mean(name, stored)} Their classes are: {', '.join(stored)}."
                )
        if len(set(wanted)) != len(wanted) or len(wanted) < 2:
            raise FtlabError(f"data.classes={wanted}: give at least two distinct classes.")
        self.classes, self._stored, self._meta_labels = wanted, stored, meta["labels"]
        self.fixed_size = bool(meta.get("fixed_size", False))

    def _meta(self) -> dict[str, Any]:
        """ftlab.json of the chunk folder (downloaded to `cache_dir` when the root is remote)."""
        if _is_remote(self.root):
            from litdata.streaming.downloader import get_downloader

            cache = Path(self.cache_dir or tempfile.mkdtemp(prefix="ftlab-litdata-"))
            cache.mkdir(parents=True, exist_ok=True)
            local = cache / META
            try:
                get_downloader(self.root, str(cache), []).download_file(f"{self.root}/{META}", str(local))
            except Exception as err:  # the object-store clients raise their own error types
                raise FtlabError(
                    f"data.root={self.root}: cannot download {META} ({err}). Check the URL and credentials."
                ) from err
        else:
            local = Path(self.root) / META
            if not local.is_file():
                raise FtlabError(
                    f"data.root={self.root!r} holds no {META}: it is not a chunk folder written by "
                    "`python -m ftlab.prepare +to_litdata=<folder> data=<source> ...`; write it that way."
                )
        try:
            meta = json.loads(Path(local).read_text())
            meta["classes"], meta["labels"]["train"], meta["labels"]["val"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FtlabError(
                f"{local} is not a valid {META} ({err}). Write the chunks again with ftlab.prepare."
            ) from err
        return dict(meta)

    def assets(self) -> list[Asset]:
        present = _is_remote(self.root) or (Path(self.root) / META).is_file()
        return [Asset("litdata chunks", Path(self.root), None, present)]

    def _split(self, split: str, size: int | None, what: str) -> LitdataImages:
        stored = np.asarray(self._meta_labels[split], dtype=np.int64)
        ours = np.full(len(self._stored), -1, dtype=np.int64)
        assert self.classes is not None
        ours[[self._stored.index(c) for c in self.classes]] = np.arange(len(self.classes))
        keep = np.flatnonzero(ours[stored] >= 0)
        labels = ours[stored[keep]]
        chosen = stratified_subset(labels, size, self.seed, what)
        input_dir = f"{self.root}/{split}"
        if not _is_remote(self.root) and not os.path.isfile(f"{self.root}/{split}/index.json"):
            raise FtlabError(f"data.root={self.root}: {split}/index.json is missing. Write the chunks again.")
        cache = None if self.cache_dir is None else f"{self.cache_dir}/{split}"
        return LitdataImages(input_dir, keep[chosen], labels[chosen], cache_dir=cache)

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        return (
            self._split("train", self.train_size, "data.train_size"),
            self._split("val", self.val_size, "data.val_size"),
        )
