"""`python -m ftlab.bench [--quick] [--json PATH] [--main-job ...] [--layout]`: ftlab against a hand-written
PyTorch loop, the feature cache against no cache (end to end and per epoch), with --main-job the real main
command on stand-in assets against the whole-network schedule, measured in one process; --layout alone: the
NCHW/NHWC table behind runtime.channels_last=auto."""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from ftlab.benchmark.layout import LayoutOptions
from ftlab.benchmark.main_job import MainJobOptions
from ftlab.benchmark.report import render, write_json
from ftlab.benchmark.suite import run


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ftlab.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute on a 2-core CPU")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--layout",
        action="store_true",
        help="only the memory-format table behind runtime.channels_last=auto: a training step of every "
        "backbone family in NCHW and NHWC, fp32 and bf16 (with --quick: smaller and fewer steps)",
    )
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, report: Callable[[Table], None] | None = None) -> dict[str, Any]:
    args = parse(argv)
    warnings.filterwarnings("ignore")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "ftlab.features.cache"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
    layout = None
    if args.layout:
        layout = LayoutOptions(batch_size=16, image_size=96, rounds=2) if args.quick else LayoutOptions()
    loops = not (args.main_job_only or args.layout)
    result = run(args.quick, main_job=main_job, loops=loops, layout=layout)
    (report or Console(width=120).print)(render(result))
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
