"""Stand-ins for the main job's downloads, in the real formats, written into a folder the bench owns:
a CIFAR-10 archive (python pickle layout) and a random ResNet-18 state dict under torchvision's file name."""

from __future__ import annotations

import io
import math
import pickle
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(rng: np.random.Generator, base: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """32x32 images: each label's colour pattern (`base`, one per class, the same in every batch) plus noise,
    so val accuracy measures learning, like a real subset."""
    noise = rng.integers(-60, 61, size=(len(labels), 3072)).astype(np.int16)
    return np.clip(base[labels] + noise, 0, 255).astype(np.uint8)


def write_cifar_archive(root: Path, train_size: int, val_size: int, classes: int = 3) -> Path:
    """`root/cifar-10-python.tar.gz` with enough images per class for a stratified subset of `classes`
    classes of `train_size` / `val_size` images (every class gets as many; seeded)."""
    rng = np.random.default_rng(0)
    per_train = math.ceil(train_size / classes) + 5
    per_test = math.ceil(val_size / classes) + 5
    base = rng.integers(0, 256, size=(10, 3072)).astype(np.int16)  # one pattern per class for all batches

    def batch(per_class: int, name: str) -> bytes:
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        entry = {
            "batch_label": name,
            "labels": labels.tolist(),
            "data": _images(rng, base, labels),
            "filenames": [f"img{i}.png" for i in range(len(labels))],
        }
        return pickle.dumps(entry)

    members = {f"data_batch_{i}": batch(math.ceil(per_train / 5), f"data_batch_{i}") for i in range(1, 6)}
    members["test_batch"] = batch(per_test, "test_batch")
    members["batches.meta"] = pickle.dumps(
        {"label_names": CIFAR10_CLASSES, "num_vis": 3072, "num_cases_per_batch": 10000}
    )
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive


def write_hub_weights(torch_home: Path, name: str = "resnet18", weights: str = "IMAGENET1K_V1") -> Path:
    """A randomly initialised state dict saved where torchvision's download of `weights` would put it."""
    import torch
    import torchvision

    enum = torchvision.models.get_model_weights(name)[weights]
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    path = torch_home / "hub" / "checkpoints" / Path(enum.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
