"""The bench's stand-in assets load the way the real downloads do."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from ftlab.benchmark.assets import write_cifar_archive, write_hub_weights
from ftlab.data.sources.cifar10 import Cifar10Source


def test_cifar_archive_holds_a_stratified_subset(tmp_path):
    write_cifar_archive(tmp_path, train_size=30, val_size=15)
    train, val = Cifar10Source(str(tmp_path), ["cat", "dog", "automobile"], 30, 15, download=False).load()
    assert len(train.labels) == 30 and len(val.labels) == 15
    assert sorted(set(torch.as_tensor(train.labels).tolist())) == [0, 1, 2]
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8


def test_cifar_archive_classes_look_alike_in_train_and_val(tmp_path):
    """Each class has one pattern across the training batches and the test batch: the nearest training class
    mean labels every val image (stand-in accuracy measures learning, not chance)."""
    write_cifar_archive(tmp_path, train_size=60, val_size=30)
    train, val = Cifar10Source(str(tmp_path), ["cat", "dog", "automobile"], 60, 30, download=False).load()
    x, y = train.images.flatten(1).float(), torch.as_tensor(train.labels)
    means = torch.stack([x[y == c].mean(0) for c in range(3)])
    nearest = torch.cdist(val.images.flatten(1).float(), means).argmin(1)
    assert torch.equal(nearest, torch.as_tensor(val.labels))


def test_hub_weights_sit_where_torchvision_looks(tmp_path, monkeypatch):
    path = write_hub_weights(tmp_path)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert path == tmp_path / "hub" / "checkpoints" / Path(url).name
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = torchvision.models.resnet18(weights="IMAGENET1K_V1")  # loads the file, no download
    saved = torch.load(path, weights_only=True)
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
