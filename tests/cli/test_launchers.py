"""Sweeps through launchers that really launch: submitit's local executor (SLURM's code path minus the
scheduler), Ray on a local instance the test starts, and joblib with DataLoader worker processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ftlab.cli import report
from tests.helpers.cli import REPO, TINY, offline_env, run_cli

FAST = [*TINY, "+experiment=smoke", "debug=fast", "trainer.max_epochs=1", "callbacks.tensorboard_review=null"]


def _report_rows(logs: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    """`ftlab.report <sweep folder> --format json`: one row per run folder the sweep wrote."""
    (sweep,) = (logs / "smoke" / "multirun").iterdir()
    capsys.readouterr()
    report.main([str(sweep), "--format", "json"])
    return json.loads(capsys.readouterr().out)


def _sweep(tmp_path: Path, launcher: list[str], extra: list[str] | None = None) -> Path:
    logs = tmp_path / "logs"
    args = ["-m", *launcher, "optimizer.lr=1e-3,3e-4", *FAST, *(extra or []), f"paths.log_dir={logs}"]
    env = offline_env(PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(REPO)]))
    result = run_cli("ftlab.train", args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return logs


def _assert_two_runs(rows: list[dict]) -> None:
    assert sorted(row["overrides"]["optimizer.lr"] for row in rows) == ["0.0003", "0.001"]
    assert all(row["best_val_acc"] is not None for row in rows)


@pytest.mark.slow  # two submitit jobs one after the other: about a minute on a shared 2-core CPU
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path: Path, capsys) -> None:
    logs = _sweep(tmp_path, ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"])
    _assert_two_runs(_report_rows(logs, capsys))
    (sweep,) = (logs / "smoke" / "multirun").iterdir()
    assert list((sweep / ".submitit").glob("*/*_result.pkl")), "the jobs went through submitit"


@pytest.mark.slow  # starts Ray (about 10 s) and runs two jobs on it
def test_ray_launcher_runs_a_two_job_sweep_on_a_local_ray_instance(tmp_path: Path, capsys) -> None:
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, include_dashboard=False)
    try:
        address = context.address_info["gcs_address"]
        # connecting to a running cluster: the launcher's default object_store_memory must be unset
        launcher = ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}"]
        logs = _sweep(tmp_path, [*launcher, "+hydra.launcher.ray.init.object_store_memory=null"])
    finally:
        ray.shutdown()
    _assert_two_runs(_report_rows(logs, capsys))


@pytest.mark.slow  # two training processes at once, each with two DataLoader workers
def test_joblib_launcher_with_dataloader_workers(tmp_path: Path, capsys) -> None:
    logs = _sweep(tmp_path, ["hydra/launcher=joblib"], ["data.num_workers=2"])
    _assert_two_runs(_report_rows(logs, capsys))
