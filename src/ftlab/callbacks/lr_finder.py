"""`finetune.lr_find=true`: an LR range test before epoch 0 and at every phase boundary of the schedule,
on a copy of the state that is put back afterwards; its suggestion becomes that phase's `lr_mult`."""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, RandomSampler, Sampler, WeightedRandomSampler

from ftlab.data.batches import FeatureBatch
from ftlab.data.sampling import BalancedSampler, epoch_seed
from ftlab.finetune.lr_suggestion import DEFAULT_RULE, suggest, sweep
from ftlab.finetune.param_groups import HEAD
from ftlab.finetune.phases import Schedule

log = logging.getLogger(__name__)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_initialized():  # never start a CUDA context in a CPU run (it would block forked DDP)
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def curve_image(mults: np.ndarray, losses: list[float], chosen: float, title: str) -> np.ndarray:
    """The loss against the LR multiplier (log scale) with the choice marked, as an RGB uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.5), dpi=80)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(mults[: len(losses)], losses)
    axes.axvline(chosen, color="red", linestyle="--")
    axes.set(xscale="log", xlabel="LR multiplier of the phase", ylabel="training loss", title=title)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class LRFinderCallback(Callback):
    """LR range test per phase of the schedule; the suggestion (`rule`, one of the pure rules of
    `ftlab.finetune.lr_suggestion`, `finetune.lr_find_rule`) replaces the phase's `lr_mult`.

    At the first epoch of each phase, `steps` optimizer steps sweep the phase's LR multiplier from `low` to
    `high` (log scale) over shuffled training batches (class-balanced draws under `data.sampler=balanced`);
    only the stages trainable in that phase (and the head) move. Weights, optimizer state, BatchNorm
    statistics and every RNG are then restored, so the run goes on as if no test had happened except for
    the multiplier. Rank 0 decides and broadcasts; the choices are
    saved in checkpoints and reapplied on resume, never recomputed. Under fp16 the test runs without a
    gradient scaler.

    Steps are optimizer steps, as in training: with `trainer.accumulate_grad_batches=N` each LR value of the
    sweep takes N micro-batches, each loss divided by N before its backward (as Lightning's training loop
    does), then one optimizer step; the loss recorded for that LR is the mean of the N micro-batch losses.
    So N micro-batches of size B give the curve of N=1 with batches of N*B (models without BatchNorm). A
    non-finite micro-batch loss ends its step early, without an optimizer step, and is recorded as is.
    """

    def __init__(
        self,
        schedule: Schedule,
        steps: int = 100,
        low: float = 1e-3,
        high: float = 100.0,
        rule: str = DEFAULT_RULE,
    ) -> None:
        self.schedule, self.steps, self.low, self.high, self.rule = schedule, steps, low, high, rule
        self.choices: dict[int, float] = {}
        self.curves: dict[int, list[float]] = {}  # this process's range-test losses per phase (not saved)
        self.tests_run = 0

    def _apply(self) -> None:
        for index, mult in self.choices.items():
            self.schedule.phases[index] = dataclasses.replace(self.schedule.phases[index], lr_mult=mult)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        index = self.schedule.phase_index(epoch)
        if self.schedule.phases[index].at_epoch != epoch or index in self.choices:
            return
        mults = sweep(self.low, self.high, self.steps)
        losses = self.curves[index] = self.range_test(trainer, pl_module, index, mults)
        value = suggest(mults, np.array(losses), self.rule) if trainer.is_global_zero else 0.0
        value = float(trainer.strategy.broadcast(value, src=0))
        if not np.isfinite(value):
            log.warning("lr_find: phase %d: no usable loss curve; lr_mult stays as configured", index)
            return
        self.choices[index] = value
        self._apply()
        log.info("lr_find: phase %d (epoch %d): lr_mult %.3g (rule %s)", index, epoch, value, self.rule)
        for logger in trainer.loggers:
            logger.log_metrics({f"lr_find/phase{index}_lr_mult": value}, step=trainer.global_step)
            if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
                image = curve_image(mults, losses, value, f"phase {index} (epoch {epoch})")
                logger.experiment.add_image(f"lr_find/phase{index}", image, epoch, dataformats="HWC")

    def _batches(self, trainer: L.Trainer) -> Any:
        source = trainer.train_dataloader
        assert isinstance(source, DataLoader), "lr_find needs a single training DataLoader"
        seed = (
            epoch_seed(int(getattr(getattr(trainer, "datamodule", None), "seed", 0)), trainer.current_epoch)
            + 1
        )
        while True:
            generator = torch.Generator().manual_seed(seed)
            sampler: Sampler[int] = RandomSampler(source.dataset, generator=generator)  # type: ignore[arg-type]
            if isinstance(source.sampler, BalancedSampler):  # the test sees the class mix training sees
                weights = source.sampler.weights
                sampler = WeightedRandomSampler(
                    weights.tolist(), len(weights), replacement=True, generator=generator
                )
            loader = DataLoader(
                source.dataset,
                batch_size=source.batch_size,
                sampler=sampler,
                collate_fn=source.collate_fn,
            )
            yield from loader
            seed += 1

    @staticmethod
    def _loss(trainer: L.Trainer, module: L.LightningModule, batch: Any) -> torch.Tensor:
        """The training criterion on one micro-batch (images, or cached features of the frozen prefix)."""
        batch = trainer.strategy.batch_to_device(batch)
        if isinstance(batch, FeatureBatch):
            inputs, start, labels = batch.features, batch.start, batch.labels
        else:
            (inputs, labels), start = batch, 0
        with trainer.precision_plugin.forward_context():
            return module.criterion(module(inputs, start), labels)  # type: ignore[operator]

    def range_test(
        self, trainer: L.Trainer, module: L.LightningModule, index: int, mults: np.ndarray
    ) -> list[float]:
        """Training losses over the sweep of `mults` for phase `index`, one per optimizer step (the mean of
        its accumulated micro-batches); all state restored afterwards."""
        optimizer = trainer.optimizers[0]
        saved = (
            copy.deepcopy(module.state_dict()),
            copy.deepcopy(optimizer.state_dict()),
            _rng_state(),
        )
        trainable = self.schedule.phases[index].trainable
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        losses: list[float] = []
        self.tests_run += 1
        try:
            batches = self._batches(trainer)
            for mult in mults:
                optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for _ in range(accumulate):
                    loss = self._loss(trainer, module, next(batches))
                    total += float(loss.detach())
                    if not torch.isfinite(loss):
                        break
                    (loss / accumulate).backward()
                losses.append(total / accumulate)
                if not np.isfinite(total):
                    continue
                scheduled = [group["lr"] for group in optimizer.param_groups]
                for group in optimizer.param_groups:
                    moves = group.get("stage", HEAD) in trainable | {HEAD}
                    group["lr"] = group["lr"] * float(mult) if moves else 0.0
                optimizer.step()
                for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
                    group["lr"] = lr
        finally:
            module.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            optimizer.zero_grad(set_to_none=True)
            _set_rng_state(saved[2])
        return losses

    @property
    def state_key(self) -> str:
        # Checkpoints keep this state under the class's former name, so checkpoints written before the
        # rename (and after it) resume with their choices.
        return "PhaseLRFinder"

    def state_dict(self) -> dict[str, Any]:
        return {"choices": {str(k): v for k, v in self.choices.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.choices = {int(k): float(v) for k, v in state_dict.get("choices", {}).items()}
        self._apply()
