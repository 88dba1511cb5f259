"""`python -m ftlab.report <sweep or run folder>`: read every run's logged metrics and compare the runs.

A run is a folder holding `.hydra/overrides.yaml` and its metrics: TensorBoard event files under
`tensorboard/` (read with tensorboard's EventAccumulator) or, failing those, Lightning's `csv/metrics.csv`.
The report is a table of the overrides that differ between runs, best val accuracy and its epoch, final val
loss, epochs to reach a target accuracy and wall time (best run first), as Markdown, CSV or JSON; `--plot`
draws every run's val accuracy and loss curves on one figure. `CompareRuns` prints the per-epoch
side-by-side table at the end of a Hydra multirun (`hydra.callbacks`). A multi-label run logs no accuracy: its
val/mAP fills the accuracy columns (and names them when every run is multi-label).

Cross-validation (`data.fold`): runs that differ only in their fold form a group (a recipe); `fold_summary`
gives each group's per-fold metrics with their mean and sample standard deviation, and `paired_differences`
compares two groups fold by fold (difference per fold, its mean, standard deviation and paired t statistic).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftlab.config.overrides import parse_overrides
from ftlab.errors import FtlabError

ACC, LOSS = "val/acc", "val/loss"
MAP = "val/mAP"  # multi-label runs log no accuracy: their macro mAP takes its place in the report
TABLE_FORMATS = ("markdown", "csv", "json")  # how ftlab.report prints its table
DEFAULT_TARGET = 0.8


@dataclass
class Run:
    """One run's overrides and per-epoch validation metrics (epochs counted from 1)."""

    path: Path
    name: str
    overrides: dict[str, str]
    val_acc: dict[int, float] = field(default_factory=dict)
    val_loss: dict[int, float] = field(default_factory=dict)
    wall_time_s: float | None = None
    metrics_from: str | None = None  # "tensorboard" | "csv" | None (nothing logged)
    score: str = ACC  # what `val_acc` holds: val/acc, or val/mAP for a multi-label run
    diagnostics: dict[str, dict[int, float]] = field(default_factory=dict)  # drift/<stage>, grad_norm/<stage>
    fold: int | None = None  # data.fold: the override, else the run's saved config (cross-validation)

    @property
    def best_epoch(self) -> int | None:
        """The epoch of the highest val accuracy (the earliest one on ties)."""
        if not self.val_acc:
            return None
        return max(sorted(self.val_acc), key=lambda epoch: self.val_acc[epoch])

    @property
    def best_val_acc(self) -> float | None:
        """The highest val accuracy of any epoch."""
        epoch = self.best_epoch
        return None if epoch is None else self.val_acc[epoch]

    @property
    def final_val_acc(self) -> float | None:
        """The val accuracy of the last logged epoch."""
        return self.val_acc[max(self.val_acc)] if self.val_acc else None

    @property
    def final_val_loss(self) -> float | None:
        """The val loss of the last logged epoch."""
        return self.val_loss[max(self.val_loss)] if self.val_loss else None

    def epochs_to(self, target: float) -> int | None:
        """The first epoch whose val accuracy reaches `target`; None if none does."""
        return epochs_to(self.val_acc, target)


def epochs_to(curve: dict[int, float], target: float) -> int | None:
    """The first epoch of a per-epoch curve at or above `target`."""
    return next((epoch for epoch in sorted(curve) if curve[epoch] >= target), None)


def _natural_key(text: str) -> list[Any]:
    """Sort key under which 'run/2' comes before 'run/10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_runs(root: Path) -> list[Path]:
    """Every run folder at or below `root` (a folder with `.hydra/overrides.yaml`), in natural order."""
    found = {marker.parent.parent for marker in root.rglob(".hydra/overrides.yaml")}
    return sorted(found, key=lambda p: _natural_key(str(p.relative_to(root))))


DIAGNOSTIC_PREFIXES = ("drift/", "grad_norm/")  # logged by ftlab.callbacks.diagnostics.TransferDiagnostics


def _tensorboard_curves(folder: Path) -> tuple[dict[str, dict[int, float]], float | None]:
    """val/acc, val/loss and the transfer diagnostics per epoch from the event files under `folder`, and
    the logging wall time. Runs that log against the epoch (no `epoch` scalar) have step = epoch - 1."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[int, float]] = {ACC: {}, LOSS: {}}
    first: float | None = None
    last: float | None = None
    for directory in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        events.Reload()
        tags = events.Tags()["scalars"]
        epoch_axis = "epoch" not in tags
        epoch_at = {} if epoch_axis else {e.step: int(e.value) + 1 for e in events.Scalars("epoch")}
        diagnostics = [t for t in tags if t.startswith(DIAGNOSTIC_PREFIXES)]
        for tag in (ACC, LOSS, MAP, *diagnostics):
            if tag not in tags:
                continue
            for index, event in enumerate(events.Scalars(tag)):
                epoch = event.step + 1 if epoch_axis else epoch_at.get(event.step, index + 1)
                curves.setdefault(tag, {})[epoch] = float(event.value)
                last = event.wall_time if last is None else max(last, event.wall_time)
        try:
            start = events.FirstEventTimestamp()
        except ValueError:  # an empty event file
            continue
        first = start if first is None else min(first, start)
    wall = last - first if first is not None and last is not None else None
    return curves, wall


def _csv_curves(path: Path, started: Path) -> tuple[dict[str, dict[int, float]], float | None]:
    """val/acc, val/loss and diagnostics per epoch from Lightning's metrics.csv; wall time from file times.

    Rows logged against the epoch have no `epoch` column: their `step` is the epoch.
    """
    curves: dict[str, dict[int, float]] = {ACC: {}, LOSS: {}}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch") or row.get("step")
            if not epoch:
                continue
            for tag, value in row.items():
                if value and (tag in (ACC, LOSS, MAP) or tag.startswith(DIAGNOSTIC_PREFIXES)):
                    curves.setdefault(tag, {})[int(float(epoch)) + 1] = float(value)
    wall = path.stat().st_mtime - started.stat().st_mtime if started.is_file() else None
    return curves, wall


FOLD_KEY = "data.fold"  # the override that names a cross-validation fold


def _fold(path: Path, overrides: dict[str, str]) -> int | None:
    """The run's `data.fold`: its override, else the value in its saved config; None when it has none."""
    value: Any = overrides.get(FOLD_KEY)
    if value is None:
        config = path / ".hydra" / "config.yaml"
        saved = yaml.safe_load(config.read_text()) if config.is_file() else None
        data = saved.get("data") if isinstance(saved, dict) else None
        value = data.get("fold") if isinstance(data, dict) else None
    try:
        return None if value in (None, "", "null") else int(value)
    except (TypeError, ValueError):
        return None


def read_run(path: Path, root: Path) -> Run:
    """A run's overrides and metrics: TensorBoard event files first, the CSV log as the fallback."""
    overrides = parse_overrides(list(yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []))
    name = str(path.relative_to(root)) if path != root else path.name
    run = Run(path=path, name=name, overrides=overrides, fold=_fold(path, overrides))
    curves: dict[str, dict[int, float]] = {}
    if (path / "tensorboard").is_dir():
        curves, run.wall_time_s = _tensorboard_curves(path / "tensorboard")
        run.metrics_from = "tensorboard"
    csv_log = path / "csv" / "metrics.csv"
    if not curves.get(ACC) and csv_log.is_file():
        curves, run.wall_time_s = _csv_curves(csv_log, path / ".hydra" / "config.yaml")
        run.metrics_from = "csv"
    if not curves.get(ACC) and curves.get(MAP):  # a multi-label run: its mAP fills the accuracy columns
        curves[ACC] = curves[MAP]
        run.score = MAP
    if not curves.get(ACC):
        run.metrics_from, run.wall_time_s = None, None
    run.val_acc, run.val_loss = curves.get(ACC, {}), curves.get(LOSS, {})
    run.diagnostics = {tag: curve for tag, curve in curves.items() if tag.startswith(DIAGNOSTIC_PREFIXES)}
    return run


def load_runs(root: str | Path) -> list[Run]:
    """Every run under `root` (a sweep folder, a run folder, or a folder of either)."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FtlabError(f"{str(folder)!r} is not a folder. Give a run or sweep folder (e.g. logs/<task>/).")
    runs = [read_run(path, folder) for path in find_runs(folder)]
    if not runs:
        raise FtlabError(
            f"No runs under {folder}: a run folder holds .hydra/overrides.yaml and tensorboard/ or "
            "csv/metrics.csv (what `python -m ftlab.train` writes)."
        )
    return runs


def varying_overrides(runs: Sequence[Run]) -> list[str]:
    """The override keys whose value is not the same in every run, in order of first appearance."""
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def label(run: Run, keys: Sequence[str]) -> str:
    """A run's name for tables and legends: its values of the varying overrides, else its folder."""
    return " ".join(f"{key}={run.overrides.get(key, '-')}" for key in keys) or run.name


def ranked(runs: Sequence[Run]) -> list[Run]:
    """Best val accuracy first; runs with no metrics last."""
    return sorted(runs, key=lambda r: -r.best_val_acc if r.best_val_acc is not None else math.inf)


def diagnostic_columns(runs: Sequence[Run]) -> list[str]:
    """The diagnostics tags any run logged: drifts first, then gradient norms, stages in log order."""
    tags = list(dict.fromkeys(tag for run in runs for tag in run.diagnostics))
    return sorted(tags, key=lambda t: (not t.startswith("drift/"), tags.index(t)))


def summary_rows(
    runs: Sequence[Run], target: float = DEFAULT_TARGET, diagnostics: bool = False
) -> list[dict[str, Any]]:
    """One record per run, best first: varying overrides, best acc and epoch, final loss, epochs to target,
    and with `diagnostics` each stage's weight drift and gradient norm in the final epoch."""
    columns = diagnostic_columns(runs) if diagnostics else []
    keys = varying_overrides(runs)
    rows = []
    for run in ranked(runs):
        row: dict[str, Any] = {"run": run.name}
        row.update({key: run.overrides.get(key) for key in keys})
        row.update(
            {
                "best_val_acc": run.best_val_acc,
                "best_epoch": run.best_epoch,
                "final_val_loss": run.final_val_loss,
                "epochs_to_target": run.epochs_to(target),
                "wall_time_s": run.wall_time_s,
            }
        )
        for tag in columns:
            curve = run.diagnostics.get(tag, {})
            row[tag] = curve[max(curve)] if curve else None
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


NUMBER = re.compile(r"-?\d+(\.\d+)?|-")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table: floats to 4 places, None as '-', columns of numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    right = [all(NUMBER.fullmatch(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if r else "---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def render(
    runs: Sequence[Run], fmt: str = "markdown", target: float = DEFAULT_TARGET, diagnostics: bool = False
) -> str:
    """The comparison of `runs` as Markdown, CSV or JSON text (`diagnostics`: final drift and gradient norm
    per stage as extra columns; per-epoch values in JSON)."""
    if fmt not in TABLE_FORMATS:
        raise FtlabError(f"--format {fmt!r}: choose one of {', '.join(TABLE_FORMATS)}.")
    if fmt == "json":
        by_name = {run.name: run for run in runs}
        records = []
        for row in summary_rows(runs, target):
            run = by_name[row["run"]]
            epochs = sorted(set(run.val_acc) | set(run.val_loss))
            records.append(
                {
                    "run": run.name,
                    "path": str(run.path),
                    "overrides": run.overrides,
                    **{k: row[k] for k in ("best_val_acc", "best_epoch", "final_val_loss", "wall_time_s")},
                    "target": target,
                    "epochs_to_target": row["epochs_to_target"],
                    "metrics_from": run.metrics_from,
                    "epochs": epochs,
                    "val_acc": [run.val_acc.get(e) for e in epochs],
                    "val_loss": [run.val_loss.get(e) for e in epochs],
                }
            )
            if diagnostics:
                records[-1]["diagnostics"] = {
                    tag: {str(e): v for e, v in sorted(curve.items())}
                    for tag, curve in run.diagnostics.items()
                }
        return json.dumps(records, indent=2)
    rows = summary_rows(runs, target, diagnostics)
    header = list(rows[0])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    scores = {run.score for run in runs}
    titles = {
        "best_val_acc": f"best {scores.pop() if len(scores) == 1 else 'val/acc (val/mAP: multi-label)'}",
        "best_epoch": "best epoch",
        "final_val_loss": "final val/loss",
        "epochs_to_target": f"epochs to {target:.4g}",
        "wall_time_s": "wall time (s)",
    }
    for row in rows:  # seconds to a tenth, not four places
        row["wall_time_s"] = None if row["wall_time_s"] is None else f"{row['wall_time_s']:.1f}"
    return markdown_table([titles.get(k, k) for k in header], [list(row.values()) for row in rows])


def mean_curve(runs: Sequence[Run]) -> dict[int, float]:
    """The per-epoch mean val accuracy over runs (epochs that every run logged)."""
    common = set.intersection(*(set(run.val_acc) for run in runs)) if runs else set()
    return {epoch: sum(run.val_acc[epoch] for run in runs) / len(runs) for epoch in sorted(common)}


def epoch_table(runs: Sequence[Run], target: float | None = None, group_by: str | None = None) -> str:
    """Val accuracy per epoch, runs side by side in the given order, plus a mean column per `group_by` value.

    The last row gives the epoch at which each column first reaches `target`.
    """
    keys = varying_overrides(runs)
    columns: list[tuple[str, dict[int, float]]] = [(label(r, keys), r.val_acc) for r in runs]
    if group_by is not None and len(keys) > 1:
        values = list(dict.fromkeys(r.overrides.get(group_by) for r in runs))
        for value in values:
            members = [r for r in runs if r.overrides.get(group_by) == value]
            columns.append((f"mean {group_by}={value} ({len(members)} runs)", mean_curve(members)))
    epochs = sorted({epoch for _, curve in columns for epoch in curve})
    rows: list[list[Any]] = [[epoch, *(curve.get(epoch) for _, curve in columns)] for epoch in epochs]
    if target is not None:
        rows.append([f"epochs to {target:.4g}", *(epochs_to(curve, target) for _, curve in columns)])
    return markdown_table(["epoch", *(name for name, _ in columns)], rows)


def plot(runs: Sequence[Run], out: str | Path) -> Path:
    """Val accuracy and val loss per epoch of every run on one figure, saved as an image (Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = varying_overrides(runs)
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    acc_axes, loss_axes = figure.subplots(1, 2)
    for run in runs:
        name = label(run, keys)
        for axes, curve in ((acc_axes, run.val_acc), (loss_axes, run.val_loss)):
            epochs = sorted(curve)
            axes.plot(epochs, [curve[e] for e in epochs], marker="o", label=name)
    for axes, title in ((acc_axes, "val accuracy"), (loss_axes, "val loss")):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    acc_axes.legend(fontsize="small")
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


# -- cross-validation: folds of one recipe, and two recipes compared fold by fold --------------------------

FOLD_METRICS = ("best_val_acc", "final_val_acc", "final_val_loss")  # per run, summarised over folds
FOLD_TITLES = {m: m.replace("_val_", " val/") for m in FOLD_METRICS}  # best_val_acc -> best val/acc


def _std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass
class FoldGroup:
    """The runs of one recipe (the same overrides but `data.fold`), one per fold."""

    label: str
    overrides: dict[str, str]
    runs: dict[int, Run]  # fold -> run (the last one read, if a fold ran twice)

    def metric(self, name: str) -> dict[int, float]:
        """fold -> the run's metric (`best_val_acc`, `final_val_acc`, `final_val_loss`), where logged."""
        values = {fold: getattr(run, name) for fold, run in self.runs.items()}
        return {fold: float(v) for fold, v in sorted(values.items()) if v is not None}

    def summary(self, name: str) -> tuple[float | None, float | None]:
        """Mean and sample standard deviation of a metric over the folds."""
        values = list(self.metric(name).values())
        return (sum(values) / len(values) if values else None), _std(values)


def fold_groups(runs: Sequence[Run]) -> list[FoldGroup]:
    """Runs that name a fold, grouped by their overrides without `data.fold` (in order of first run);
    labelled by the overrides that differ between the groups."""
    groups: dict[tuple[tuple[str, str], ...], FoldGroup] = {}
    for run in runs:
        if run.fold is None:
            continue
        rest = {k: v for k, v in run.overrides.items() if k != FOLD_KEY}
        key = tuple(sorted(rest.items()))
        group = groups.setdefault(key, FoldGroup(label="", overrides=rest, runs={}))
        group.runs[run.fold] = run
    found = list(groups.values())
    keys = list(dict.fromkeys(k for g in found for k in g.overrides))
    varying = [k for k in keys if len({g.overrides.get(k) for g in found}) > 1]
    for number, group in enumerate(found):
        named = " ".join(f"{k}={group.overrides.get(k, '-')}" for k in varying)
        group.label = named or f"recipe {number + 1}"
    return found


@dataclass
class Paired:
    """Recipe `a` minus recipe `b` on the folds both ran: per fold, mean, sample std and paired t."""

    a: str
    b: str
    metric: str
    differences: dict[int, float]

    @property
    def mean(self) -> float | None:
        values = list(self.differences.values())
        return sum(values) / len(values) if values else None

    @property
    def std(self) -> float | None:
        return _std(list(self.differences.values()))

    @property
    def t(self) -> float | None:
        """Paired t statistic mean / (std / sqrt(n)), n - 1 degrees of freedom; None when undefined."""
        mean, std, n = self.mean, self.std, len(self.differences)
        if mean is None or std is None or std == 0:
            return None
        return mean / (std / math.sqrt(n))


def paired_differences(a: FoldGroup, b: FoldGroup, metric: str = "best_val_acc") -> Paired:
    """`a` minus `b` fold by fold, on the folds where both logged the metric."""
    va, vb = a.metric(metric), b.metric(metric)
    return Paired(a.label, b.label, metric, {fold: va[fold] - vb[fold] for fold in sorted(set(va) & set(vb))})


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def _group_record(group: FoldGroup) -> dict[str, Any]:
    """A recipe's folds and each metric's mean, sample std and number of folds, for JSON."""
    record: dict[str, Any] = {"recipe": group.label, "overrides": group.overrides}
    record["folds"] = {str(f): {m: getattr(r, m) for m in FOLD_METRICS} for f, r in group.runs.items()}
    for m in FOLD_METRICS:
        mean, std = group.summary(m)
        record[m] = {"mean": mean, "std": std, "n": len(group.metric(m))}
    return record


def fold_report(runs: Sequence[Run], fmt: str = "markdown") -> str | None:
    """Per recipe: each fold's metrics and their mean ± sample standard deviation; then every pair of
    recipes compared fold by fold (best val/acc, final val/acc, final val/loss). None without folds."""
    groups = fold_groups(runs)
    if not groups:
        return None
    pairs = [
        paired_differences(a, b, metric)
        for i, a in enumerate(groups)
        for b in groups[i + 1 :]
        for metric in FOLD_METRICS
    ]
    pairs = [p for p in pairs if p.differences]
    if fmt == "json":
        return json.dumps(
            {
                "recipes": [_group_record(g) for g in groups],
                "paired": [
                    {
                        "a": p.a,
                        "b": p.b,
                        "metric": p.metric,
                        "differences": {str(f): d for f, d in p.differences.items()},
                        "mean": p.mean,
                        "std": p.std,
                        "t": p.t,
                        "n": len(p.differences),
                    }
                    for p in pairs
                ],
            },
            indent=2,
        )
    titles = FOLD_TITLES
    parts = []
    for group in groups:
        rows: list[list[Any]] = [
            [fold, *(getattr(run, m) for m in FOLD_METRICS)] for fold, run in sorted(group.runs.items())
        ]
        summary = [_pm(*group.summary(m)) for m in FOLD_METRICS]
        rows.append([f"mean ± std ({len(group.runs)} folds)", *summary])
        parts.append(f"Folds of {group.label}:\n\n" + markdown_table(["fold", *titles.values()], rows))
    for a, b in {(p.a, p.b): None for p in pairs}:
        metrics = [p for p in pairs if (p.a, p.b) == (a, b)]
        folds = sorted({f for p in metrics for f in p.differences})
        rows = [[fold, *(p.differences.get(fold) for p in metrics)] for fold in folds]
        rows.append(["mean ± std", *(_pm(p.mean, p.std) for p in metrics)])
        rows.append([f"paired t ({len(folds) - 1} df)", *(p.t for p in metrics)])
        header = ["fold", *(f"Δ {titles[p.metric]}" for p in metrics)]
        parts.append(f"Paired difference per fold, {a} minus {b}:\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts)
