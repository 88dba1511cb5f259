"""Offline experiments, shrunk, network blocked: `make demo` and the pretrained_vs_scratch sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ftlab.errors import FtlabError
from ftlab.runs import report
from ftlab.training.settings import load_settings
from tests.data.sources.test_fashion_mnist import PACKAGED, write_fake_package
from tests.helpers.cli import offline_env, run_cli

CONFUSABLE = ["tshirt_top", "pullover", "coat", "shirt"]
SHRINK = [
    "trainer=cpu",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=8",
    "data.image_size=32",
    "trainer.max_epochs=2",
    "callbacks.rich_progress_bar=null",
]


def _isolated(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """Overrides and environment for a run that can only use what is on disk: no network, empty hub cache.

    The real Debian files when installed, else a generated package in the same layout.
    """
    args = [f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}"]
    if not PACKAGED:
        args.append(f"data.system_dir={write_fake_package(tmp_path / 'package')}")
    return args, offline_env(TORCH_HOME=str(tmp_path / "torch_home"))


def test_demo_is_the_documented_experiment(compose_cfg):
    settings = load_settings(compose_cfg(["+experiment=offline_demo"]))
    model, finetune, data = settings.model, settings.finetune, settings.data
    assert data.source == "fashion_mnist" and data.classes == CONFUSABLE  # type: ignore[attr-defined]
    assert (data.train_size, data.val_size) == (1000, 600)  # type: ignore[attr-defined]
    assert (model.backbone, model.weights) == ("efficientnet_lite0", "IMAGENET1K_V1")
    assert finetune.strategy == "freeze_unfreeze"
    assert 0 < finetune.unfreeze_at_epoch < settings.trainer["max_epochs"]  # type: ignore[attr-defined]


def test_pretrained_vs_scratch_changes_only_the_weights(compose_cfg):
    """Both arms: the demo's data, image size, epochs and optimizer; one schedule; only the weights differ."""
    arms = {}
    for weights in ("IMAGENET1K_V1", "null"):
        cfg = compose_cfg(["+experiment=pretrained_vs_scratch", f"model.weights={weights}"])
        OmegaConf.resolve(cfg)
        arms[weights] = OmegaConf.to_container(cfg)
    pretrained, scratch = arms["IMAGENET1K_V1"], arms["null"]
    assert (pretrained["model"].pop("weights"), scratch["model"].pop("weights")) == ("IMAGENET1K_V1", None)
    same = ("model", "data", "finetune", "param_groups", "optimizer", "scheduler", "runtime", "trainer")
    for key in (*same, "seed"):
        assert pretrained[key] == scratch[key], key
    assert pretrained["finetune"]["strategy"] == "full"  # a random backbone must train from epoch 0
    demo = OmegaConf.to_container(compose_cfg(["+experiment=offline_demo"]), resolve=True)
    for key in ("data", "optimizer", "scheduler"):
        assert pretrained[key] == demo[key], key
    assert pretrained["trainer"]["max_epochs"] == demo["trainer"]["max_epochs"]


def test_demo_runs_offline_with_packaged_weights_and_data(tmp_path):
    args, env = _isolated(tmp_path)
    result = run_cli("ftlab.train", ["+experiment=offline_demo", *SHRINK, *args], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in (tmp_path / "logs" / "offline_demo").iterdir() if p.is_dir()]
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0] / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("val/acc")) == 2
    assert "per-epoch metrics" in result.stdout and "val/acc" in result.stdout
    meta = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["ftlab"]
    assert meta["weights_id"] == "EfficientNet_Lite0_Weights.IMAGENET1K_V1"
    assert meta["class_names"] == CONFUSABLE
    assert not list((tmp_path / "torch_home").rglob("*.pth"))  # nothing was downloaded
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_pretrained_vs_scratch_sweep_prints_the_comparison(tmp_path):
    args, env = _isolated(tmp_path)
    sweep = tmp_path / "sweep"
    result = run_cli(
        "ftlab.train",
        ["-m", "+experiment=pretrained_vs_scratch", "seed=0", *SHRINK, *args, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {run.overrides["model.weights"]: run for run in report.load_runs(sweep)}
    assert set(runs) == {"IMAGENET1K_V1", "null"}
    for weights, run in runs.items():
        meta = torch.load(run.path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
            "ftlab"
        ]
        assert meta["weights_id"] == (
            None if weights == "null" else "EfficientNet_Lite0_Weights.IMAGENET1K_V1"
        )
    scratch_final = runs["null"].val_acc[2]
    assert f"target: {scratch_final:.4f} = final val/acc of model.weights=null" in result.stdout
    table = result.stdout[result.stdout.index("| epoch |") :].splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header == ["epoch", "model.weights=IMAGENET1K_V1", "model.weights=null"]
    for epoch in (1, 2):
        cells = [cell.strip() for cell in table[1 + epoch].strip("|").split("|")]
        assert float(cells[1]) == pytest.approx(runs["IMAGENET1K_V1"].val_acc[epoch], abs=5e-5)
        assert float(cells[2]) == pytest.approx(runs["null"].val_acc[epoch], abs=5e-5)
    last = [cell.strip() for cell in table[4].strip("|").split("|")]
    assert last[0].startswith("epochs to")
    assert last[2] == str(runs["null"].epochs_to(scratch_final))


def test_offline_error_points_to_the_demo(tmp_path, monkeypatch):
    """When CIFAR-10 and torchvision weights are out of reach, the preflight names the offline demo."""
    from ftlab.data.sources.cifar10 import Cifar10Source
    from ftlab.models import preflight

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    source = Cifar10Source(root=str(tmp_path), classes=["cat", "dog"])
    with pytest.raises(FtlabError, match=r"make demo.*\+experiment=offline_demo"):
        preflight.check(source, "resnet18", "IMAGENET1K_V1")
