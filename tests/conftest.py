"""Shared fixtures: composing the real Hydra config, generated assets, a blocked network."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from ftlab.config import config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = config_dir()

# Overrides that shrink any run to seconds on a 2-core CPU.
TINY = [
    "trainer=cpu",
    "data.train_size=24",
    "data.val_size=12",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "callbacks.rich_progress_bar=null",
]


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


DEAD_PROXY = "http://127.0.0.1:9"  # discard port: connections are refused at once


def offline_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess whose HTTP(S) traffic cannot leave the machine."""
    env = dict(os.environ)
    env.update(
        {
            "HTTP_PROXY": DEAD_PROXY,
            "HTTPS_PROXY": DEAD_PROXY,
            "http_proxy": DEAD_PROXY,
            "https_proxy": DEAD_PROXY,
            "NO_PROXY": "",
            "no_proxy": "",
        }
    )
    env.update(extra)
    return env


def run_cli(
    module: str, args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `python -m <module> <args>` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env or offline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_fake_cifar(root: Path, per_class_train: int = 12, per_class_test: int = 6) -> Path:
    """A CIFAR-10 archive in the real pickle layout; pixel (0,0,0) holds the CIFAR label, for checking."""
    rng = np.random.default_rng(0)
    folder = root / "build" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(per_class: int, name: str) -> None:
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        data[:, 0] = labels * 20
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "batch_label": name,
                    "labels": labels.tolist(),
                    "data": data,
                    "filenames": [f"img{i}.png" for i in range(len(labels))],
                },
                f,
            )

    for i in range(1, 6):
        batch(per_class_train // 5 + (1 if i <= per_class_train % 5 else 0), f"data_batch_{i}")
    batch(per_class_test, "test_batch")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                "label_names": [
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                ],
                "num_vis": 3072,
                "num_cases_per_batch": 10000,
            },
            f,
        )
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


def write_fake_hub_weights(torch_home: Path, name: str = "resnet18", weights: str = "IMAGENET1K_V1") -> Path:
    """A randomly initialised state dict saved under the file name torchvision's download would use."""
    import torch
    import torchvision

    enum = torchvision.models.get_model_weights(name)[weights]
    model = torchvision.models.get_model(name, weights=None)
    path = torch_home / "hub" / "checkpoints" / Path(enum.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def run_clis(
    calls: list[tuple[str, list[str]]], cwd: Path, envs: list[dict[str, str] | None] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run several `python -m <module> <args>` subprocesses at once (`envs`: one environment per call)."""
    from concurrent.futures import ThreadPoolExecutor

    envs = envs or [None] * len(calls)
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [
            pool.submit(run_cli, m, args, cwd, env) for (m, args), env in zip(calls, envs, strict=True)
        ]
        return [f.result() for f in futures]


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
