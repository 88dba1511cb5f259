"""`python -m ftlab.bench [--quick] [--json PATH] [--main-job ...]`: ftlab against a hand-written PyTorch
loop, the feature cache against no cache (end to end and per epoch), and with --main-job the real main
command on stand-in assets against the whole-network schedule, measured in one process. `--exports
ckpt_path=<ckpt>` measures instead each export format's val accuracy and CPU latency beside the
checkpoint's."""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from ftlab.benchmark.exports import ExportsOptions, exports_benchmark, exports_table
from ftlab.benchmark.main_job import MainJobOptions
from ftlab.benchmark.report import render, write_json
from ftlab.benchmark.suite import run
from ftlab.errors import report_errors


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ftlab.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute on a 2-core CPU")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    job = parser.add_argument_group("main job (python -m ftlab.train +experiment=cats_dogs_cars)")
    job.add_argument("--main-job", action="store_true", help="also run the main job end to end")
    job.add_argument("--main-job-only", action="store_true", help="only the main job (implies --main-job)")
    job.add_argument("--main-job-epochs", type=int, help="trainer.max_epochs (default: the experiment's)")
    job.add_argument("--main-job-train-size", type=int, default=1000, help="training images (default 1000)")
    job.add_argument("--main-job-val-size", type=int, default=600, help="validation images (default 600)")
    job.add_argument(
        "--main-job-baseline-epochs",
        type=int,
        help="epochs of the whole-network arm (default: as the main job); the ratio is over what ran",
    )
    job.add_argument("--no-baseline", action="store_true", help="skip the whole-network arm")
    job.add_argument(
        "--main-job-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override, both arms",
    )
    parser.add_argument(
        "--exports",
        nargs="+",
        metavar="KEY=VALUE",
        help="only the export formats: ckpt_path=<ckpt> [calibration_images=128 repeats=20 out_dir=<folder>]",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, report: Callable[[Table], None] | None = None) -> dict[str, Any]:
    args = parse(argv)
    warnings.filterwarnings("ignore")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "ftlab.features.cache"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.exports:
        return _exports(args, report or Console(width=120).print)
    main_job = None
    if args.main_job or args.main_job_only:
        main_job = MainJobOptions(
            epochs=args.main_job_epochs,
            train_size=args.main_job_train_size,
            val_size=args.main_job_val_size,
            baseline_epochs=args.main_job_baseline_epochs,
            baseline=not args.no_baseline,
            extra=list(args.main_job_override),
        )
    result = run(args.quick, main_job=main_job, loops=not args.main_job_only)
    (report or Console(width=120).print)(render(result))
    if args.json:
        write_json(result, args.json)
    return result


@report_errors
def _exports(args: argparse.Namespace, report: Callable[[Table], None]) -> dict[str, Any]:
    """`--exports`: every export format beside the checkpoint (a user error is one ftlab paragraph)."""
    result = exports_benchmark(ExportsOptions.parse(args.exports))
    report(exports_table(result))
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
