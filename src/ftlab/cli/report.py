"""`python -m ftlab.report <sweep or run folder>`: read every run's logged metrics and compare the runs.

A run is a folder holding `.hydra/overrides.yaml` and its metrics: TensorBoard event files under
`tensorboard/` (read with tensorboard's EventAccumulator) or, failing those, Lightning's `csv/metrics.csv`.
The report is a table of the overrides that differ between runs, best val accuracy and its epoch, final val
loss, epochs to reach a target accuracy and wall time (best run first), as Markdown, CSV or JSON; `--plot`
draws every run's val accuracy and loss curves on one figure. `CompareRuns` prints the per-epoch
side-by-side table at the end of a Hydra multirun (`hydra.callbacks`). Runs that name a `data.fold`
(cross-validation) also get each recipe's folds with mean ± standard deviation and the paired differences
between recipes (in Markdown after the table; `--folds` prints only that, in Markdown or JSON)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ftlab.errors import FtlabError, report_errors
from ftlab.runs.report import DEFAULT_TARGET, TABLE_FORMATS, epoch_table, fold_report, load_runs, plot, render


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of `python -m ftlab.report`."""
    parser = argparse.ArgumentParser(
        prog="python -m ftlab.report",
        description="Compare the runs under a sweep or run folder: a table (best first) and optional curves.",
    )
    parser.add_argument("folder", help="a run folder, a multirun sweep folder, or any folder holding runs")
    parser.add_argument("--format", choices=TABLE_FORMATS, default="markdown", help="table format (markdown)")
    parser.add_argument("--plot", metavar="OUT.png", help="also draw val accuracy and val loss curves")
    parser.add_argument(
        "--target", type=float, default=DEFAULT_TARGET, help=f"accuracy for 'epochs to' ({DEFAULT_TARGET})"
    )
    parser.add_argument(
        "--epochs", action="store_true", help="also print val accuracy per epoch, side by side"
    )
    parser.add_argument(
        "--folds",
        action="store_true",
        help="only the cross-validation summary: each recipe's folds (mean ± std) and paired differences",
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="add each stage's final weight drift from the pretrained weights and gradient norm",
    )
    return parser.parse_args(argv)


@report_errors
def main(argv: Sequence[str] | None = None) -> None:
    """Print the report of a folder of runs."""
    args = parse_args(argv)
    runs = load_runs(args.folder)
    folds = fold_report(runs, "json" if args.format == "json" else "markdown")
    if args.folds:
        if folds is None:
            raise FtlabError(
                f"--folds: no run under {args.folder} names a data.fold (a cross-validation sweep runs "
                "python -m ftlab.train -m data.fold='range(5)' ...)."
            )
        print(folds)
        return
    print(render(runs, args.format, args.target, args.diagnostics))
    if folds is not None and args.format == "markdown":
        print("\n" + folds)
    if args.epochs:
        print("\n" + epoch_table(runs, args.target))
    if args.plot:
        print(f"curves: {plot(runs, args.plot)}", file=sys.stderr)


if __name__ == "__main__":
    main()
