"""Sweeps through the real CLI: an Optuna search and a parallel joblib sweep; cluster launchers compose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.plugins.launcher import Launcher
from hydra.utils import get_class
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ftlab.cli import report
from ftlab.runs.report import load_runs, render
from tests.helpers.cli import CONF, TINY, run_cli

FAST = [*TINY, "debug=fast", "trainer.max_epochs=1"]


def _sweep_dir(logs: Path) -> Path:
    (sweep,) = (logs / "smoke" / "multirun").iterdir()
    return sweep


def test_optuna_search_runs_three_trials_and_reports(
    optuna_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = optuna_sweep
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.name == "optuna"
    space = OmegaConf.load(CONF / "hparams_search" / "optuna.yaml").hydra.sweeper.params
    assert set(results.best_params) == set(space)
    runs = load_runs(sweep)
    assert len(runs) == 3
    lrs = set()
    for run in runs:
        lr = float(run.overrides["optimizer.lr"])
        assert 1e-4 <= lr <= 3e-3
        assert run.overrides["finetune.unfreeze_at_epoch"] in {"0", "1", "2"}
        assert 0.5 <= float(run.overrides["param_groups.lr_decay"]) <= 1.0
        lrs.add(lr)
    assert len(lrs) == 3, "each trial samples its own learning rate"
    # the sweeper maximized what train.main returned: the last val/acc of the best trial
    finals = [run.val_acc[max(run.val_acc)] for run in runs]
    assert results.best_value == pytest.approx(max(finals), abs=1e-6)
    table = render(runs)
    assert "optimizer.lr" in table and table.count("\n") == 4  # header, rule, one row per trial
    report.main([str(sweep), "--format", "json", "--plot", str(tmp_path / "curves.png")])
    rows = json.loads(capsys.readouterr().out)
    assert {float(row["overrides"]["optimizer.lr"]) for row in rows} == lrs
    assert rows[0]["best_val_acc"] == pytest.approx(results.best_value, abs=1e-6)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def _logged_span(run_dir: Path) -> tuple[float, float]:
    """Wall-clock interval over which a run wrote its TensorBoard events."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    times = [e.wall_time for tag in events.Tags()["scalars"] for e in events.Scalars(tag)]
    return events.FirstEventTimestamp(), max(times)


@pytest.mark.slow  # two training processes at once: about a minute on a shared 2-core CPU
def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    args = ["-m", "hydra/launcher=joblib", "optimizer.lr=1e-3,3e-4", "+experiment=smoke", *FAST]
    result = run_cli("ftlab.train", [*args, f"paths.log_dir={logs}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel" in result.stdout + result.stderr

    sweep = _sweep_dir(logs)
    runs = load_runs(sweep)
    assert sorted(run.overrides["optimizer.lr"] for run in runs) == ["0.0003", "0.001"]
    assert all(run.best_val_acc is not None for run in runs)
    (start0, end0), (start1, end1) = (_logged_span(sweep / str(n)) for n in (0, 1))
    assert start0 < end1 and start1 < end0, "the two jobs' training overlapped in time"


@pytest.mark.parametrize(
    ("launcher", "extra", "target"),
    [
        (
            "submitit_slurm",
            [
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=4",
                "hydra.launcher.tasks_per_node=4",
            ],
            "SlurmLauncher",
        ),
        (
            "ray",
            ["+hydra.launcher.ray.remote.num_gpus=1", "hydra.launcher.ray.init.address=auto"],
            "RayLauncher",
        ),
    ],
)
def test_cluster_launchers_compose(launcher: str, extra: list[str], target: str) -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[f"hydra/launcher={launcher}", *extra, "trainer=ddp", "+experiment=smoke"],
                return_hydra_config=True,
            )
    finally:
        GlobalHydra.instance().clear()
    node = cfg.hydra.launcher
    assert node._target_.endswith(target)
    assert issubclass(get_class(node._target_), Launcher)
    for override in extra:
        key, _, value = override.partition("=")
        assert str(OmegaConf.select(cfg, key.lstrip("+"))) == value
