"""Fashion-MNIST: Debian's packaged files when installed (no network needed), else torchvision's download.

Debian's `dataset-fashion-mnist` ships the four gzipped IDX files in `/usr/share/datasets/fashion-mnist/`.
torchvision's `FashionMNIST(download=False)` reads them only decompressed, from `<root>/FashionMNIST/raw/`
(and their .gz MD5s differ from the ones torchvision records, so `download=True` would go to the network):
the source decompresses them there once.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ftlab.data.datasets import LabeledImages, TensorImages
from ftlab.data.sampling import stratified_subset
from ftlab.data.sources.base import Asset
from ftlab.errors import FtlabError, did_you_mean

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"
# Label order of the data set; names that survive a Hydra command line (torchvision's "T-shirt/top" and
# "Ankle boot" are accepted too, as is any spelling that differs only in case and punctuation).
FASHION_MNIST_CLASSES = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]


def _spelling(name: str) -> str:
    """Lower case without punctuation: 'T-shirt/top', 'tshirt_top' and 'TShirtTop' are one name."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_LABEL_BY_SPELLING = {_spelling(name): label for label, name in enumerate(FASHION_MNIST_CLASSES)} | {
    "tshirt": 0,
    "top": 0,
}


def class_label(name: str) -> int:
    """Fashion-MNIST's label of a class name, in any of its accepted spellings."""
    label = _LABEL_BY_SPELLING.get(_spelling(str(name)))
    if label is None:
        raise FtlabError(
            f"data.classes: {name!r} is not a Fashion-MNIST class."
            f"{did_you_mean(str(name), FASHION_MNIST_CLASSES)} The classes are: "
            f"{', '.join(FASHION_MNIST_CLASSES)}."
        )
    return label


@dataclass
class FashionMnistSource:
    """A subset of Fashion-MNIST's classes; train from its 60,000 training images, val from the 10,000 test.

    Images are 28x28 grayscale, replicated to 3 channels (uint8 (N, 3, 28, 28)); the DataModule resizes
    them to the model's size.
    """

    root: str  # the packaged files are decompressed into <root>/FashionMNIST/raw/
    classes: list[str] = field(default_factory=lambda: list(FASHION_MNIST_CLASSES))  # subset, in label order
    train_size: int | None = 1000  # stratified, seeded sample of the 60,000 training images (null = all)
    val_size: int | None = 600  # stratified, seeded sample of the 10,000 test images (null = all)
    download: bool = True  # without the Debian files, download with torchvision when the network allows
    system_dir: str = DEBIAN_DIR  # where the Debian package puts its .gz files
    seed: int = 0
    fixed_size: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        labels = [class_label(name) for name in self.classes]
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise FtlabError(
                f"data.classes={self.classes}: give at least two distinct Fashion-MNIST classes."
            )
        self.labels = labels
        self.classes = [FASHION_MNIST_CLASSES[label] for label in labels]

    @property
    def raw_dir(self) -> Path:
        """Where torchvision's FashionMNIST reads the decompressed IDX files."""
        return Path(self.root).expanduser() / "FashionMNIST" / "raw"

    def packaged(self) -> bool:
        """The Debian package's .gz files are installed."""
        return all((Path(self.system_dir) / f"{name}.gz").is_file() for name in RAW_FILES)

    def extracted(self) -> bool:
        """The decompressed IDX files are in `raw_dir`."""
        return all((self.raw_dir / name).is_file() for name in RAW_FILES)

    def assets(self) -> list[Asset]:
        present = self.extracted() or self.packaged()
        description = (
            f"Fashion-MNIST (`apt-get install {DEBIAN_PACKAGE}` puts it in {self.system_dir}; "
            "or its four IDX files decompressed)"
        )
        return [Asset(description, self.raw_dir, DOWNLOAD_URL, present, self.fetch)]

    def fetch(self) -> None:
        """Decompress the Debian package's files into `raw_dir`, or download them with torchvision."""
        if self.packaged():
            self._decompress()
            return
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(Path(self.root).expanduser()), train=True, download=True)

    def _decompress(self) -> None:
        """gunzip each packaged file into `raw_dir` (via a temporary name: a crash leaves no half file)."""
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        for name in RAW_FILES:
            target = self.raw_dir / name
            if target.is_file():
                continue
            source = Path(self.system_dir) / f"{name}.gz"
            partial = target.with_name(f"{name}.partial")
            try:
                with gzip.open(source, "rb") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError, zlib.error) as err:
                partial.unlink(missing_ok=True)
                raise FtlabError(
                    f"{source} is not a readable gzip file ({err}). Reinstall it: "
                    f"`apt-get install --reinstall {DEBIAN_PACKAGE}`."
                ) from err
            os.replace(partial, target)

    def _ensure_present(self) -> None:
        if self.extracted():
            return
        if not self.packaged() and not self.download:
            raise FtlabError(
                f"Fashion-MNIST not found: neither {self.raw_dir}/{{{','.join(RAW_FILES)}}} nor the Debian "
                f"package's files in {self.system_dir}. Run `apt-get install {DEBIAN_PACKAGE}` or set "
                "data.download=true."
            )
        self.fetch()

    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (uint8 (N, 28, 28)) and labels of one split, read by torchvision."""
        from torchvision.datasets import FashionMNIST

        try:
            dataset = FashionMNIST(str(Path(self.root).expanduser()), train=train, download=False)
        except (RuntimeError, OSError, AssertionError) as err:
            raise FtlabError(
                f"Cannot read Fashion-MNIST from {self.raw_dir} ({err}). Delete that folder and run again."
            ) from err
        return dataset.data, dataset.targets

    def _select(
        self, images: torch.Tensor, targets: torch.Tensor, size: int | None, what: str
    ) -> TensorImages:
        """The chosen classes, relabelled in `classes` order, a stratified seeded sample, as 3 channels."""
        original = targets.numpy()
        keep = np.flatnonzero(np.isin(original, self.labels))
        ours = np.full(10, -1, dtype=np.int64)
        ours[self.labels] = np.arange(len(self.labels))
        labels = ours[original[keep]]
        chosen = keep[stratified_subset(labels, size, self.seed, what)]
        gray = images[torch.from_numpy(chosen)]
        return TensorImages(gray[:, None].repeat(1, 3, 1, 1), torch.from_numpy(ours[original[chosen]]))

    def load(self) -> tuple[LabeledImages, LabeledImages]:
        self._ensure_present()
        train = self._select(*self._read(train=True), self.train_size, "data.train_size")
        val = self._select(*self._read(train=False), self.val_size, "data.val_size")
        return train, val
