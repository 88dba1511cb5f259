"""`python -m ftlab.bench [--quick] [--json PATH] [--main-job ...] [--serve ...] [--exports ...] [--layout]`:
ftlab against a hand-written PyTorch loop, the feature cache against no cache (end to end and per epoch), and
with --main-job the real main command on stand-in assets against the whole-network schedule, measured in one
process. --serve measures instead `python -m ftlab.serve` under a bounded load beside ftlab.predict's batched
throughput on the same images; `--exports ckpt_path=<ckpt>` each export format's val accuracy and CPU latency
beside the checkpoint's; --layout alone: the NCHW/NHWC table behind runtime.channels_last=auto."""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from ftlab.benchmark.exports import ExportsOptions, exports_benchmark, exports_table
from ftlab.benchmark.layout import LayoutOptions
from ftlab.benchmark.main_job import MainJobOptions
from ftlab.benchmark.report import render, write_json
from ftlab.benchmark.serve import ServeBenchOptions, render_serve, serve_benchmark
from ftlab.benchmark.suite import run
from ftlab.errors import FtlabError, report_errors


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
    job.add_argument(
        "--main-job-variant",
        action="append",
        nargs="+",
        default=[],
        metavar="NAME [KEY=VALUE ...]",
        help="one more main-job arm in the same run, e.g. --main-job-variant compiled runtime.compile=true "
        "(repeatable; ratios against the main arm in one run)",
    )
    parser.add_argument(
        "--exports",
        nargs="+",
        metavar="KEY=VALUE",
        help="only the export formats: ckpt_path=<ckpt> [calibration_images=128 repeats=20 out_dir=<folder>]",
    )
    served = parser.add_argument_group("serving (python -m ftlab.serve under load; replaces the other parts)")
    served.add_argument("--serve", action="store_true", help="only the serving benchmark")
    served.add_argument(
        "--serve-ckpt", metavar="PATH", help="checkpoint to serve (default: train a tiny run)"
    )
    served.add_argument("--serve-clients", type=int, default=32, help="concurrent clients (default 32)")
    served.add_argument("--serve-seconds", type=float, default=20.0, help="length of the load (default 20)")
    served.add_argument("--serve-images", type=int, default=64, help="distinct image files (default 64)")
    served.add_argument(
        "--serve-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="server option, e.g. serve.max_batch_size=32",
    )
    return parser.parse_args(argv)


def _variants(given: list[list[str]]) -> dict[str, list[str]]:
    """`--main-job-variant NAME KEY=VALUE ...` -> {NAME: overrides}; a bad one is one paragraph."""
    variants: dict[str, list[str]] = {}
    for name, *overrides in given:
        if "=" in name or name in variants:
            raise FtlabError(
                f"--main-job-variant {name!r}: give a new name first, then its overrides, e.g. "
                "--main-job-variant compiled runtime.compile=true."
            )
        variants[name] = overrides
    return variants


def main(argv: list[str] | None = None, report: Callable[[Table], None] | None = None) -> dict[str, Any]:
    args = parse(argv)
    warnings.filterwarnings("ignore")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "ftlab.features.cache"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.exports:
        return _exports(args, report or Console(width=120).print)
    if args.serve:
        options = ServeBenchOptions(
            ckpt_path=args.serve_ckpt,
            clients=args.serve_clients,
            seconds=args.serve_seconds,
            images=args.serve_images,
            serve_overrides=list(args.serve_override),
        )
        served = serve_benchmark(options)
        (report or Console(width=120).print)(render_serve(served))
        if args.json:
            write_json(served, args.json)
        return served
    main_job = None
    if args.main_job or args.main_job_only:
        main_job = MainJobOptions(
            epochs=args.main_job_epochs,
            train_size=args.main_job_train_size,
            val_size=args.main_job_val_size,
            baseline_epochs=args.main_job_baseline_epochs,
            baseline=not args.no_baseline,
            extra=list(args.main_job_override),
            variants=_variants(args.main_job_variant),
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
