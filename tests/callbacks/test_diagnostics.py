"""Transfer diagnostics: drift is exactly 0 while a stage is frozen and positive once it trains; the gradient
norm per stage equals one computed by hand with plain autograd."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from ftlab.callbacks.diagnostics import TransferDiagnostics, stage_modules
from ftlab.models.module import Classifier
from ftlab.runs.report import load_runs, render
from ftlab.training.run import train
from tests.helpers.cli import TINY
from tests.helpers.trainers import quiet_cpu_trainer


def test_drift_is_zero_while_frozen_and_positive_after_unfreezing(compose_cfg, tmp_path: Path) -> None:
    overrides = ["+experiment=smoke", "finetune=freeze_unfreeze", "finetune.unfreeze_at_epoch=1", *TINY]
    cfg = compose_cfg([*overrides, "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"])
    train(cfg)
    events_dir = next((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*")).parent
    events = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})
    events.Reload()
    backbone = ["stem", "layer1", "layer2", "layer3", "layer4"]
    for stage in backbone:
        drift = [(e.step, e.value) for e in events.Scalars(f"drift/{stage}")]
        grads = [e.value for e in events.Scalars(f"grad_norm/{stage}")]
        assert drift[0] == (0, 0.0) and grads[0] == 0.0, (stage, drift)  # epoch 0: frozen
        assert drift[1][0] == 1 and drift[1][1] > 0 and grads[1] > 0, (stage, drift)  # epoch 1: trained
    head = [e.value for e in events.Scalars("drift/head")]
    assert 0 < head[0] < head[1]
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("[]\n")  # what the CLI's Hydra writes
    table = render(load_runs(tmp_path / "run"), diagnostics=True)
    header = table.splitlines()[0]
    assert "drift/layer4" in header and "grad_norm/head" in header
    assert f"{drift[1][1]:.4f}" in table  # layer4's final drift


def test_grad_norm_per_stage_matches_plain_autograd() -> None:
    torch.manual_seed(0)
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=32)
    module.stages["stem"].requires_grad_(False)  # a frozen stage next to trained ones
    reference = copy.deepcopy(module)
    images, labels = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    torch.nn.functional.cross_entropy(reference(images), labels).backward()
    expected = {
        name: torch.linalg.vector_norm(
            torch.cat(
                [p.grad.double().flatten() for p in part.parameters() if p.grad is not None]
                or [torch.zeros(1)]
            )
        ).item()
        for name, part in stage_modules(reference).items()
    }
    diagnostics = TransferDiagnostics()
    trainer = quiet_cpu_trainer(
        max_steps=1,
        callbacks=[diagnostics],
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(TensorDataset(images, labels), batch_size=8))
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("grad_norm/")}
    assert logged.keys() == {f"grad_norm/{name}" for name in expected}
    for name, value in expected.items():
        assert logged[f"grad_norm/{name}"] == pytest.approx(value, rel=1e-5), name
    assert logged["grad_norm/stem"] == 0.0 and float(trainer.callback_metrics["drift/stem"]) == 0.0
    assert logged["grad_norm/layer1"] > 0 and float(trainer.callback_metrics["drift/layer1"]) > 0
