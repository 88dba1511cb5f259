"""scripts/make_mosaics.py: multi-label Fashion-MNIST mosaics and a single-label CSV, read by data=csv."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ftlab.data.sources.csv import CsvSource
from ftlab.data.sources.fashion_mnist import DEBIAN_DIR, FASHION_MNIST_CLASSES, RAW_FILES

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_mosaics.py"
pytestmark = pytest.mark.skipif(
    not all((Path(DEBIAN_DIR) / f"{n}.gz").is_file() for n in RAW_FILES), reason="no Fashion-MNIST files"
)


def _script():
    spec = importlib.util.spec_from_file_location("make_mosaics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _idx(path: Path) -> np.ndarray:
    """An IDX file's array, read by hand (big-endian header of dims, then uint8 data)."""
    data = path.read_bytes()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def test_mosaic_labels_are_the_classes_of_its_tiles_and_the_files_are_deterministic(tmp_path):
    make = _script()
    fashion = tmp_path / "fashion"
    table = make.make_mosaics(tmp_path / "a", 6, 3, 3, seed=5, fashion_root=str(fashion), pool=200)
    again = make.make_mosaics(tmp_path / "b", 6, 3, 3, seed=5, fashion_root=str(fashion), pool=200)
    assert table.read_text() == again.read_text()
    raw = fashion / "FashionMNIST" / "raw"
    items = {
        "train": (_idx(raw / "train-images-idx3-ubyte"), _idx(raw / "train-labels-idx1-ubyte")),
        "test": (_idx(raw / "t10k-images-idx3-ubyte"), _idx(raw / "t10k-labels-idx1-ubyte")),
    }
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert [r["split"] for r in rows] == ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    for row in rows:
        assert (tmp_path / "a" / row["path"]).read_bytes() == (tmp_path / "b" / row["path"]).read_bytes()
        grid = np.asarray(Image.open(tmp_path / "a" / row["path"]))
        images, labels = items["train" if row["split"] == "train" else "test"]
        shown = set()
        for r in (0, 1):
            for c in (0, 1):
                tile = grid[28 * r : 28 * r + 28, 28 * c : 28 * c + 28]
                match = np.flatnonzero((images == tile).all(axis=(1, 2)))
                assert len(match) >= 1
                shown |= {FASHION_MNIST_CLASSES[labels[m]] for m in match}
        assert set(row["labels"].split()) == shown
    source = CsvSource(csv=str(table))
    train, val = source.load()
    assert source.multi_label and train.labels.shape == (6, len(source.classes)) and len(val) == 3


def test_single_label_csv_is_a_stratified_sample(tmp_path):
    make = _script()
    two = ["trouser", "bag"]
    table = make.make_single(tmp_path / "s", 20, seed=1, classes=two, fashion_root=str(tmp_path))
    source = CsvSource(csv=str(table))
    assert source.classes == ["bag", "trouser"] and not source.multi_label
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert sorted(r["label"] for r in rows) == ["bag"] * 10 + ["trouser"] * 10
