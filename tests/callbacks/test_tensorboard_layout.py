"""TensorBoard as a user opens it on a sweep: the Custom Scalars tab starts with train+val loss and train+val
accuracy charts, and the runs are named by their swept overrides. Read from a real `tensorboard` server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftlab.runs.report import load_runs, render
from tests.helpers.cli import CONF, TINY, run_cli
from tests.helpers.tensorboard import serve


def _expected_names(sweep: Path) -> set[str]:
    """Each trial's `<job>/tensorboard/<key=value,...>`: its overrides of the keys Optuna searches."""
    params = OmegaConf.load(CONF / "hparams_search" / "optuna.yaml").hydra.sweeper.params
    searched = {str(key).lstrip("+~") for key in params}
    names = set()
    for run in sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir()):
        overrides = [str(o) for o in OmegaConf.load(run / ".hydra" / "overrides.yaml")]
        parts = [o.lstrip("+~") for o in overrides if o.split("=")[0].lstrip("+~") in searched]
        assert len(parts) == len(searched), overrides
        names.add(f"{run.name}/tensorboard/{','.join(parts)}")
    return names


def test_sweep_opens_on_loss_and_accuracy_charts_with_runs_named_by_overrides(optuna_sweep: Path) -> None:
    expected = _expected_names(optuna_sweep)
    layout_path, runs_path = "/data/plugin/custom_scalars/layout", "/data/runs"
    answers = serve(
        optuna_sweep,
        [runs_path, layout_path],
        lambda a: set(a.get(runs_path, [])) >= expected and a.get(layout_path, {}).get("category"),
    )
    assert set(answers[runs_path]) == expected
    first = answers[layout_path]["category"][0]
    assert first["title"] == "loss and accuracy"
    charts = {chart["title"]: chart["multiline"]["tag"] for chart in first["chart"]}
    assert charts == {
        "loss (train vs val)": ["^train/loss$", "^val/loss$"],
        "accuracy (train vs val)": ["^train/acc$", "^val/acc$"],
    }


@pytest.mark.slow  # a two-job training sweep: about a minute on a shared 2-core CPU
def test_command_line_sweep_names_runs_by_swept_values_and_report_reads_them(tmp_path: Path) -> None:
    args = ["-m", "optimizer.lr=0.001,0.01", "finetune=full,linear_probe", "+experiment=smoke", *TINY]
    result = run_cli("ftlab.train", [*args, "debug=fast", f"paths.log_dir={tmp_path / 'logs'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "smoke" / "multirun").iterdir()
    names = {p.parent.relative_to(sweep).as_posix() for p in sweep.rglob("events.out.tfevents.*")}
    assert names == {
        f"{job}/tensorboard/optimizer.lr={lr},finetune={ft}"
        for job, (lr, ft) in enumerate(
            [("0.001", "full"), ("0.001", "linear_probe"), ("0.01", "full"), ("0.01", "linear_probe")]
        )
    }
    rows = json.loads(render(load_runs(sweep), "json"))
    assert len(rows) == 4 and all(len(row["val_acc"]) == 1 for row in rows)
