#!/usr/bin/env python
"""Per-fold val accuracy of a k-fold sweep of two recipes, mean ± std, the paired difference and the
feature cache's work (from each run's train.log).

    python scripts/kfold_summary.py <sweep folder> [--key finetune] [--fold-key data.fold]

Rows are the folds; each recipe's val/acc is the last epoch's. The paired difference is taken fold by fold
(same training and validation images), its std over the folds (ddof=1), like the recipes' std.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from ftlab.runs.report import load_runs

BUILT = re.compile(
    r"feature cache built: (\w+) after stage \S+ .*? (from images|loaded)[^:]*: (\d+) images x (\d+) view"
)
SECONDS = re.compile(r", ([0-9.]+) s$")


def cache_work(run_dir: Path) -> tuple[int, float]:
    """Images x views the frozen prefix ran on (cache builds from images) and the seconds of all builds."""
    images, seconds = 0, 0.0
    log = run_dir / "train.log"
    for line in log.read_text().splitlines() if log.is_file() else []:
        match = BUILT.search(line)
        if match:
            if match.group(2) == "from images":
                images += int(match.group(3)) * int(match.group(4))
            found = SECONDS.search(line)
            seconds += float(found.group(1)) if found else 0.0
    return images, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--key", default="finetune")
    parser.add_argument("--fold-key", default="data.fold")
    args = parser.parse_args()
    runs = load_runs(args.sweep)
    table: dict[str, dict[int, float]] = {}
    work: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        recipe, fold = run.overrides.get(args.key, "?"), int(run.overrides[args.fold_key])
        table.setdefault(recipe, {})[fold] = run.val_acc[max(run.val_acc)]
        work.setdefault(recipe, []).append(cache_work(run.path))
    recipes = sorted(table)
    folds = sorted(set.intersection(*(set(v) for v in table.values())))
    print(
        "| fold | "
        + " | ".join(recipes)
        + (f" | {recipes[1]} - {recipes[0]}" if len(recipes) == 2 else "")
        + " |"
    )
    print("|---" * (len(recipes) + 1 + (len(recipes) == 2)) + "|")
    diffs = []
    for fold in folds:
        accs = [table[r][fold] for r in recipes]
        cells = [f"{a:.3f}" for a in accs]
        if len(recipes) == 2:
            diffs.append(accs[1] - accs[0])
            cells.append(f"{diffs[-1]:+.3f}")
        print(f"| {fold} | " + " | ".join(cells) + " |")

    def spread(values: list[float], sign: str = "") -> str:
        std = f"{statistics.stdev(values):.3f}" if len(values) > 1 else "-"
        return f"{statistics.mean(values):{sign}.3f} ± {std}"

    means = [spread([table[r][f] for f in folds]) for r in recipes]
    if diffs:
        means.append(spread(diffs, "+"))
    print("| mean ± std | " + " | ".join(means) + " |")
    for recipe in recipes:
        images = [w[0] for w in work[recipe]]
        seconds = [w[1] for w in work[recipe]]
        print(
            f"{recipe}: frozen-prefix passes per fold {images} (images x views), cache build+load seconds "
            f"{[round(s, 1) for s in seconds]}, total {sum(images)} passes, {sum(seconds):.1f} s"
        )


if __name__ == "__main__":
    main()
