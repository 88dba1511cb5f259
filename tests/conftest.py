"""Shared fixtures: the real Hydra config composed in-process, an empty torch hub, shared CLI runs."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from tests.helpers.cli import CONF, TINY, run_cli

# A shell starts a background job with SIGINT ignored, and children inherit that: the CLI subprocesses of the
# Ctrl-C tests would never see their SIGINT. A Python handler here resets to the default across exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml with overrides, as `python -m ftlab.train` would, rooted in tmp_path."""

    def _compose(overrides: list[str], config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
            if cfg.paths.data_dir == "data":
                cfg.paths.data_dir = str(tmp_path / "data")
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, so nothing the developer downloaded leaks into a test."""
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of one tiny `+experiment=smoke` training run (CLI, offline), shared by the
    predict / eval / export tests: checkpoints/best.ckpt, .hydra/config.yaml, tensorboard/."""
    root = tmp_path_factory.mktemp("smoke_run")
    result = run_cli("ftlab.train", ["+experiment=smoke", *TINY, f"paths.log_dir={root / 'logs'}"], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (root / "logs" / "smoke").iterdir()
    return run_dir


@pytest.fixture(scope="session")
def optuna_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep folder of a 3-trial `hparams_search=optuna` multirun of tiny freeze_unfreeze smoke runs
    (CLI, offline), shared by the sweep and TensorBoard-review tests."""
    root = tmp_path_factory.mktemp("optuna_sweep")
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "+experiment=smoke"]
    args += ["finetune=freeze_unfreeze", *TINY, "trainer.max_epochs=1", "debug=fast"]
    result = run_cli("ftlab.train", [*args, f"paths.log_dir={root / 'logs'}"], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (root / "logs" / "smoke" / "multirun").iterdir()
    return sweep
