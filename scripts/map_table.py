#!/usr/bin/env python
"""Per-epoch val/mAP of a multi-label sweep, mean ± standard deviation over seeds for each arm.

    python scripts/map_table.py logs/multilabel_mosaics/multirun/<timestamp> --group model.weights

Reads every run under the sweep folder with ftlab's report reader (a multi-label run's `val/mAP`, from its
TensorBoard events or metrics.csv) and prints a Markdown table: one row per epoch, one column per value of
`--group` (e.g. pretrained vs random init), each cell `mean ± std (n runs)`; the standard deviation is the
sample one (n - 1).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from ftlab.runs.report import load_runs


def cell(values: list[float]) -> str:
    """`mean ± std (n)` of the values (std 0 for a single run)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f} ({len(values)})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="the sweep folder (or any folder of run folders)")
    parser.add_argument("--group", default="model.weights", help="the override that names the arms")
    args = parser.parse_args(argv)
    runs = load_runs(args.sweep)
    arms: dict[str, list] = {}
    for run in runs:
        arms.setdefault(run.overrides.get(args.group, "?"), []).append(run)
    epochs = sorted({epoch for run in runs for epoch in run.val_acc})
    score = runs[0].score
    names = list(arms)
    print(f"| epoch | {' | '.join(f'{score} {args.group}={n}' for n in names)} |")
    print("|---:|" + "---:|" * len(names))
    for epoch in epochs:
        cells = [cell([r.val_acc[epoch] for r in arms[n] if epoch in r.val_acc]) for n in names]
        print(f"| {epoch} | {' | '.join(cells)} |")
    best = [cell([max(r.val_acc.values()) for r in arms[n] if r.val_acc]) for n in names]
    print(f"| best | {' | '.join(best)} |")


if __name__ == "__main__":
    main()
