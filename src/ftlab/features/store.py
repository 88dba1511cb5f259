"""Keys and storage of the feature cache: what a cache is (`CachedFeatures`, `Built`), the content key that
names its file, and where it lives (memory, or a memory-mapped file under the cache folder).

A cache of stages[:boundary] is shareable on disk only while those stages hold their initial weights; its
file name is a digest of everything its activations depend on (the stages' weights by content, the data,
preprocessing, views, dtype and the run's precision), so another run with the same inputs loads it.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ftlab.data.datamodule import ImageDataModule
from ftlab.features.planner import Segment
from ftlab.features.settings import CacheSettings
from ftlab.models.module import Classifier

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}  # features.dtype


class CachedFeatures(Dataset):
    """(features, label) pairs (a class index, or a multi-hot row when `labels` is 2-D); with two views per
    image, a fair coin picks the flipped one, as RandomHorizontalFlip would (same `torch.rand(1) < 0.5` draw
    per sample).

    A disk cache is a memory-mapped file: worker processes reopen the map instead of copying the tensor.
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        random_view: bool,
        path: Path | None = None,
        rows: torch.Tensor | None = None,
    ) -> None:
        self.features, self.labels, self.random_view, self.path = features, labels, random_view, path
        self.rows = rows  # positions of the split's images in `features` (k-fold: the pool); None = all

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, Any]:
        view = 0
        if self.random_view and self.features.shape[0] > 1:
            view = int(torch.rand(1).item() < 0.5)
        row = idx if self.rows is None else int(self.rows[idx])
        label = self.labels[idx]
        return self.features[view, row], (label if label.ndim else int(label))  # multi-hot rows stay rows

    def own_features(self) -> torch.Tensor:
        """(views, N, ...) features of this split's images only."""
        return self.features if self.rows is None else self.features[:, self.rows]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["features"] = None  # reopened as a map in the receiving process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.path is not None:
            self.features = open_map(self.path)


@dataclass
class Built:
    """A materialised cache: the segment it serves, its dataset and where it lives."""

    segment: Segment
    dataset: CachedFeatures
    where: str


@dataclass
class Refused:
    """A cache that neither memory nor disk can hold, and why (the feature cache logs it)."""

    why: str


def open_map(path: Path) -> torch.Tensor:
    """A cache file as a memory-mapped tensor on the CPU."""
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def stage_digests(stages: Iterable[torch.nn.Module]) -> list[str]:
    """A content digest per stage (parameters and buffers): what a cache of the stages depends on."""
    digests = []
    for stage in stages:
        digest = hashlib.sha1()
        for name, tensor in stage.state_dict().items():
            flat = tensor.detach().contiguous().reshape(-1).cpu()
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        digests.append(digest.hexdigest())
    return digests


class FeatureStore:
    """Where the caches of one run live: memory, or files under `root` named by `key`."""

    def __init__(
        self, config: CacheSettings, module: Classifier, datamodule: ImageDataModule, root: Path
    ) -> None:
        self.config, self.module, self.datamodule, self.root = config, module, datamodule, root
        self._stage_hashes: list[str] | None = None

    def stage_digests(self) -> list[str]:
        """`stage_digests` of the module's stages, computed once."""
        if self._stage_hashes is None:
            self._stage_hashes = stage_digests(self.module.stages.values())
        return self._stage_hashes

    def key(self, split: str, boundary: int, views: int, dtype: str, precision: str) -> str:
        """File name of a shareable cache: stages[:boundary]'s weights by content, data, preprocessing."""
        dm = self.datamodule
        digest = hashlib.sha1()
        for part in (
            self.module.hparams["backbone"],
            self.stage_digests()[:boundary],
            self.module.preprocessing.to_dict(),
            boundary,
            views,
            dtype,
            precision,  # autocast changes the activations
            dm.preprocess_on,
            len(dm.raw_labels(split)),
        ):
            digest.update(repr(part).encode())
        digest.update(dm.fingerprint(split).encode())
        return f"{self.module.hparams['backbone']}-{split}-stage{boundary}-{digest.hexdigest()[:16]}"

    def path(self, key: str) -> Path:
        """The file of the cache named `key`."""
        return self.root / (key + ".pt")

    def placement(self, total: int, shareable: bool) -> str | Refused:
        """memory or disk for a cache of `total` bytes, or why neither is possible."""
        budget = self.config.max_memory_gb * 2**30
        where = (
            self.config.cache if self.config.cache != "auto" else ("memory" if total <= budget else "disk")
        )
        if where == "disk" and not shareable:
            return Refused(
                f"needs {total / 2**20:.0f} MB, over features.max_memory_gb, and this prefix has trained"
            )
        if where == "disk":
            free = shutil.disk_usage(self.root if self.root.exists() else self.root.parent).free
            if total > 0.8 * free:
                return Refused(f"needs {total / 2**20:.0f} MB, more than the free disk")
        return where

    def write(self, path: Path, features: torch.Tensor) -> torch.Tensor:
        """Save `features` to `path` (a temporary file renamed into place) and reopen it as a map."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(features, tmp)
        tmp.replace(path)
        return open_map(path)
