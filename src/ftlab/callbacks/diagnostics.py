"""Transfer diagnostics per stage and epoch: how far each stage moved from its pretrained weights, and how
large its gradients were. A frozen stage shows a drift of exactly 0; a stage that drifts far early is a
sign of a learning rate too high for pretrained weights."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

DRIFT_PREFIX = "drift/"  # ||W - W0|| / ||W0|| per stage, W0 = the weights at the start of fitting
GRAD_NORM_PREFIX = "grad_norm/"  # L2 norm of the stage's gradients, mean over the epoch's optimizer steps


def stage_modules(pl_module: L.LightningModule) -> dict[str, nn.Module]:
    """The parameterised stages of an ftlab Classifier, stem first, then the head."""
    stages: dict[str, nn.Module] = getattr(pl_module, "stages", {})
    parts = {name: stage for name, stage in stages.items() if any(True for _ in stage.parameters())}
    head = getattr(pl_module, "head", None)
    if isinstance(head, nn.Module):
        parts["head"] = head
    return parts


def relative_drift(params: list[torch.Tensor], start: list[torch.Tensor]) -> float:
    """||W - W0|| / ||W0|| over all of a stage's parameters taken as one vector."""
    moved = sum(
        float((p.detach().float().cpu() - s).pow(2).sum()) for p, s in zip(params, start, strict=True)
    )
    size = sum(float(s.pow(2).sum()) for s in start)
    return (moved / size) ** 0.5 if size > 0 else 0.0


def grad_norm(params: list[torch.Tensor]) -> float:
    """L2 norm of the gradients of `params` taken as one vector (parameters without a gradient count 0)."""
    return sum(float(p.grad.detach().float().pow(2).sum()) for p in params if p.grad is not None) ** 0.5


class TransferDiagnostics(Callback):
    """Logs `drift/<stage>` and `grad_norm/<stage>` once per training epoch (TensorBoard, CSV, report).

    W0 is captured in `setup`, before a resumed checkpoint's weights are loaded, so it is the pretrained
    backbone (and the freshly initialised head). Gradients are read in `on_before_optimizer_step`, after
    mixed-precision unscaling and (under DDP) after the all-reduce.
    """

    def __init__(self) -> None:
        self._start: dict[str, list[torch.Tensor]] = {}
        self._grad_sums: dict[str, float] = {}
        self._steps = 0

    def _params(self, pl_module: L.LightningModule) -> dict[str, list[torch.Tensor]]:
        return {name: list(module.parameters()) for name, module in stage_modules(pl_module).items()}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not self._start:
            self._start = {
                name: [p.detach().float().cpu().clone() for p in params]
                for name, params in self._params(pl_module).items()
            }

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._grad_sums, self._steps = {}, 0

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        for name, params in self._params(pl_module).items():
            self._grad_sums[name] = self._grad_sums.get(name, 0.0) + grad_norm(params)
        self._steps += 1

    def epoch_values(self, pl_module: L.LightningModule) -> dict[str, float]:
        """This epoch's drift and mean gradient norm per stage."""
        values: dict[str, float] = {}
        for name, params in self._params(pl_module).items():
            if name in self._start:
                values[DRIFT_PREFIX + name] = relative_drift(params, self._start[name])
            values[GRAD_NORM_PREFIX + name] = self._grad_sums.get(name, 0.0) / max(self._steps, 1)
        return values

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, value in self.epoch_values(pl_module).items():
            pl_module.log(key, value, on_step=False, on_epoch=True)
