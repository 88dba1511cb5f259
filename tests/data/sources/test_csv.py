"""data=csv: single- and multi-label tables, their splits, and one clear paragraph per kind of bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ftlab.data.sources.csv import CsvSource
from ftlab.errors import FtlabError
from tests.helpers.cli import TINY, run_cli
from tests.helpers.runs import one_paragraph


def _write_table(folder: Path, rows: list[dict[str, str]], name: str = "labels.csv") -> Path:
    """Write `rows` as a CSV (columns from the first row) and a small PNG for every path (first column)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for row in rows:
        image = folder / next(iter(row.values()))
        if not image.exists():
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(image)
    table = folder / name
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def _single(n_per_class: dict[str, int]) -> list[dict[str, str]]:
    return [{"path": f"img/{cls}_{i}.png", "label": cls} for cls, n in n_per_class.items() for i in range(n)]


def test_single_label_table_splits_stratified_and_reads_the_rows_labels(tmp_path):
    rows = _single({"zebra": 10, "ant": 10, "moth": 5})
    table = _write_table(tmp_path / "data", rows)
    source = CsvSource(csv=str(table), seed=1)
    assert source.classes == ["ant", "moth", "zebra"] and source.multi_label is False
    train, val = source.load()
    assert len(train) + len(val) == 25 and not set(train.paths) & set(val.paths)
    expected = {str(tmp_path / "data" / r["path"]): source.classes.index(r["label"]) for r in rows}
    for ds in (train, val):
        assert [expected[p] for p in ds.paths] == list(ds.labels)
    assert np.bincount(val.labels, minlength=3).tolist() == [2, 1, 2]  # 20% of each class
    again_train, _ = CsvSource(csv=str(table), seed=1).load()
    assert again_train.paths == train.paths  # seeded
    ordered = CsvSource(csv=str(table), classes=["zebra", "moth", "ant"])
    assert ordered.classes == ["zebra", "moth", "ant"]
    assert ordered.load()[0].labels[0] == 0  # zebra rows come first in the file


def test_split_column_paths_relative_to_root_and_test_rows_kept_out(tmp_path):
    rows = [
        {"file": f"{c}{i}.png", "cls": c, "part": part}
        for c in "ab"
        for i, part in enumerate(["train", "train", "VAL", "test", ""])
    ]
    images = tmp_path / "pictures"
    for r in rows:
        _write_table(images, [{"path": r["file"]}], name="unused.csv")
    table = tmp_path / "tables" / "t.csv"
    table.parent.mkdir()
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "cls", "part"])
        writer.writeheader()
        writer.writerows(rows)
    source = CsvSource(
        csv=str(table),
        root=str(images),
        path_column="file",
        label_column="cls",
        split_column="part",
        val_fraction=0.5,
    )
    train, val = source.load()
    names = lambda ds: sorted(Path(p).name for p in ds.paths)  # noqa: E731
    # the two rows without a split (a4, b4) are drawn 50/50, stratified: one class each way
    assert names(train)[:2] == ["a0.png", "a1.png"] and {"a2.png", "b2.png"} <= set(names(val))
    assert len(train) == 5 and len(val) == 3
    assert not {"a3.png", "b3.png"} & set(names(train) + names(val))
    assert sorted(Path(p).name for p in source.test_set().paths) == ["a3.png", "b3.png"]


def test_multi_label_table_gives_a_float_multi_hot_tensor_in_class_order(tmp_path):
    sets = [["cat"], ["dog", "cat"], ["bird"], ["dog"], ["bird", "dog", "cat"], ["cat", "bird"]] * 4
    rows = [
        {"path": f"{i}.png", "labels": " ".join(s), "split": "val" if i % 4 == 0 else "train"}
        for i, s in enumerate(sets)
    ]
    table = _write_table(tmp_path, rows)
    source = CsvSource(csv=str(table))
    assert source.multi_label is True and source.classes == ["bird", "cat", "dog"]
    train, val = source.load()
    assert isinstance(train.labels, torch.Tensor) and train.labels.dtype == torch.float32
    assert train.labels.shape == (18, 3) and val.labels.shape == (6, 3)
    for ds in (train, val):
        for path, row in zip(ds.paths, ds.labels, strict=True):
            names = sets[int(Path(path).stem)]
            assert row.tolist() == [float(c in names) for c in ["bird", "cat", "dog"]]
    # a labels cell separated by ';' and a single-label table forced to multi-label
    semi = _write_table(tmp_path / "semi", [{**r, "labels": r["labels"].replace(" ", ";")} for r in rows])
    assert torch.equal(CsvSource(csv=str(semi), label_separator=";").load()[0].labels, train.labels)
    forced = CsvSource(csv=str(_write_table(tmp_path / "one", _single({"a": 3, "b": 3}))), multi_label=True)
    train, _ = forced.load()
    assert forced.multi_label and train.labels.sum(dim=1).tolist() == [1.0] * len(train)


def test_multi_label_rows_without_split_are_drawn_by_iterative_stratification(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for i in range(60):
        chosen = [c for c in "abcd" if rng.random() < 0.4] or ["a"]
        rows.append({"path": f"{i}.png", "labels": " ".join(chosen)})
    source = CsvSource(csv=str(_write_table(tmp_path, rows)), val_fraction=0.25)
    train, val = source.load()
    assert len(train) + len(val) == 60 and not set(train.paths) & set(val.paths)
    total = train.labels.sum(0) + val.labels.sum(0)
    assert (val.labels.sum(0) - 0.25 * total).abs().max() <= 1.0  # each label within one image of 25%


def _error(tmp_path: Path, rows: list[dict[str, str]], **kwargs) -> str:
    table = _write_table(tmp_path, rows)
    with pytest.raises(FtlabError) as err:
        CsvSource(csv=str(table), **kwargs).load()
    return str(err.value)


def test_bad_tables_are_one_paragraph_each(tmp_path):
    rows = _single({"a": 4, "b": 4})
    message = _error(tmp_path / "1", [{"file": r["path"], "label": r["label"]} for r in rows])
    assert "no 'path' column" in message and "'file', 'label'" in message
    message = _error(tmp_path / "2", [{"path": r["path"], "kind": r["label"]} for r in rows])
    assert "neither a 'label'" in message and "'path', 'kind'" in message
    message = _error(tmp_path / "3", [*rows[:3], {"path": rows[3]["path"], "label": " "}, *rows[4:]])
    assert "row 5" in message and "'label' cell is empty" in message
    message = _error(tmp_path / "4", [*rows, {"path": rows[0]["path"], "label": "b"}])
    assert "listed twice with different labels" in message and "row 2 says a, row 10 says b" in message
    message = _error(tmp_path / "5", rows, classes=["a", "c"])
    assert "row 6" in message and "'b' is not in data.classes" in message
    message = _error(tmp_path / "6", [{**r, "split": "val" if r["label"] == "b" else ""} for r in rows])
    assert "no training image of the class(es) b" in message
    message = _error(tmp_path / "7", [{"path": r["path"], "labels": "a b"} for r in rows], multi_label=False)
    assert "2 classes (a, b) for a single-label task" in message
    message = _error(tmp_path / "8", [{**r, "split": "holdout"} for r in rows])
    assert "row 2" in message and "'holdout'" in message


def test_missing_and_unreadable_files_name_their_row_then_follow_the_bad_image_policy(tmp_path):
    rows = _single({"a": 5, "b": 5})
    table = _write_table(tmp_path, rows)
    (tmp_path / rows[2]["path"]).unlink()  # row 4
    (tmp_path / rows[7]["path"]).write_bytes(b"not an image")  # row 9
    with pytest.raises(FtlabError) as err:
        CsvSource(csv=str(table)).load()
    message = str(err.value)
    assert f"row 4: {tmp_path / rows[2]['path']}" in message and "No such file" in message
    assert f"row 9: {tmp_path / rows[7]['path']}" in message
    source = CsvSource(csv=str(table), skip_bad_images=True)
    train, val = source.load()
    assert len(train) + len(val) == 8
    assert [p for p, _ in source.skipped] == sorted([str(tmp_path / rows[i]["path"]) for i in (2, 7)])


def test_exclude_keeps_multi_hot_labels_a_tensor(tmp_path):
    from ftlab.data.exclude import apply_exclude

    rows = [{"path": f"{i}.png", "labels": "a b" if i % 2 else "b", "split": "train"} for i in range(6)]
    rows += [{"path": f"v{i}.png", "labels": "a", "split": "val"} for i in range(2)]
    train, val = CsvSource(csv=str(_write_table(tmp_path, rows))).load()
    listing = tmp_path / "exclude.txt"
    listing.write_text(f"{tmp_path / '1.png'}\n{tmp_path / '2.png'}\n")
    thinned, same = apply_exclude(train, val, str(listing))
    assert same is val and isinstance(thinned.labels, torch.Tensor)
    assert thinned.labels.tolist() == [[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]  # rows 0, 3, 4, 5


@pytest.mark.slow
def test_train_reads_a_csv_and_a_bad_one_stops_with_exit_2(tmp_path):
    rows = _single({"ant": 18, "bee": 18})
    table = _write_table(tmp_path / "data", rows)
    common = [*TINY, "model.weights=null", "data.image_size=32", "data.num_workers=0"]
    common.append(f"paths.log_dir={tmp_path}")
    result = run_cli("ftlab.train", ["data=csv", f"data.csv={table}", *common], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    bad = _write_table(tmp_path / "bad", [{"file": r["path"], "label": r["label"]} for r in rows])
    result = run_cli("ftlab.train", ["data=csv", f"data.csv={bad}", *common], cwd=tmp_path)
    assert result.returncode == 2
    assert "no 'path' column (data.path_column)" in one_paragraph(result.stderr)


def test_a_single_label_table_writes_litdata_chunks_that_read_back(tmp_path):
    from ftlab.data.images import load_rgb
    from ftlab.data.sources.litdata import LitdataSource, write_chunks

    source = CsvSource(csv=str(_write_table(tmp_path / "data", _single({"b": 4, "a": 4}))))
    train, val = source.load()
    write_chunks(train, val, source.classes, str(tmp_path / "chunks"))
    chunks = LitdataSource(root=str(tmp_path / "chunks"))
    assert chunks.classes == ["a", "b"]
    for got, ref in zip(chunks.load(), (train, val), strict=True):
        assert [got[i][1] for i in range(len(got))] == list(ref.labels)
        assert all(torch.equal(got[i][0], load_rgb(ref.paths[i])) for i in range(len(ref)))


def test_a_multi_label_table_is_refused_by_litdata_chunks_in_one_paragraph(tmp_path):
    from ftlab.data.sources.litdata import write_chunks

    rows = [{"path": f"{i}.png", "labels": "a b" if i % 2 else "a"} for i in range(8)]
    source = CsvSource(csv=str(_write_table(tmp_path, rows)))
    train, val = source.load()
    with pytest.raises(FtlabError, match="multi-label") as err:
        write_chunks(train, val, source.classes, str(tmp_path / "chunks"))
    assert "\n\n" not in str(err.value) and "data=csv" in str(err.value)
    assert not (tmp_path / "chunks").exists()
