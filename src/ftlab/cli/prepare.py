"""`python -m ftlab.prepare +experiment=...`: download every asset an experiment needs, then go offline.

`python -m ftlab.prepare +to_litdata=<folder or s3://...> data=<source> [data.train_size=N ...]` instead
writes the composed source's train/val split as litdata chunks for `data=litdata data.root=<folder>`
(`+litdata_workers=N` processes; only the data's own files are fetched, not the model's weights).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, open_dict
from rich.console import Console

from ftlab.config.check import check_command_line
from ftlab.config.location import config_dir
from ftlab.data import build_source
from ftlab.data.sources import Source
from ftlab.data.sources.litdata import write_chunks
from ftlab.errors import FtlabError, report_errors
from ftlab.models import preflight
from ftlab.training.settings import load_settings


def _fetch_data(source: Source) -> None:
    """Fetch the source's own missing files (archives), nothing else."""
    for asset in source.assets():
        if not asset.present:
            if asset.fetch is None:
                raise FtlabError(f"{asset.description} is missing at {asset.path} and cannot be downloaded.")
            asset.fetch()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
@report_errors
def _hydra_main(cfg: DictConfig) -> None:
    """Fetch the data archive and the weights of the composed experiment, or write litdata chunks."""
    console = Console()
    with open_dict(cfg):  # prepare's own options, beside the training config
        out_dir, workers = cfg.pop("to_litdata", None), cfg.pop("litdata_workers", 1)
    settings = load_settings(cfg)
    source = build_source(settings.data, settings.seed)
    if out_dir is not None:
        if not isinstance(workers, int) or workers < 1:
            raise FtlabError(f"+litdata_workers={workers!r}: give a whole number of processes, 1 or more.")
        _fetch_data(source)
        train, val = source.load()
        write_chunks(train, val, source.classes, str(out_dir), workers=workers)
        console.print(
            f"wrote {len(train)} train + {len(val)} val images of {len(source.classes)} classes to "
            f"{out_dir}; train with: data=litdata data.root={out_dir}"
        )
        return
    model = settings.model
    for asset in preflight.fetch_missing(source, model.backbone, model.weights):
        console.print(f"ready: {asset.description}: {asset.path}")


@report_errors
def main() -> None:
    """The command line is checked (old keys, unknown keys, wrong types) before Hydra runs the command."""
    check_command_line(
        "train", [a for a in sys.argv[1:] if not a.startswith(("+to_litdata=", "+litdata_workers="))]
    )
    _hydra_main()


if __name__ == "__main__":
    main()
