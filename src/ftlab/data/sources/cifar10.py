"""CIFAR-10 (the python pickle archive): a subset of its classes, stratified and seeded."""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftlab.data.datasets import LabeledImages, TensorImages
from ftlab.data.sampling import stratified_subset
from ftlab.data.sources.base import Asset
from ftlab.errors import FtlabError, did_you_mean

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Cifar10Source:
    """A subset of CIFAR-10's classes; train from the training batches, val from the test batch."""

    root: str  # folder holding cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/)
    classes: list[str] = field(default_factory=lambda: list(CIFAR10_CLASSES))  # subset, in label order
    train_size: int | None = 1000  # stratified, seeded sample of the training batches (null = all)
    val_size: int | None = 600  # stratified, seeded sample of the test batch (null = all)
    download: bool = True  # fetch the archive when missing and the network allows
    seed: int = 0
    fixed_size: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        for name in self.classes:
            if name not in CIFAR10_CLASSES:
                raise FtlabError(
                    f"data.classes: {name!r} is not a CIFAR-10 class.{did_you_mean(name, CIFAR10_CLASSES)}"
                    f" The classes are: {', '.join(CIFAR10_CLASSES)}."
                )
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise FtlabError(f"data.classes={self.classes}: give at least two distinct CIFAR-10 classes.")

    @property
    def archive(self) -> Path:
        return Path(self.root) / "cifar-10-python.tar.gz"

    @property
    def extracted(self) -> Path:
        return Path(self.root) / "cifar-10-batches-py"

    def assets(self) -> list[Asset]:
        present = self.archive.is_file() or self.extracted.is_dir()
        return [Asset("CIFAR-10 archive", self.archive, CIFAR10_URL, present, self.fetch)]

    def fetch(self) -> None:
        """Download the archive (checking its MD5) into `root`."""
        from torchvision.datasets.utils import download_url

        download_url(CIFAR10_URL, str(self.root), self.archive.name, CIFAR10_MD5)

    def _read_batches(self) -> dict[str, dict[str, Any]]:
        """Unpickle the CIFAR batch files from the extracted folder or straight from the archive."""
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        batches: dict[str, dict[str, Any]] = {}
        if self.extracted.is_dir():
            for name in names:
                with open(self.extracted / name, "rb") as f:
                    batches[name] = pickle.load(f, encoding="latin1")
            return batches
        try:
            with tarfile.open(self.archive, "r:gz") as tar:
                for member in tar.getmembers():
                    name = Path(member.name).name
                    if name in names and member.isfile():
                        handle = tar.extractfile(member)
                        assert handle is not None
                        batches[name] = pickle.load(handle, encoding="latin1")
        except (OSError, tarfile.TarError, EOFError, pickle.UnpicklingError) as err:
            raise FtlabError(
                f"{self.archive} is not a readable CIFAR-10 archive ({err}). Delete it and run "
                "`python -m ftlab.prepare` to download it again."
            ) from err
        missing = sorted(set(names) - set(batches))
        if missing:
            raise FtlabError(
                f"{self.archive} lacks the CIFAR-10 batches {missing}. Delete it and download again."
            )
        return batches

    def _select(self, batches: list[dict[str, Any]], size: int | None, what: str) -> TensorImages:
        data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        cifar_labels = np.concatenate([np.asarray(b["labels"]) for b in batches])
        wanted = [CIFAR10_CLASSES.index(c) for c in self.classes]
        keep = np.isin(cifar_labels, wanted)
        remap = {cifar: ours for ours, cifar in enumerate(wanted)}
        labels = np.array([remap[int(c)] for c in cifar_labels[keep]], dtype=np.int64)
        chosen = stratified_subset(labels, size, self.seed, what)
        return TensorImages(torch.from_numpy(data[keep][chosen].copy()), torch.from_numpy(labels[chosen]))

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        if not self.assets()[0].present:
            if not self.download:
                raise FtlabError(
                    f"CIFAR-10 not found at {self.archive}. Put cifar-10-python.tar.gz there or "
                    "set data.download=true."
                )
            self.fetch()
        batches = self._read_batches()
        train = self._select(
            [batches[f"data_batch_{i}"] for i in range(1, 6)], self.train_size, "data.train_size"
        )
        val = self._select([batches["test_batch"]], self.val_size, "data.val_size")
        return train, val
