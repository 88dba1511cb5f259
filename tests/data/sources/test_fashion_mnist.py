"""Fashion-MNIST source: Debian's packaged files, class subsets, stratified seeded samples, 3 channels."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ftlab.data import ImageDataModule
from ftlab.data.sources.fashion_mnist import DEBIAN_DIR, FASHION_MNIST_CLASSES, RAW_FILES, FashionMnistSource
from ftlab.errors import FtlabError
from ftlab.models import preflight
from ftlab.models.backbones import default_preprocessing

PACKAGED = all((Path(DEBIAN_DIR) / f"{name}.gz").is_file() for name in RAW_FILES)
needs_package = pytest.mark.skipif(
    not PACKAGED,
    reason=f"Debian package dataset-fashion-mnist is not installed ({DEBIAN_DIR} missing); "
    "`apt-get install dataset-fashion-mnist` (or `make install` as root) installs it",
)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as an array, parsed from its header here rather than by torchvision."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in gzipped IDX format (magic 0x08 = unsigned byte, then the number of dims)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()))


def write_fake_package(folder: Path, per_class_train: int = 12, per_class_test: int = 6) -> Path:
    """The four .gz files in the package's layout; pixel (0, 0) holds label * 20, pixel (0, 1) the index."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels * 20
        images[:, 0, 1] = np.arange(len(labels)) % 256
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def _source(root: Path, system_dir: Path | str, **kwargs) -> FashionMnistSource:
    return FashionMnistSource(root=str(root), system_dir=str(system_dir), **kwargs)


def test_subset_is_stratified_seeded_relabelled_and_three_channel(tmp_path):
    package = write_fake_package(tmp_path / "package")
    classes = ["coat", "tshirt_top", "ankle_boot"]
    train, val = _source(
        tmp_path / "data", package, classes=classes, train_size=30, val_size=9, seed=3
    ).load()
    assert train.images.shape == (30, 3, 28, 28) and val.images.shape == (9, 3, 28, 28)
    assert train.images.dtype == torch.uint8
    assert Counter(train.labels.tolist()) == {0: 10, 1: 10, 2: 10}
    assert Counter(val.labels.tolist()) == {0: 3, 1: 3, 2: 3}
    for dataset in (train, val):
        assert torch.equal(dataset.images[:, 0], dataset.images[:, 1])  # grayscale replicated
        assert torch.equal(dataset.images[:, 0], dataset.images[:, 2])
        for image, label in zip(dataset.images, dataset.labels, strict=True):
            assert FASHION_MNIST_CLASSES[int(image[0, 0, 0]) // 20] == classes[int(label)]
    again, _ = _source(tmp_path / "data", package, classes=classes, train_size=30, val_size=9, seed=3).load()
    assert torch.equal(again.images, train.images)
    other, _ = _source(tmp_path / "data", package, classes=classes, train_size=30, val_size=9, seed=4).load()
    assert not torch.equal(other.images, train.images)


def test_packaged_files_are_decompressed_where_torchvision_reads_them(tmp_path):
    package = write_fake_package(tmp_path / "package")
    source = _source(tmp_path / "data", package, classes=["bag", "dress"], train_size=None, val_size=None)
    assert source.assets()[0].present  # the package counts as present: no network needed
    train, val = source.load()
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    for name in RAW_FILES:
        assert np.array_equal(read_idx(raw / name), read_idx(package / f"{name}.gz"))
    assert len(train) == 24 and len(val) == 12  # all images of the two classes


def test_class_names_in_any_spelling_and_clear_errors(tmp_path):
    source = _source(tmp_path, tmp_path, classes=["T-shirt/top", "Ankle boot", "PULLOVER"])
    assert source.classes == ["tshirt_top", "ankle_boot", "pullover"]
    with pytest.raises(FtlabError, match=r"'sneakers'.*sneaker"):
        _source(tmp_path, tmp_path, classes=["sneakers", "bag"])
    with pytest.raises(FtlabError, match="two distinct"):
        _source(tmp_path, tmp_path, classes=["shirt", "Shirt"])


def test_missing_everywhere_says_which_package(tmp_path, monkeypatch):
    source = _source(tmp_path / "data", tmp_path / "no_package", classes=["bag", "coat"], download=False)
    assert not source.assets()[0].present
    with pytest.raises(FtlabError, match="apt-get install dataset-fashion-mnist"):
        source.load()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    with pytest.raises(FtlabError) as err:
        preflight.check(source, "efficientnet_lite0", None)
    message = str(err.value)
    assert "dataset-fashion-mnist" in message and str(tmp_path / "data" / "FashionMNIST" / "raw") in message


def test_corrupt_package_file_is_named(tmp_path):
    package = write_fake_package(tmp_path / "package")
    (package / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(FtlabError, match="t10k-labels-idx1-ubyte.gz"):
        _source(tmp_path / "data", package, classes=["bag", "coat"]).load()
    assert not list((tmp_path / "data" / "FashionMNIST" / "raw").glob("*.partial"))


def test_batches_reach_the_model_at_its_size_with_equal_channels(tmp_path):
    package = write_fake_package(tmp_path / "package")
    source = _source(tmp_path / "data", package, classes=["bag", "coat"], train_size=8, val_size=4)
    prep = default_preprocessing("efficientnet_lite0").at_size(40)
    datamodule = ImageDataModule(source, prep, batch_size=4, augment="none")
    datamodule.setup("fit")
    images, labels = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert images.shape == (4, 3, 40, 40) and images.dtype == torch.float32
    assert torch.allclose(images[:, 0], images[:, 1]) and torch.allclose(images[:, 0], images[:, 2])


@needs_package
def test_real_debian_files(tmp_path):
    """The packaged data set: the sample's images are real Fashion-MNIST images of the named classes."""
    classes = ["shirt", "tshirt_top", "pullover", "coat"]
    source = FashionMnistSource(root=str(tmp_path), classes=classes, train_size=200, val_size=80, seed=1)
    train, val = source.load()
    assert Counter(train.labels.tolist()) == dict.fromkeys(range(4), 50)
    assert Counter(val.labels.tolist()) == dict.fromkeys(range(4), 20)
    for dataset, split in ((train, "train"), (val, "t10k")):
        images = read_idx(Path(DEBIAN_DIR) / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(Path(DEBIAN_DIR) / f"{split}-labels-idx1-ubyte.gz")
        assert images.shape[1:] == (28, 28) and len(images) == len(labels) == (
            60000 if split == "train" else 10000
        )
        labels_of: dict[bytes, set[int]] = {}
        for image, label in zip(images, labels, strict=True):
            labels_of.setdefault(image.tobytes(), set()).add(int(label))
        for image, label in zip(dataset.images, dataset.labels, strict=True):
            assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
            original = labels_of[image[0].numpy().tobytes()]  # KeyError: not an image of the data set
            assert FASHION_MNIST_CLASSES.index(classes[int(label)]) in original
    again, _ = FashionMnistSource(
        root=str(tmp_path), classes=classes, train_size=200, val_size=80, seed=1
    ).load()
    assert torch.equal(again.images, train.images)
