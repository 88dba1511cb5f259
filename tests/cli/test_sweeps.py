"""Sweeps through the real CLI: an Optuna search and a parallel joblib sweep; cluster launchers compose."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.plugins.launcher import Launcher
from hydra.utils import get_class
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from ftlab.callbacks.optuna_trial import PRUNED_ATTR, OptunaTrialReport, build_pruner
from ftlab.cli import report
from ftlab.errors import FtlabError
from ftlab.runs.report import load_runs, render
from hydra_plugins.ftlab_optuna.resumable import tell_pruned
from tests.helpers.cli import CONF, REPO, TINY, offline_env, run_cli
from tests.helpers.trainers import quiet_cpu_trainer

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
    folder = next((run_dir / "tensorboard").rglob("events.out.tfevents.*")).parent  # tensorboard/<overrides>
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
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


class KillOnceAtJob(Callback):
    """SIGKILL the whole sweep (jobs run in the sweeper's process) when job `job` starts training, once."""

    def __init__(self, job: int, marker: str) -> None:
        self.job, self.marker = job, Path(marker)

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().job.num == self.job and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow  # two sweeps of two trials each: 1-4 minutes on a shared 2-core CPU
def test_optuna_search_killed_after_two_of_four_trials_finishes_when_run_again(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={storage}"]
    args += [
        "hydra.sweeper.study_name=resume_me",
        "+experiment=smoke",
        "finetune=freeze_unfreeze",  # the search space tunes its unfreeze epoch
        *FAST,
        "callbacks.tensorboard_review=null",
    ]
    args += [
        f"paths.log_dir={tmp_path / 'logs'}",
        "+callbacks.kill._target_=tests.cli.test_sweeps.KillOnceAtJob",
    ]
    args += ["+callbacks.kill.job=2", f"+callbacks.kill.marker={tmp_path / 'killed'}"]
    env = offline_env(PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(REPO)]))
    first = run_cli("ftlab.train", args, cwd=tmp_path, env=env)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    before = optuna.load_study(study_name="resume_me", storage=storage).trials
    assert [t.state.name for t in before] == ["COMPLETE", "COMPLETE", "RUNNING"]

    again = run_cli("ftlab.train", args, cwd=tmp_path, env=env)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="resume_me", storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and [t.params for t in trials[:2]] == [t.params for t in before[:2]]
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == 4, "no trial ran twice"
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[3].params == before[2].params  # the killed trial ran again with its parameters
    runs = [run for sweep in (tmp_path / "logs" / "smoke" / "multirun").iterdir() for run in load_runs(sweep)]
    assert sum(1 for run in runs if run.val_acc) == 4  # the killed job's folder has no validation


def test_optuna_search_over_keys_the_config_lacks_stops_with_one_paragraph(tmp_path: Path) -> None:
    """The shipped space searches finetune.unfreeze_at_epoch, which finetune=full has no key for; a typo on
    the command line is named too. Both before any trial runs."""
    args = ["-m", "hparams_search=optuna", "+experiment=smoke", "finetune=full", *FAST]
    args += ["hydra.sweeper.n_trials=1", "optimizer.lrr=interval(1e-4,1e-3)", f"paths.log_dir={tmp_path}"]
    result = run_cli("ftlab.train", args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    message = " ".join(result.stderr.split())
    assert "sets finetune.unfreeze_at_epoch, optimizer.lrr, which the composed config has no key" in message
    assert "finetune.strategy=full" in message and "Traceback" not in result.stderr
    assert not (tmp_path / "smoke").exists()  # no trial started


# -- pruned sweeps -----------------------------------------------------------------------------------------


class LogsValAcc(L.LightningModule):
    """A one-weight model whose validation logs the given val/acc each epoch."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = values
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return (self.weight - 1).pow(2).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/acc", self.values[self.current_epoch], on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> Any:
        return DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)

    def val_dataloader(self) -> Any:
        return DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)


def test_a_job_reports_each_epoch_and_a_pruned_trial_is_recorded_pruned(tmp_path: Path) -> None:
    """Two finished trials at 0.9 per epoch; with a median pruner a job at 0.2 stops after epoch 0 and its
    trial is told PRUNED (value: its last report), a job at 0.95 runs its 3 epochs and completes."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = tell_pruned(optuna.create_study(study_name="s", storage=url, direction="maximize"))
    for _ in range(2):
        trial = study.ask()
        for epoch in range(3):
            trial.report(0.9, epoch)
        study.tell(trial, 0.9)
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1}
    epochs_run = {}
    for values in ([0.2, 0.95, 0.95], [0.95, 0.95, 0.95]):
        trial = study.ask()
        report = OptunaTrialReport(url, "s", trial.number, "val/acc", pruner)
        trainer = quiet_cpu_trainer(max_epochs=3, callbacks=[report], num_sanity_val_steps=0)
        trainer.fit(LogsValAcc(values))
        epochs_run[trial.number] = trainer.current_epoch
        study.tell(trial, values[-1])
    assert epochs_run == {2: 1, 3: 3}
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert trials[2].intermediate_values == {0: pytest.approx(0.2)} and trials[2].value == pytest.approx(0.2)
    assert trials[3].intermediate_values == {e: pytest.approx(0.95) for e in range(3)}
    assert trials[2].system_attrs[PRUNED_ATTR] == 0 and PRUNED_ATTR not in trials[3].system_attrs


@pytest.mark.parametrize(
    ("spec", "cls", "options"),
    [
        ("median", optuna.pruners.MedianPruner, {}),
        ("hyperband", optuna.pruners.HyperbandPruner, {}),
        ({"_target_": "optuna.pruners.SuccessiveHalvingPruner", "reduction_factor": 2}, None, {}),
        (None, None, {}),
        ({}, None, {}),
    ],
)
def test_pruners_from_the_sweep_config(spec: Any, cls: Any, options: dict[str, Any]) -> None:
    pruner = build_pruner(spec)
    if spec is None or spec == {}:
        assert pruner is None
    elif cls is None:
        assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner) and pruner._reduction_factor == 2
    else:
        assert type(pruner) is cls


@pytest.mark.slow  # two compositions of the whole config: 20 s on the shared 2-core CPU
def test_pruner_groups_compose_with_their_options() -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            overrides = ["hparams_search=optuna", "hydra/sweeper/pruner=hyperband"]
            cfg = compose(
                "train",
                overrides=[*overrides, "hydra.sweeper.pruner.reduction_factor=2"],
                return_hydra_config=True,
            )
            plain = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    pruner = build_pruner(OmegaConf.to_container(cfg.hydra.sweeper.pruner))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._reduction_factor == 2
    assert build_pruner(OmegaConf.to_container(plain.hydra.sweeper.pruner)) is None


def test_an_unknown_pruner_is_one_paragraph() -> None:
    with pytest.raises(
        FtlabError, match=r"hydra.sweeper.pruner='medain' is not a pruner. Did you mean: median\?"
    ):
        build_pruner("medain")


def _run_folders(logs: Path) -> dict[int, Path]:
    """Job number -> run folder over every sweep of the task (a resumed study numbers its jobs on)."""
    return {
        int(p.name): p
        for sweep in (logs / "smoke" / "multirun").iterdir()
        for p in sweep.iterdir()
        if p.is_dir() and p.name.isdigit()
    }


@pytest.mark.slow  # two sweeps of tiny 3-epoch trials: 3-10 minutes on a shared 2-core CPU
def test_pruned_search_killed_and_run_again_records_pruned_trials(tmp_path: Path) -> None:
    """A median-pruned study of 5 trials killed in its fourth job finishes when the same command runs again;
    each trial's intermediate values are its run's val/acc per epoch, pruned trials stopped early."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["-m", "hparams_search=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=5"]
    args += [f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=pruned"]
    args += ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1"]
    args += ["+experiment=smoke", "finetune=freeze_unfreeze", *TINY, "trainer.max_epochs=3"]
    args += ["callbacks.tensorboard_review=null", f"paths.log_dir={tmp_path / 'logs'}"]
    args += ["+callbacks.kill._target_=tests.cli.test_sweeps.KillOnceAtJob", "+callbacks.kill.job=3"]
    args += [f"+callbacks.kill.marker={tmp_path / 'killed'}"]
    env = offline_env(PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(REPO)]))
    first = run_cli("ftlab.train", args, cwd=tmp_path, env=env, timeout=1800)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    before = optuna.load_study(study_name="pruned", storage=storage).trials
    assert before[-1].state.name == "RUNNING" and len(before) == 4

    again = run_cli("ftlab.train", args, cwd=tmp_path, env=env, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="pruned", storage=storage).trials
    states = [t.state.name for t in trials]
    assert states[3] == "FAIL" and trials[4].params == before[3].params  # the killed trial ran again
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 5 and "PRUNED" in states, states
    folders = _run_folders(tmp_path / "logs")
    for trial in finished:
        (run,) = load_runs(folders[trial.number])
        curve = [run.val_acc[e] for e in sorted(run.val_acc)]
        assert [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)] == pytest.approx(
            curve
        )
        assert len(curve) < 3 if trial.state.name == "PRUNED" else len(curve) == 3
        assert (PRUNED_ATTR in trial.system_attrs) == (trial.state.name == "PRUNED")
