"""`python -m ftlab.select data=<source> 'select.candidates=[efficientnet_lite0,efficientnet_lite1,...]'`.

Ranks backbones on your data before fine-tuning any of them: each candidate whose weights resolve (the others
are listed as skipped, with the reason) computes the pooled penultimate features of every training image once
(the feature cache's builder, under the run's precision), which are then scored by LogME, kNN accuracy and
linear-probe accuracy. Prints a table and the `ftlab.train` command for the winner; writes `select.json`,
`select.csv` and the bar plot `select.png` in the run folder. `select.time_limit=10m` starts no candidate once
ten minutes are spent.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ftlab.config.check import check_command_line, command_options
from ftlab.config.location import config_dir
from ftlab.config.registry import register
from ftlab.data import build_source
from ftlab.data.settings import DataSettings
from ftlab.errors import FtlabError, report_errors
from ftlab.inference.checkpoint import resolve_device
from ftlab.models import preflight
from ftlab.selection.rank import FeatureRun, Selection, SelectSettings, select, weights_label, write_files
from ftlab.training.precision import check_precision, resolve_precision
from ftlab.training.settings import PathsSettings

# Overrides of the select command line that the winner's `ftlab.train` command repeats: the data and seed.
CARRIED = ("data", "seed", "paths.data_dir")


@register("command", "select")
@dataclass
class SelectOptions:
    """`python -m ftlab.select data=<source> 'select.candidates=[...]' [select.time_limit=10m]`."""

    task_name: str = "select"  # names the run folder: logs/select/<timestamp>/
    seed: int = 42  # seed of the train/val split (as in training), of the folds and of random inits
    format: str = "table"  # table: the rich table and the winner's command; json: the results on stdout
    # auto (bf16 autocast where the device computes bf16 natively, else fp32) or a Lightning precision
    precision: str = "auto"
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:<index>
    select: SelectSettings = field(default_factory=SelectSettings)  # candidates, scores, time limit
    data: DataSettings = field(default_factory=DataSettings)  # data=<source>: the images to rank on
    # paths=default: data, logs and output folders
    paths: PathsSettings = field(default_factory=PathsSettings)


def train_command(selection: Selection, overrides: list[str]) -> str | None:
    """The `python -m ftlab.train` command that fine-tunes the winner on the same data."""
    if selection.winner is None:
        return None
    carried = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in CARRIED or o.startswith("data.")]
    return shlex.join(["python", "-m", "ftlab.train", *carried, *selection.winner.train_overrides])


def print_table(selection: Selection, command: str | None) -> None:
    """The ranking as a rich table (best first, skipped last with the reason), then the winner's command."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"ftlab.select: ranked by {selection.rank_by} ({selection.evaluate}, {selection.precision})"
    )
    for column in ("#", "candidate", "weights", "LogME", "kNN acc", "probe acc", "seconds"):
        table.add_column(column, justify="right" if column not in ("candidate", "weights") else "left")
    for i, r in enumerate(selection.results, start=1):
        if r.status != "ranked":
            table.add_row("-", r.candidate, f"skipped: {r.reason}", "", "", "", "")
            continue
        table.add_row(
            str(i),
            r.candidate,
            weights_label(r),
            f"{r.logme:.4f}",
            f"{r.knn:.4f}",
            f"{r.probe:.4f}",
            f"{r.seconds:.1f}",
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(f"total {selection.seconds:.1f} s")
    if command:
        console.print(f"winner: {selection.winner.candidate if selection.winner else None}")
        console.print(command, soft_wrap=True, markup=False, highlight=False)


def run_select(cfg: DictConfig, overrides: list[str]) -> tuple[Selection, SelectOptions, str | None]:
    """Check the options, load the source once, rank the candidates."""
    options = command_options(cfg, SelectOptions, "select")
    if options.format not in ("table", "json"):
        raise FtlabError(f"format={options.format!r}: use table or json.")
    check_precision(options.precision)
    device = resolve_device(options.device)
    precision, reason = resolve_precision(options.precision, device.type)
    source = build_source(options.data, options.seed)
    # the data must be there (or downloadable); a candidate's missing weights only skip that candidate
    preflight.check(source, options.select.candidates[0], None)
    run = FeatureRun(
        device=device,
        precision=str(precision),
        cache_dir=Path(options.paths.data_dir) / ".ftlab_features",
        keep_on_disk=options.select.cache,
        seed=options.seed,
    )
    if reason:
        print(f"precision: {precision} ({reason})", file=sys.stderr)
    selection = select(options.select, options.data, source, run)
    return selection, options, train_command(selection, overrides)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="select")
@report_errors
def _hydra_main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    selection, options, command = run_select(cfg, list(HydraConfig.get().overrides.task))
    out_dir = Path(str(options.paths.output_dir))
    paths = write_files(selection, out_dir)
    if options.format == "json":
        print(json.dumps({**selection.to_json(), "train_command": command}, indent=2))
        return
    print_table(selection, command)
    print(f"files: {paths['json']}, {paths['csv']}, {paths['png']}")


@report_errors
def main() -> None:
    """The command line is checked (unknown keys, wrong types) before Hydra runs the command."""
    check_command_line("select")
    _hydra_main()


if __name__ == "__main__":
    main()
