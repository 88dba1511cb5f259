"""Data sources and the DataModule: CIFAR subset extraction, image folders, device vs CPU preprocessing."""

from __future__ import annotations

import shutil
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ftlab.data import ImageDataModule
from ftlab.data.images import load_rgb
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.sources.cifar10 import CIFAR10_CLASSES, Cifar10Source
from ftlab.data.sources.imagefolder import ImageFolderSource
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.data.transforms import preprocess
from ftlab.errors import FtlabError
from tests.helpers.assets import write_fake_cifar

PREP = Preprocessing.from_weights(torchvision.models.ResNet18_Weights.IMAGENET1K_V1).at_size(48)


def _cifar_label(image: torch.Tensor) -> int:
    """The fake archive stores each image's CIFAR label in its first pixel value (label * 20)."""
    return int(image[0, 0, 0]) // 20


@pytest.mark.parametrize("extracted", [False, True])
def test_cifar_subset_from_archive(tmp_path, extracted):
    write_fake_cifar(tmp_path, per_class_train=12, per_class_test=6)
    if extracted:
        with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:
            tar.extractall(tmp_path, filter="data")
        (tmp_path / "cifar-10-python.tar.gz").unlink()
    shutil.rmtree(tmp_path / "build")
    classes = ["cat", "dog", "automobile"]
    source = Cifar10Source(
        root=str(tmp_path), classes=classes, train_size=30, val_size=9, seed=3, download=False
    )
    train, val = source.load()
    assert len(train) == 30 and len(val) == 9
    assert Counter(train.labels.tolist()) == {0: 10, 1: 10, 2: 10}  # stratified
    assert Counter(val.labels.tolist()) == {0: 3, 1: 3, 2: 3}
    for dataset in (train, val):
        for image, label in zip(dataset.images, dataset.labels, strict=True):
            assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
            assert CIFAR10_CLASSES[_cifar_label(image)] == classes[int(label)]  # label mapping is right
    again, _ = Cifar10Source(root=str(tmp_path), classes=classes, train_size=30, val_size=9, seed=3).load()
    assert torch.equal(again.images, train.images)  # seeded
    other, _ = Cifar10Source(root=str(tmp_path), classes=classes, train_size=30, val_size=9, seed=4).load()
    assert not torch.equal(other.images, train.images)


def test_cifar_missing_without_download_and_corrupt_archive(tmp_path):
    source = Cifar10Source(root=str(tmp_path), classes=["cat", "dog"], download=False)
    with pytest.raises(FtlabError, match="cifar-10-python.tar.gz"):
        source.load()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(FtlabError, match="not a readable CIFAR-10 archive"):
        source.load()


def _write_folder(root, counts, size=(40, 30)):
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )


def test_imagefolder_split_is_stratified_and_seeded(tmp_path):
    _write_folder(tmp_path / "imgs", {"ants": 10, "bees": 10})
    source = ImageFolderSource(root=str(tmp_path / "imgs"), val_fraction=0.3, seed=1)
    assert source.classes == ["ants", "bees"]
    train, val = source.load()
    assert Counter(val.labels) == {0: 3, 1: 3} and Counter(train.labels) == {0: 7, 1: 7}
    assert set(train.paths).isdisjoint(val.paths)
    assert (
        ImageFolderSource(root=str(tmp_path / "imgs"), val_fraction=0.3, seed=1).load()[1].paths == val.paths
    )


def test_imagefolder_val_root_and_errors(tmp_path):
    _write_folder(tmp_path / "train", {"a": 3, "b": 3})
    _write_folder(tmp_path / "val", {"a": 1, "b": 1})
    train, val = ImageFolderSource(root=str(tmp_path / "train"), val_root=str(tmp_path / "val")).load()
    assert len(train) == 6 and len(val) == 2
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(FtlabError, match="data.root"):
        ImageFolderSource(root=str(tmp_path / "train"))
    with pytest.raises(FtlabError, match="is not a folder"):
        ImageFolderSource(root=str(tmp_path / "missing"))
    _write_folder(tmp_path / "few", {"a": 5, "b": 1})
    with pytest.raises(FtlabError, match=r"b \(1\)"):
        ImageFolderSource(root=str(tmp_path / "few")).load()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "RGB"])
def test_image_modes_become_rgb(tmp_path, mode):
    rgb = Image.new("RGB", (8, 6), (200, 30, 60))
    image = rgb.convert(mode) if mode != "LA" else rgb.convert("L").convert("LA")
    image.save(tmp_path / "x.png")
    tensor = load_rgb(tmp_path / "x.png")
    assert tensor.shape == (3, 6, 8) and tensor.dtype == torch.uint8
    expected = np.asarray(image.convert("RGB"))
    assert np.abs(tensor.permute(1, 2, 0).numpy().astype(int) - expected.astype(int)).max() <= 1


def test_corrupt_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(FtlabError, match="bad.png"):
        load_rgb(tmp_path / "bad.png")


@pytest.mark.parametrize("source_kind", ["synthetic", "imagefolder"])
def test_device_and_cpu_preprocessing_agree(tmp_path, source_kind):
    """Resize+normalise after the transfer gives the same batch as doing it in the loader."""
    if source_kind == "synthetic":
        make = lambda: SyntheticSource(train_size=8, val_size=8, size=32)  # noqa: E731
    else:
        _write_folder(tmp_path / "imgs", {"a": 4, "b": 4}, size=(70, 60))
        make = lambda: ImageFolderSource(root=str(tmp_path / "imgs"), val_fraction=0.5)  # noqa: E731
    batches = {}
    for where in ("device", "cpu"):
        dm = ImageDataModule(make(), PREP, batch_size=4, augment="none", preprocess_on=where)
        dm.setup("fit")
        images, labels = next(iter(dm.val_dataloader()))
        if where == "device":
            assert images.dtype == torch.uint8  # uint8 travels
        batches[where] = dm.on_after_batch_transfer((images, labels), 0)[0]
    assert batches["device"].shape == (4, 3, 48, 48)
    torch.testing.assert_close(batches["device"], batches["cpu"], atol=2e-2, rtol=0)


def test_device_batch_equals_per_image_reference():
    """The batched device transform equals preprocessing each image on its own."""
    source = SyntheticSource(train_size=8, val_size=6, size=32)
    dm = ImageDataModule(source, PREP, batch_size=6, augment="none")
    dm.setup("fit")
    images, labels = next(iter(dm.val_dataloader()))
    batch = dm.device_transform(images)
    reference = torch.stack([preprocess(img, PREP) for img in dm.val_set.images])
    torch.testing.assert_close(batch, reference)
    # Undoing the normalisation recovers the resized pixels in [0, 1]: mean/std are the weights' own.
    mean, std = torch.tensor(PREP.mean).view(3, 1, 1), torch.tensor(PREP.std).view(3, 1, 1)
    assert (batch * std + mean).min() >= -1e-3 and (batch * std + mean).max() <= 1 + 1e-3


def test_synthetic_is_learnable_by_a_linear_model():
    """Class means differ: a nearest-centroid classifier on pixels beats chance by far."""
    train, val = SyntheticSource(num_classes=3, train_size=60, val_size=30).load()
    x_train, x_val = train.images.flatten(1).float(), val.images.flatten(1).float()
    centroids = torch.stack([x_train[train.labels == c].mean(0) for c in range(3)])
    predicted = torch.cdist(x_val, centroids).argmin(1)
    assert (predicted == val.labels).float().mean() > 0.8
