"""`ftlab.report` on a cross-validation sweep: each recipe's folds with mean ± sample standard deviation, and
two recipes compared fold by fold (paired difference, its mean, std and t statistic), checked against numpy
and scipy on run folders written by Hydra's and Lightning's own writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.core.utils import _save_config
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf
from scipy import stats

from ftlab.cli import report as cli
from ftlab.runs.report import fold_groups, load_runs

FOLDS, EPOCHS, STEPS = 5, 3, 4  # optimizer steps per epoch


def write_run(
    folder: Path, overrides: list[str], fold: int, acc: list[float], loss: list[float], csv: bool
) -> None:
    """A run folder as `python -m ftlab.train` leaves it: Hydra's .hydra/{config,overrides}.yaml and the
    epoch-level validation metrics through Lightning's TensorBoard (or CSV) logger, `epoch` logged beside
    them as Lightning's logger connector does."""
    config = OmegaConf.create({"data": {"fold": fold, "folds": FOLDS}, "paths": {"output_dir": str(folder)}})
    _save_config(config, "config.yaml", folder / ".hydra")
    _save_config(OmegaConf.create(overrides), "overrides.yaml", folder / ".hydra")
    logger = (
        CSVLogger(folder, name="csv", version="") if csv else TensorBoardLogger(folder, "tensorboard", "")
    )
    for epoch, (a, lo) in enumerate(zip(acc, loss, strict=True)):
        logger.log_metrics({"val/acc": a, "val/loss": lo, "epoch": epoch}, step=(epoch + 1) * STEPS - 1)
    logger.save()
    logger.finalize("success")


@pytest.fixture(scope="module")
def cv_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Two recipes x 5 folds (in shuffled order): `finetune=full` names its fold by the override, the
    linear probe only in its saved config (a fold set by an experiment file) and logs to CSV."""
    root = tmp_path_factory.mktemp("cv")
    rng = np.random.default_rng(0)
    curves = {"full": rng.uniform(0.5, 0.9, (FOLDS, EPOCHS)), "probe": rng.uniform(0.4, 0.8, (FOLDS, EPOCHS))}
    losses = {"full": rng.uniform(0.3, 1.0, (FOLDS, EPOCHS)), "probe": rng.uniform(0.5, 1.2, (FOLDS, EPOCHS))}
    job = 0
    for fold in rng.permutation(FOLDS):
        for recipe in ("full", "probe"):
            overrides = ["+experiment=smoke", f"finetune={'full' if recipe == 'full' else 'linear_probe'}"]
            if recipe == "full":
                overrides.append(f"data.fold={fold}")
            write_run(
                root / str(job),
                overrides,
                int(fold),
                list(curves[recipe][fold]),
                list(losses[recipe][fold]),
                csv=recipe == "probe",
            )
            job += 1
    metrics = {}
    for recipe in ("full", "probe"):
        metrics[f"{recipe}/best_val_acc"] = curves[recipe].max(axis=1)
        metrics[f"{recipe}/final_val_acc"] = curves[recipe][:, -1]
        metrics[f"{recipe}/final_val_loss"] = losses[recipe][:, -1]
    return root, metrics


def test_folds_group_by_recipe_whatever_names_the_fold(cv_sweep: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cv_sweep
    groups = fold_groups(load_runs(root))
    assert [g.label for g in groups] == ["finetune=full", "finetune=linear_probe"]
    assert all(sorted(g.runs) == list(range(FOLDS)) for g in groups)


def test_fold_summary_and_paired_difference_match_numpy_and_scipy(
    cv_sweep: tuple[Path, dict[str, np.ndarray]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, truth = cv_sweep
    cli.main([str(root), "--folds", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    full, probe = out["recipes"]
    for recipe, record in (("full", full), ("probe", probe)):
        for metric in ("best_val_acc", "final_val_acc", "final_val_loss"):
            values = truth[f"{recipe}/{metric}"]
            assert [record["folds"][str(f)][metric] for f in range(FOLDS)] == pytest.approx(values, rel=1e-6)
            assert record[metric]["mean"] == pytest.approx(values.mean(), rel=1e-6)
            assert record[metric]["std"] == pytest.approx(values.std(ddof=1), rel=1e-5)
            assert record[metric]["n"] == FOLDS
    paired = {p["metric"]: p for p in out["paired"]}
    assert set(paired) == {"best_val_acc", "final_val_acc", "final_val_loss"}
    for metric, p in paired.items():
        a, b = truth[f"full/{metric}"], truth[f"probe/{metric}"]
        assert (p["a"], p["b"], p["n"]) == ("finetune=full", "finetune=linear_probe", FOLDS)
        assert [p["differences"][str(f)] for f in range(FOLDS)] == pytest.approx(a - b, rel=1e-5, abs=1e-7)
        assert p["mean"] == pytest.approx((a - b).mean(), rel=1e-5, abs=1e-7)
        assert p["std"] == pytest.approx((a - b).std(ddof=1), rel=1e-5)
        assert p["t"] == pytest.approx(stats.ttest_rel(a, b).statistic, rel=1e-4)


def test_markdown_report_appends_folds_and_paired_table(
    cv_sweep: tuple[Path, dict[str, np.ndarray]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, truth = cv_sweep
    cli.main([str(root)])
    text = capsys.readouterr().out
    assert text.count("\n| ") >= 10  # the run table first, one row per run
    mean, std = truth["full/best_val_acc"].mean(), truth["full/best_val_acc"].std(ddof=1)
    assert "Folds of finetune=full:" in text and f"{mean:.4f} ± {std:.4f}" in text
    diff = truth["full/final_val_loss"] - truth["probe/final_val_loss"]
    assert "Paired difference per fold, finetune=full minus finetune=linear_probe:" in text
    assert f"{diff.mean():.4f} ± {diff.std(ddof=1):.4f}" in text
    assert "paired t (4 df)" in text


def test_folds_flag_without_folds_is_one_paragraph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "run", ["+experiment=smoke"], 0, [0.5], [1.0], csv=False)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("data:\n  fold: null\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(tmp_path), "--folds"])
    assert exit_info.value.code == 2
    assert "--folds: no run under" in " ".join(capsys.readouterr().err.split())
