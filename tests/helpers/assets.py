"""Stand-ins for downloads, in the real formats: a CIFAR-10 archive and torch hub weights."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np


def write_fake_cifar(root: Path, per_class_train: int = 12, per_class_test: int = 6) -> Path:
    """A CIFAR-10 archive in the real pickle layout; pixel (0,0,0) holds the CIFAR label, for checking."""
    rng = np.random.default_rng(0)
    folder = root / "build" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(per_class: int, name: str) -> None:
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        data[:, 0] = labels * 20
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "batch_label": name,
                    "labels": labels.tolist(),
                    "data": data,
                    "filenames": [f"img{i}.png" for i in range(len(labels))],
                },
                f,
            )

    for i in range(1, 6):
        batch(per_class_train // 5 + (1 if i <= per_class_train % 5 else 0), f"data_batch_{i}")
    batch(per_class_test, "test_batch")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                "label_names": [
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                ],
                "num_vis": 3072,
                "num_cases_per_batch": 10000,
            },
            f,
        )
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


def write_fake_hub_weights(torch_home: Path, name: str = "resnet18", weights: str = "IMAGENET1K_V1") -> Path:
    """A randomly initialised state dict saved under the file name torchvision's download would use."""
    import torch
    import torchvision

    enum = torchvision.models.get_model_weights(name)[weights]
    model = torchvision.models.get_model(name, weights=None)
    path = torch_home / "hub" / "checkpoints" / Path(enum.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
