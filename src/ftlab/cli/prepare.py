"""`python -m ftlab.prepare +experiment=...`: download every asset an experiment needs, then go offline.

`python -m ftlab.prepare +to_litdata=<folder or s3://...> data=<source> [data.train_size=N ...]` instead
writes the composed source's train/val split as litdata chunks for `data=litdata data.root=<folder>`
(`+litdata_workers=N` processes; only the data's own files are fetched, not the model's weights).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig
from rich.console import Console

from ftlab.config.location import config_dir
from ftlab.config.schemas import checked
from ftlab.data import build_source
from ftlab.data.sources import Source
from ftlab.data.sources.litdata import write_chunks
from ftlab.errors import FtlabError, report_errors
from ftlab.models import preflight


def _fetch_data(source: Source) -> None:
    """Fetch the source's own missing files (archives), nothing else."""
    for asset in source.assets():
        if not asset.present:
            if asset.fetch is None:
                raise FtlabError(f"{asset.description} is missing at {asset.path} and cannot be downloaded.")
            asset.fetch()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
@report_errors
def main(cfg: DictConfig) -> None:
    """Fetch the data archive and the weights of the composed experiment, or write litdata chunks."""
    console = Console()
    source = build_source(cfg.data, cfg.seed)
    out_dir = cfg.get("to_litdata")
    if out_dir is not None:
        workers = cfg.get("litdata_workers", 1)
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
    model_cfg = checked(cfg, "model")
    for asset in preflight.fetch_missing(source, model_cfg.backbone, model_cfg.weights):
        console.print(f"ready: {asset.description}: {asset.path}")


if __name__ == "__main__":
    main()
