"""Rank candidate backbones on one data set from their frozen features.

For each candidate (`name` or `name:weights`, where name is a `model=` option or any backbone name and
`weights` overrides its `model.weights`, e.g. `resnet18:null` for a random init) whose weights resolve, the
pooled penultimate features of every image are computed once, through the feature cache's own builder
(`features.build.from_images`: eval mode, the run's precision context, the data module's deterministic
pipeline), then scored by LogME, kNN accuracy and linear-probe accuracy (`selection.scores`). A candidate
whose weights do not resolve is skipped with the reason; once `time_limit` seconds are spent, the remaining
candidates are skipped too.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ftlab.config.location import config_dir
from ftlab.config.registry import register
from ftlab.data import build_datamodule
from ftlab.data.settings import DataSettings
from ftlab.data.sources.base import Source
from ftlab.errors import FtlabError, did_you_mean
from ftlab.features import build as feature_build
from ftlab.features.planner import Segment
from ftlab.features.settings import CacheSettings
from ftlab.features.store import FeatureStore, Refused
from ftlab.models import preflight
from ftlab.models.backbones import check_name, resolve_weights
from ftlab.models.module import Classifier
from ftlab.selection.scores import knn_accuracy, logme, probe_accuracy

log = logging.getLogger(__name__)

SCORES = ("logme", "knn", "probe")
EVALUATIONS = ("cv", "val")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")
UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds of `10m`, `90s`, `1.5h` or a plain number of seconds; None stays None (no limit)."""
    if text is None:
        return None
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = DURATION.match(str(text))
        if not match:
            raise FtlabError(
                f"select.time_limit={text!r} is not a duration: give seconds (600), or a number with s, m or "
                "h (90s, 10m, 1h), or null for no limit."
            )
        seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds <= 0:
        raise FtlabError(f"select.time_limit={text!r} must be positive (or null for no limit).")
    return seconds


@register("select", "settings")
@dataclass
class SelectSettings:
    """`select.*`: which backbones to rank and how."""

    # `name` (a model= option or backbone name) or `name:weights` (e.g. resnet18:null for a random init)
    candidates: list[str] = field(default_factory=lambda: ["efficientnet_lite0", "efficientnet_lite1"])
    time_limit: str | None = None  # e.g. 10m, 90s, 1h: no new candidate starts once this is spent
    rank_by: str = "logme"  # logme | knn | probe: the score that orders the table and picks the winner
    evaluate: str = "cv"  # cv: kNN and probe cross-validated on train; val: trained on train, scored on val
    folds: int = 5  # cross-validation folds (evaluate=cv)
    knn_k: int = 10  # neighbours of the kNN vote
    probe_c: float = 1.0  # inverse L2 strength of the logistic-regression probe (scikit-learn's C)
    cache: bool = False  # keep each candidate's features on disk (features folder): a rerun loads them

    def __post_init__(self) -> None:
        if not self.candidates:
            raise FtlabError(
                "select.candidates is empty: list at least one backbone, e.g. [efficientnet_lite0]."
            )
        for key, value, options in (
            ("rank_by", self.rank_by, SCORES),
            ("evaluate", self.evaluate, EVALUATIONS),
        ):
            if value not in options:
                raise FtlabError(
                    f"select.{key}={value!r} is not one of {', '.join(options)}."
                    f"{did_you_mean(value, options)}"
                )
        if self.folds < 2 or self.knn_k < 1 or self.probe_c <= 0:
            raise FtlabError(
                f"select.folds={self.folds}, select.knn_k={self.knn_k}, select.probe_c={self.probe_c}: give "
                "folds >= 2, knn_k >= 1 and probe_c > 0."
            )
        parse_duration(self.time_limit)


@dataclass
class Candidate:
    """One entry of select.candidates: the `model=` option (or backbone name), its backbone and weights."""

    spec: str
    option: str | None  # conf/model/<option>.yaml, when the name is one
    backbone: str
    weights: str | None

    @property
    def train_overrides(self) -> list[str]:
        """The `ftlab.train` overrides that build this backbone with these weights."""
        weights = "null" if self.weights is None else str(self.weights)
        if self.option is not None:
            default = model_option(self.option)[1]
            return [f"model={self.option}"] + (
                [] if weights == str(default) else [f"model.weights={weights}"]
            )
        return [f"model.backbone={self.backbone}", f"model.weights={weights}"]


def model_option(name: str) -> tuple[str, str | None]:
    """(backbone, weights) of the `model=<name>` option (conf/model/<name>.yaml)."""
    node = yaml.safe_load((config_dir() / "model" / f"{name}.yaml").read_text(encoding="utf-8"))
    weights = node.get("weights", "DEFAULT")
    return str(node["backbone"]), None if weights is None else str(weights)


def parse_candidate(spec: str) -> Candidate:
    """`name` or `name:weights` (weights: a member name, null, or a state-dict path)."""
    name, sep, weights_text = str(spec).strip().partition(":")
    option = name if (config_dir() / "model" / f"{name}.yaml").is_file() else None
    backbone, weights = model_option(name) if option else (name, "DEFAULT")
    if sep:
        weights = None if weights_text.lower() in ("null", "none", "") else weights_text
    return Candidate(str(spec).strip(), option, backbone, weights)


@dataclass
class Result:
    """One candidate's row: its scores and seconds, or why it was skipped."""

    candidate: str
    backbone: str
    weights: str | None  # the resolved weights id (None: random init)
    status: str = "ranked"  # ranked | skipped
    reason: str | None = None  # why it was skipped
    logme: float | None = None
    knn: float | None = None
    probe: float | None = None
    feature_dim: int | None = None
    images: int | None = None
    seconds: float | None = None  # features + scores
    feature_seconds: float | None = None  # of which computing (or loading) the features
    features_from: str | None = None  # "from images" or "loaded" (select.cache)
    train_overrides: list[str] = field(default_factory=list)


@dataclass
class Selection:
    """Every candidate's result, best first by `rank_by`, skipped ones last."""

    rank_by: str
    evaluate: str
    precision: str
    results: list[Result]
    seconds: float

    @property
    def ranked(self) -> list[Result]:
        return [r for r in self.results if r.status == "ranked"]

    @property
    def winner(self) -> Result | None:
        return self.ranked[0] if self.ranked else None

    def to_json(self) -> dict[str, Any]:
        return {
            "rank_by": self.rank_by,
            "evaluate": self.evaluate,
            "precision": self.precision,
            "seconds": self.seconds,
            "winner": self.winner.candidate if self.winner else None,
            "results": [asdict(r) for r in self.results],
        }


def skip_reason(candidate: Candidate) -> str | None:
    """Why the candidate's backbone or weights cannot be used here, or None when they resolve.

    The preflight's own rules: an unknown backbone or weights name, a missing state-dict file, or a weights
    file that is neither on disk (torch hub cache, weights package) nor downloadable from here.
    """
    try:
        check_name(candidate.backbone)
        resolve_weights(candidate.backbone, candidate.weights)
        for asset in preflight.weights_assets(candidate.backbone, candidate.weights):
            if asset.present:
                continue
            why = preflight.reachable(asset.url) if asset.url else "no download source"
            if why is not None:
                return f"{asset.description} is not at {asset.path} and cannot be downloaded ({why})"
    except FtlabError as err:
        return str(err).split("\n")[0]
    return None


@dataclass
class FeatureRun:
    """How features are computed: device, precision (a Lightning value) and where caches go."""

    device: torch.device
    precision: str
    cache_dir: Path
    keep_on_disk: bool
    seed: int


def candidate_features(
    candidate: Candidate, data: DataSettings, source: Source, run: FeatureRun, splits: tuple[str, ...]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str, str | None]:
    """Pooled penultimate features (float32) and labels of each split, how they were made, the weights id.

    The candidate becomes a `Classifier` (its weights, a fresh head, the preprocessing of its weights at
    `data.image_size`); its stages up to the pooling are the frozen prefix the feature cache builds once per
    image, in eval mode and under the run's precision (a Trainer holds the precision plugin).
    """
    import lightning as L

    torch.manual_seed(run.seed)  # a random-init candidate is the same network on every run
    module = Classifier(
        candidate.backbone, list(source.classes), weights=candidate.weights, image_size=data.image_size
    )
    module.to(run.device)
    quiet = logging.getLogger("lightning.pytorch")  # its start-up lines (accelerator, AMP, tips)
    level, quiet.level = quiet.level, logging.WARNING
    try:
        trainer = L.Trainer(
            accelerator=run.device.type,
            devices=[run.device.index or 0] if run.device.type == "cuda" else 1,
            precision=run.precision,  # type: ignore[arg-type]
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    finally:
        quiet.setLevel(level)
    module.trainer = trainer
    names = list(module.stages)
    boundary = names.index("pool") + 1 if "pool" in names else len(names)
    datamodule = build_datamodule(data, source, module.preprocessing, seed=run.seed)
    datamodule.setup("validate")
    config = CacheSettings(cache="disk" if run.keep_on_disk else "memory", dtype="float32")
    store = FeatureStore(config, module, datamodule, run.cache_dir)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    how = "from images"
    for split in splits:
        made = feature_build.from_images(
            store, split, Segment(0, 1, boundary), views=1, dtype="float32", shareable=run.keep_on_disk
        )
        if isinstance(made, Refused):
            raise FtlabError(f"select: the {split} features of {candidate.spec} cannot be kept: {made.why}.")
        built, how = made
        features = built.dataset.features[0].float().flatten(1).cpu().numpy()
        labels = datamodule.raw_labels(split).cpu().numpy()
        out[split] = (features, labels)
    return out, how, module.weights_id


def score(
    features: dict[str, tuple[np.ndarray, np.ndarray]], settings: SelectSettings, seed: int
) -> dict[str, float]:
    """LogME on the train features; kNN and probe accuracy cross-validated on train, or scored on val."""
    x, y = features["train"]
    val = features.get("val") if settings.evaluate == "val" else None
    return {
        "logme": logme(x, y),
        "knn": knn_accuracy(x, y, k=settings.knn_k, folds=settings.folds, seed=seed, val=val),
        "probe": probe_accuracy(x, y, folds=settings.folds, seed=seed, c=settings.probe_c, val=val),
    }


def select(
    settings: SelectSettings,
    data: DataSettings,
    source: Source,
    run: FeatureRun,
    clock: Callable[[], float] = time.perf_counter,
) -> Selection:
    """Score every candidate in order until `settings.time_limit` is spent; rank by `settings.rank_by`."""
    limit = parse_duration(settings.time_limit)
    splits = ("train", "val") if settings.evaluate == "val" else ("train",)
    start = clock()
    results: list[Result] = []
    for spec in settings.candidates:
        candidate = parse_candidate(spec)
        result = Result(
            spec, candidate.backbone, candidate.weights, train_overrides=candidate.train_overrides
        )
        results.append(result)
        spent = clock() - start
        if limit is not None and spent >= limit:
            result.status = "skipped"
            result.reason = f"select.time_limit={settings.time_limit} spent ({spent:.0f} s) before it started"
            continue
        reason = skip_reason(candidate)
        if reason is not None:
            result.status, result.reason = "skipped", reason
            log.info("select: %s skipped: %s", spec, reason)
            continue
        began = clock()
        features, result.features_from, result.weights = candidate_features(
            candidate, data, source, run, splits
        )
        result.feature_seconds = clock() - began
        for key, value in score(features, settings, run.seed).items():
            setattr(result, key, value)
        result.feature_dim = int(features["train"][0].shape[1])
        result.images = int(sum(len(f[0]) for f in features.values()))
        result.seconds = clock() - began
        log.info(
            "select: %s logme %.4f knn %.4f probe %.4f (%.1f s)",
            spec,
            result.logme,
            result.knn,
            result.probe,
            result.seconds,
        )
    ranked = sorted(
        (r for r in results if r.status == "ranked"),
        key=lambda r: -(getattr(r, settings.rank_by) or -math.inf),
    )
    skipped = [r for r in results if r.status != "ranked"]
    return Selection(settings.rank_by, settings.evaluate, run.precision, ranked + skipped, clock() - start)


def write_files(selection: Selection, out_dir: Path) -> dict[str, Path]:
    """`select.json`, `select.csv` and the bar plot `select.png` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "select.json", "csv": out_dir / "select.csv", "png": out_dir / "select.png"}
    paths["json"].write_text(json.dumps(selection.to_json(), indent=2), encoding="utf-8")
    columns = ["candidate", "backbone", "weights", "status", "reason", *SCORES, "seconds", "feature_seconds"]
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in selection.results:
            writer.writerow(asdict(r))
    plot(selection, paths["png"])
    return paths


def plot(selection: Selection, path: Path) -> None:
    """One bar panel per score (and the seconds), candidates in rank order, the winner highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = selection.ranked
    names = [r.candidate for r in ranked]
    panels = [
        ("LogME", "logme"),
        ("kNN accuracy", "knn"),
        ("linear-probe accuracy", "probe"),
        ("seconds", "seconds"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 0.5 * len(names) + 1.8), squeeze=False)
    for ax, (title, key) in zip(axes[0], panels, strict=True):
        values = [float(getattr(r, key) or 0.0) for r in ranked]
        colors = ["tab:orange" if i == 0 else "tab:blue" for i in range(len(ranked))]
        ax.barh(names[::-1], values[::-1], color=colors[::-1])
        ax.set_title(title + (" (ranks)" if key == selection.rank_by else ""))
        for y, v in enumerate(values[::-1]):
            ax.text(v, y, f" {v:.3f}" if key != "seconds" else f" {v:.1f}", va="center", fontsize=8)
        if ax is not axes[0][0]:
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def weights_label(result: Result) -> str:
    """The weights id for the table, or `random init`."""
    return "random init" if result.weights is None else str(result.weights)


__all__ = [
    "Candidate",
    "FeatureRun",
    "Result",
    "SelectSettings",
    "Selection",
    "parse_candidate",
    "parse_duration",
    "select",
    "skip_reason",
    "weights_label",
    "write_files",
]
