"""`python -m ftlab.train`: fine-tune a backbone, log to TensorBoard, keep the best checkpoint."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ftlab.config.check import check_command_line
from ftlab.config.location import config_dir
from ftlab.errors import report_errors
from ftlab.training.run import train


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
@report_errors
def _hydra_main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the metric named by `optimized_metric` (for sweepers)."""
    metrics, _ = train(cfg)
    name = cfg.get("optimized_metric")
    if name == "val/acc" and name not in metrics and "val/mAP" in metrics:
        name = "val/mAP"  # multi-label runs log no accuracy: their sweeps optimise macro mAP
    return metrics.get(name) if name else None


@report_errors
def main() -> None:
    """The command line is checked (old keys, unknown keys, wrong types) before Hydra runs the job."""
    check_command_line("train")
    _hydra_main()


if __name__ == "__main__":
    main()
