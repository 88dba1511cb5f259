"""k-fold cross-validation (data.folds, data.fold): partitions, stratification, order independence."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ftlab.data import ImageDataModule
from ftlab.data.folds import assign_folds
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.settings import DataSettings
from ftlab.data.sources.csv import CsvSource
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.errors import FtlabError

PREP = Preprocessing.from_weights(torchvision.models.ResNet18_Weights.IMAGENET1K_V1).at_size(32)
K = 5


def _table(folder: Path, rows: list[dict[str, str]], name: str = "t.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if not (folder / row["path"]).exists():
            Image.new("RGB", (4, 4)).save(folder / row["path"])
    with open(folder / name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / name


def _folds(source_factory, k: int = K) -> list[ImageDataModule]:
    modules = []
    for fold in range(k):
        dm = ImageDataModule(source_factory(), PREP, folds=k, fold=fold, seed=3, augment="none")
        dm.setup()
        modules.append(dm)
    return modules


def _ids(dataset) -> list[str]:
    return list(dataset.ids)


def test_validation_folds_partition_the_pool_and_never_meet_their_training_images(tmp_path):
    counts = {"a": 23, "b": 11, "c": 7}
    rows = [{"path": f"{c}{i}.png", "label": c} for c, n in counts.items() for i in range(n)]
    table = _table(tmp_path, rows)
    modules = _folds(lambda: CsvSource(csv=str(table)))
    pool = {str(tmp_path / r["path"]) for r in rows}
    vals = [set(_ids(dm.val_set)) for dm in modules]
    assert set().union(*vals) == pool and sum(len(v) for v in vals) == len(pool)  # a partition
    for dm, val in zip(modules, vals, strict=True):
        train = set(_ids(dm.train_set))
        assert not train & val and train | val == pool
        assert dm.train_set.paths == sorted(dm.train_set.paths)  # pool order: by id
        # labels follow their files
        assert [rows_label(tmp_path, p, rows) for p in dm.val_set.paths] == list(dm.val_set.labels)
    # stratified: every class's share of each validation fold within one image of n_c / K
    classes = sorted(counts)
    for dm in modules:
        per_class = np.bincount(dm.val_set.labels, minlength=3)
        ideal = np.asarray([counts[c] / K for c in classes])
        assert np.all(np.abs(per_class - ideal) < 1), per_class
        assert abs(len(dm.val_set) - len(pool) / K) < 1


def rows_label(folder: Path, path: str, rows: list[dict[str, str]]) -> int:
    by_path = {str(folder / r["path"]): r["label"] for r in rows}
    return sorted({r["label"] for r in rows}).index(by_path[path])


def test_folds_do_not_depend_on_the_order_of_the_listing(tmp_path):
    rows = [{"path": f"{c}{i}.png", "label": c} for c in "xyz" for i in range(9)]
    shuffled = [rows[i] for i in np.random.default_rng(7).permutation(len(rows))]
    first, second = _table(tmp_path, rows, "a.csv"), _table(tmp_path, shuffled, "b.csv")
    for fold_a, fold_b in zip(
        _folds(lambda: CsvSource(csv=str(first))), _folds(lambda: CsvSource(csv=str(second))), strict=True
    ):
        assert fold_a.val_set.paths == fold_b.val_set.paths
        assert fold_a.train_set.paths == fold_b.train_set.paths
    # the assignment itself: permuting items and their ids permutes the folds with them
    labels = np.random.default_rng(0).integers(0, 4, 50)
    ids = [f"img{i:03d}" for i in range(50)]
    perm = np.random.default_rng(1).permutation(50)
    folds = assign_folds(labels, K, 11, ids)
    assert np.array_equal(assign_folds(labels[perm], K, 11, [ids[i] for i in perm]), folds[perm])
    assert not np.array_equal(assign_folds(labels, K, 12, ids), folds)  # the seed matters


def test_in_memory_sources_fold_too():
    modules = _folds(lambda: SyntheticSource(train_size=30, val_size=10), k=4)
    vals = [set(dm.val_set.ids) for dm in modules]
    assert sum(len(v) for v in vals) == 40 and len(set().union(*vals)) == 40
    assert {i.split(":")[0] for i in set().union(*vals)} == {"train", "val"}  # val joined the pool


def test_multi_label_folds_by_iterative_stratification():
    rng = np.random.default_rng(5)
    y = (rng.random((200, 6)) < np.asarray([0.5, 0.3, 0.2, 0.1, 0.05, 0.03])).astype(np.float32)
    folds = assign_folds(y, K, 0, [f"{i:04d}" for i in range(200)])
    assert sorted(np.bincount(folds).tolist()) in ([40] * 5, [39, 40, 40, 40, 41])
    ideal = y.sum(0) / K
    per_fold = np.stack([y[folds == f].sum(0) for f in range(K)])
    # every label spread within one image of its ideal share (rare labels: never all in one fold)
    assert np.all(np.abs(per_fold - ideal) <= 1.0), per_fold
    random_folds = np.random.default_rng(0).permutation(200) % K  # what stratification improves on
    random_spread = np.abs(np.stack([y[random_folds == f].sum(0) for f in range(K)]) - ideal).max()
    assert np.abs(per_fold - ideal).max() < random_spread


def test_a_fold_column_defines_the_folds(tmp_path):
    rows = [{"path": f"{i}.png", "label": "ab"[i % 2], "fold": str(i % 3)} for i in range(12)]
    rows.append({"path": "t.png", "label": "a", "fold": "", "split": "test"})
    rows = [{**r, "split": r.get("split", "")} for r in rows]
    table = _table(tmp_path, rows)
    for dm, fold in zip(_folds(lambda: CsvSource(csv=str(table)), k=3), range(3), strict=True):
        expected = sorted(f"{i}.png" for i in range(fold, 12, 3))
        assert sorted(Path(p).name for p in dm.val_set.paths) == expected
        assert str(tmp_path / "t.png") not in dm.train_set.paths  # test rows stay out
    dm = ImageDataModule(CsvSource(csv=str(table)), PREP, folds=4, fold=0)
    holds = r"data.folds=4, but the source.s fold column holds the folds .0, 1, 2"
    with pytest.raises(FtlabError, match=holds):
        dm.setup()


@pytest.mark.parametrize(("folds", "fold"), [(1, 0), (5, 5), (None, 2), (5, None), (5, -1)])
def test_fold_keys_are_checked(folds, fold):
    with pytest.raises(FtlabError, match="k-fold cross-validation needs both"):
        DataSettings(folds=folds, fold=fold)


def test_a_table_without_validation_rows_needs_folds(tmp_path):
    rows = [{"path": f"{i}.png", "label": "ab"[i % 2], "split": "train"} for i in range(8)]
    table = _table(tmp_path, rows)
    with pytest.raises(FtlabError, match="no validation images"):
        ImageDataModule(CsvSource(csv=str(table)), PREP).setup()
    dm = ImageDataModule(CsvSource(csv=str(table)), PREP, folds=2, fold=1)
    dm.setup()
    assert len(dm.train_set) == len(dm.val_set) == 4


def test_multi_label_csv_pool_folds_keep_multi_hot_rows_with_their_files(tmp_path):
    from ftlab.data.folds import fold_split

    rng = np.random.default_rng(2)
    sets = [" ".join(c for c in "pqr" if rng.random() < 0.5) or "p" for _ in range(30)]
    rows = [{"path": f"{i}.png", "labels": labels} for i, labels in enumerate(sets)]
    table = _table(tmp_path, rows)
    source = CsvSource(csv=str(table))
    expected = {str(tmp_path / r["path"]): [float(c in r["labels"].split()) for c in "pqr"] for r in rows}
    seen = []
    for fold in range(3):
        cut = fold_split(*source.load(), folds=3, fold=fold, seed=0)
        assert cut.pool.labels.shape == (30, 3) and cut.pool.labels.dtype == torch.float32
        assert [expected[p] for p in cut.pool.paths] == cut.pool.labels.tolist()
        seen += [cut.pool.paths[i] for i in cut.val]
        assert not set(cut.train) & set(cut.val)
    assert sorted(seen) == sorted(expected)


def test_a_class_too_small_for_the_folds_is_one_paragraph(tmp_path):
    rows = [{"path": f"{i}.png", "label": "a"} for i in range(8)] + [{"path": "b.png", "label": "b"}]
    table = _table(tmp_path, rows)
    messages = []
    for fold in range(3):
        dm = ImageDataModule(CsvSource(csv=str(table)), PREP, folds=3, fold=fold)
        try:
            dm.setup()
        except FtlabError as err:
            messages.append(str(err))
    assert len(messages) == 1 and "no training image of the class(es) b" in messages[0]


@pytest.mark.slow
def test_a_sweep_over_the_folds_runs_each_fold_in_its_own_named_run(tmp_path):
    from tests.helpers.cli import TINY, run_cli

    args = ["-m", "+experiment=smoke", *TINY, "data.folds=3", "data.fold=range(3)", "trainer.max_epochs=1"]
    args.append(f"paths.log_dir={tmp_path}")
    result = run_cli("ftlab.train", args, cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(tmp_path.glob("*/multirun/*/*/tensorboard/*"))
    assert sorted(p.name for p in runs) == ["data.fold=0", "data.fold=1", "data.fold=2"]
    assert len({p.parent.parent for p in runs}) == 3  # one run folder per fold
    logs = [(p.parent.parent / "train.log").read_text() for p in runs]
    assert all(f"fold {i} validates" in log for i, log in enumerate(logs))
