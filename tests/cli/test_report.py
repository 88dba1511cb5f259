"""`ftlab.report` on real run folders made by a 2x2 multirun of the smoke experiment."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ftlab.runs import report
from tests.helpers.cli import run_cli

SWEEP_ARGS = [
    "-m",
    "+experiment=smoke",
    "trainer=cpu",
    "logger=many",
    "data.train_size=24",
    "data.val_size=12",
    "data.batch_size=8",
    "trainer.max_epochs=3",
    "callbacks.rich_progress_bar=null",
    "optimizer.lr=0.001,0.01",
    "seed=0,1",
    "+hydra.callbacks.compare_runs._target_=ftlab.callbacks.compare_runs.CompareRuns",
    "+hydra.callbacks.compare_runs.group_by=optimizer.lr",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 2x2 sweep folder (4 runs, 3 epochs each) and the sweep's stdout."""
    root = tmp_path_factory.mktemp("report")
    folder = root / "sweep"
    result = run_cli(
        "ftlab.train", [*SWEEP_ARGS, f"paths.log_dir={root / 'logs'}", f"hydra.sweep.dir={folder}"], cwd=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result.stdout


def events_of(run: Path) -> dict[str, list[float]]:
    """val/acc and val/loss in logging order, read straight from the run's event files."""
    folder = next((run / "tensorboard").rglob("events.out.tfevents.*")).parent  # tensorboard/<overrides>
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in ("val/acc", "val/loss")}


def expected(folder: Path) -> dict[str, dict]:
    """Per run folder name: best acc, its 1-based epoch (earliest on ties), final loss, from the events."""
    out = {}
    for run in sorted(p for p in folder.iterdir() if (p / ".hydra").is_dir()):
        curves = events_of(run)
        best = max(curves["val/acc"])
        out[run.name] = {
            "best_val_acc": best,
            "best_epoch": curves["val/acc"].index(best) + 1,
            "final_val_loss": curves["val/loss"][-1],
            "val_acc": curves["val/acc"],
        }
    return out


def test_json_numbers_match_the_event_files(sweep):
    folder, _ = sweep
    truth = expected(folder)
    assert len(truth) == 4 and all(len(t["val_acc"]) == 3 for t in truth.values())
    target = sorted(a for t in truth.values() for a in t["val_acc"])[5]  # reached by some runs only
    result = run_cli("ftlab.report", [str(folder), "--format", "json", "--target", str(target)], cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads(result.stdout)
    assert len(records) == 4
    for record in records:
        want = truth[record["run"]]
        assert record["best_val_acc"] == pytest.approx(want["best_val_acc"])
        assert record["best_epoch"] == want["best_epoch"]
        assert record["final_val_loss"] == pytest.approx(want["final_val_loss"])
        assert record["val_acc"] == pytest.approx(want["val_acc"])
        reached = [i + 1 for i, a in enumerate(want["val_acc"]) if a >= target]
        assert record["epochs_to_target"] == (reached[0] if reached else None)
        assert record["wall_time_s"] > 0
        overrides = record["overrides"]
        assert overrides["experiment"] == "smoke"
        assert overrides["optimizer.lr"] in ("0.001", "0.01") and overrides["seed"] in ("0", "1")
    assert {(r["overrides"]["optimizer.lr"], r["overrides"]["seed"]) for r in records} == {
        ("0.001", "0"),
        ("0.001", "1"),
        ("0.01", "0"),
        ("0.01", "1"),
    }
    best = [r["best_val_acc"] for r in records]
    assert best == sorted(best, reverse=True)


def test_markdown_and_csv_show_only_the_overrides_that_differ(sweep):
    folder, _ = sweep
    truth = expected(folder)
    markdown = run_cli("ftlab.report", [str(folder)], cwd=folder)
    assert markdown.returncode == 0, markdown.stderr[-2000:]
    lines = markdown.stdout.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["run", "optimizer.lr", "seed"]
    assert "trainer" not in header and "experiment" not in header
    assert len(lines) == 2 + 4
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    top = max(truth.values(), key=lambda t: t["best_val_acc"])["best_val_acc"]
    assert float(first[header.index("best val/acc")]) == pytest.approx(top, abs=5e-5)

    as_csv = run_cli("ftlab.report", [str(folder), "--format", "csv"], cwd=folder)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 4
    for row in rows:
        want = truth[row["run"]]
        assert float(row["best_val_acc"]) == pytest.approx(want["best_val_acc"])
        assert int(row["best_epoch"]) == want["best_epoch"]
        assert float(row["final_val_loss"]) == pytest.approx(want["final_val_loss"])


def test_csv_logs_are_the_fallback(sweep, tmp_path):
    folder, _ = sweep
    truth = expected(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    for run in copy.iterdir():
        shutil.rmtree(run / "tensorboard", ignore_errors=True)
    runs = report.load_runs(copy)
    assert len(runs) == 4 and {r.metrics_from for r in runs} == {"csv"}
    for run in runs:
        want = truth[run.name]
        assert run.best_val_acc == pytest.approx(want["best_val_acc"])
        assert run.best_epoch == want["best_epoch"]
        assert run.final_val_loss == pytest.approx(want["final_val_loss"])
        assert [run.val_acc[e] for e in sorted(run.val_acc)] == pytest.approx(want["val_acc"])


def test_plot_is_written(sweep, tmp_path):
    folder, _ = sweep
    out = tmp_path / "plots" / "curves.png"
    result = run_cli("ftlab.report", [str(folder), "--plot", str(out)], cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_one_run_folder_and_errors(sweep, tmp_path):
    folder, _ = sweep
    runs = report.load_runs(folder / "2")
    assert len(runs) == 1 and runs[0].best_val_acc == pytest.approx(expected(folder)["2"]["best_val_acc"])
    empty = run_cli("ftlab.report", [str(tmp_path)], cwd=tmp_path)
    assert empty.returncode == 2 and "No runs under" in empty.stderr and "Traceback" not in empty.stderr


def test_multirun_callback_prints_the_epoch_table(sweep):
    folder, stdout = sweep
    truth = expected(folder)
    table = stdout[stdout.index("| epoch |") :].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[1:5] == [
        "optimizer.lr=0.001 seed=0",
        "optimizer.lr=0.001 seed=1",
        "optimizer.lr=0.01 seed=0",
        "optimizer.lr=0.01 seed=1",
    ]
    assert header[5:] == ["mean optimizer.lr=0.001 (2 runs)", "mean optimizer.lr=0.01 (2 runs)"]
    runs = {r.name: r for r in report.load_runs(folder)}
    for epoch in (1, 2, 3):
        cells = [c.strip() for c in table[1 + epoch].strip("|").split("|")]
        assert int(cells[0]) == epoch
        by_label = {header[i]: float(cells[i]) for i in range(1, 5)}
        for name, run in runs.items():
            label = f"optimizer.lr={run.overrides['optimizer.lr']} seed={run.overrides['seed']}"
            assert by_label[label] == pytest.approx(truth[name]["val_acc"][epoch - 1], abs=5e-5)
        low = [
            truth[n]["val_acc"][epoch - 1] for n, r in runs.items() if r.overrides["optimizer.lr"] == "0.001"
        ]
        assert float(cells[5]) == pytest.approx(sum(low) / 2, abs=5e-5)
