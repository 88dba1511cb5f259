"""`python -m ftlab.prepare +experiment=...`: download every asset an experiment needs, then go offline."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig
from rich.console import Console

from ftlab.config.location import config_dir
from ftlab.config.schemas import checked
from ftlab.data import build_source
from ftlab.errors import report_errors
from ftlab.training import preflight


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
@report_errors
def main(cfg: DictConfig) -> None:
    """Fetch the data archive and the weights of the composed experiment."""
    model_cfg = checked(cfg, "model")
    source = build_source(cfg.data, cfg.seed)
    console = Console()
    for asset in preflight.fetch_missing(source, model_cfg.backbone, model_cfg.weights):
        console.print(f"ready: {asset.description}: {asset.path}")


if __name__ == "__main__":
    main()
