"""`data.exclude=<file>`: every source, composed as `ftlab.train` composes it, drops the listed images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftlab.data import build_datamodule, build_source
from ftlab.data.exclude import image_ids
from ftlab.errors import FtlabError
from ftlab.models.backbones import default_preprocessing
from ftlab.training.settings import load_settings
from tests.data.sources.test_fashion_mnist import write_fake_package
from tests.helpers.assets import write_fake_cifar
from tests.helpers.images import write_images


def _sources(tmp_path: Path) -> dict[str, list[str]]:
    """Overrides composing each source on small generated data."""
    write_images(tmp_path / "imgs", {"a": 6, "b": 6})
    write_fake_cifar(tmp_path / "cifar")
    package = write_fake_package(tmp_path / "fmnist_pkg")
    return {
        "synthetic": ["data=synthetic", "data.train_size=12", "data.val_size=6"],
        "imagefolder": ["data=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.val_fraction=0.5"],
        "cifar10": ["data=cifar10", f"paths.data_dir={tmp_path / 'cifar'}", "data.classes=[cat,dog]"],
        "fashion_mnist": [
            "data=fashion_mnist",
            f"data.root={tmp_path / 'fmnist'}",
            f"data.system_dir={package}",
            "data.classes=[trouser,bag]",
            "data.train_size=12",
            "data.val_size=6",
        ],
    }


def _splits(cfg) -> tuple[list, list]:
    """The (id, label, pixels) of each image of the train and val splits the DataModule serves."""
    settings = load_settings(cfg)
    source = build_source(settings.data, settings.seed)
    datamodule = build_datamodule(
        settings.data, source, default_preprocessing("resnet18"), seed=settings.seed
    )
    datamodule.setup("fit")
    out = []
    for split, dataset in (("train", datamodule.train_set), ("val", datamodule.val_set)):
        dataset.transform = None
        ids = image_ids(dataset, split)
        out.append([(ids[i], int(dataset[i][1]), dataset[i][0]) for i in range(len(dataset))])
    return out[0], out[1]


@pytest.mark.parametrize("name", ["synthetic", "imagefolder", "cifar10", "fashion_mnist"])
def test_exclude_drops_the_listed_images_of_every_source(tmp_path: Path, compose_cfg, name: str) -> None:
    overrides = _sources(tmp_path)[name]
    train, val = _splits(compose_cfg(overrides))
    dropped = {train[1][0], train[4][0], val[0][0]}
    listing = tmp_path / "exclude.txt"
    listing.write_text("# suspects\n" + "\n".join(sorted(dropped)) + "\n\n")
    kept_train, kept_val = _splits(compose_cfg([*overrides, f"data.exclude={listing}"]))
    expected_train = [item for item in train if item[0] not in dropped]
    expected_val = [item for item in val if item[0] not in dropped]
    assert [(i, y) for i, y, _ in kept_train] == [(i, y) for i, y, _ in expected_train]
    assert [(i, y) for i, y, _ in kept_val] == [(i, y) for i, y, _ in expected_val]
    assert all(torch.equal(a[2], b[2]) for a, b in zip(kept_train, expected_train, strict=True))


def test_exclude_file_missing_or_emptying_a_split_is_a_clear_error(tmp_path: Path, compose_cfg) -> None:
    overrides = ["data=synthetic", "data.train_size=6", "data.val_size=3"]
    with pytest.raises(FtlabError, match="no such file"):
        _splits(compose_cfg([*overrides, f"data.exclude={tmp_path / 'missing.txt'}"]))
    listing = tmp_path / "all_val.txt"
    listing.write_text("val:0\nval:1\nval:2\n")
    with pytest.raises(FtlabError, match="every one of the 3 val images"):
        _splits(compose_cfg([*overrides, f"data.exclude={listing}"]))
