"""`trainer.time_budget=10m`: after the first epoch, re-plan the run so that it ends within a wall-clock
budget.

The plan, made once at the end of the first epoch this fit runs (epoch 0 of a fresh run):

- **Time spent** counts from the Trainer's `setup` (the start of `fit`: sanity check and cache builds
  included; loading the data and weights before `fit` is not counted).
- **Epoch cost.** The measured epoch (training and validation) is the unit. An epoch whose phase trains the
  same stages costs the same. An epoch that trains other stages costs the measured epoch plus the difference
  of one batch's compute, times the batches of an epoch: a forward and backward pass from where the cache
  serves that phase (the lowest trainable stage when the cache serves features, else the images) against
  the same for the measured epoch, and a forward pass for each validation batch. Both are timed on one batch
  of random images of the run's size, right after the first epoch (`probe`), so a head-only first epoch on
  cached features predicts a full epoch from what a full batch really costs on this machine. Data loading
  and logging stay as measured. An epoch never counts less than a tenth of the measured one.
- **Epochs.** The most epochs whose estimated total fits in 90 % of the budget (`PLAN_SHARE`; at least the
  epochs already run: a budget spent by the first epoch stops the run after it). It may be more or fewer
  than `trainer.max_epochs`.
- **Schedule.** The phase boundaries and the unfreeze warmup scale by planned / configured epochs
  (`trainer.max_epochs`), so a schedule written for 10 epochs keeps its shape over 30; boundaries already
  passed stay. The LR scheduler is rebuilt for the planned length (`total_steps` that ftlab fills in, or the
  factory's `T_max`, `total_iters`, `epochs`, `total_steps` scaled the same way) and advanced to the step it
  had reached, so it ends exactly at the new last epoch (a cosine finishes instead of being cut). Schedulers
  without a length (plateau, step) are left as they are.

The plan is one log line and goes into checkpoints, so a resumed run keeps it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.optim.lr_scheduler import OneCycleLR

from ftlab.errors import FtlabError
from ftlab.finetune.param_groups import HEAD
from ftlab.finetune.phases import Phase, Schedule

log = logging.getLogger(__name__)

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
LENGTH_KEYS = ("total_steps", "T_max", "total_iters", "epochs")  # scheduler arguments that set its length
MIN_EPOCH_SHARE = 0.1  # an epoch is never estimated below this share of the measured one
PLAN_SHARE = 0.9  # the plan fills 90 % of the budget: later epochs vary around the measured one
MAX_EPOCHS = 100_000  # planning horizon


def parse_duration(value: Any, key: str = "trainer.time_budget") -> float | None:
    """Seconds from `90s`, `10m`, `1h`, `1h30m` or a plain number of seconds; None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise FtlabError(f"{key}={value!r}: give a duration such as 90s, 10m, 1h or 1h30m (or null: off).")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().replace(" ", "").lower()
        match = _DURATION.fullmatch(text)
        if not text or match is None or not any(match.groups()):
            raise FtlabError(
                f"{key}={value!r} is not a duration: write hours, minutes and seconds as 90s, 10m, 1h or "
                "1h30m (or a number of seconds, or null: off)."
            )
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = 3600 * h + 60 * m + s
    if not seconds > 0:
        raise FtlabError(f"{key}={value!r}: the budget must be more than 0 seconds (null: off).")
    return seconds


def format_duration(seconds: float) -> str:
    """`1h02m05s`, `9m52s`, `4.2s`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def scale_phases(phases: Sequence[Phase], factor: float, done: int) -> list[Phase]:
    """Phase boundaries times `factor` (rounded); boundaries before `done` (epochs already run) stay, and no
    later boundary moves before `done`."""
    out = []
    for phase in phases:
        at = phase.at_epoch if phase.at_epoch < done else max(done, int(round(phase.at_epoch * factor)))
        out.append(Phase(at, phase.trainable, phase.lr_mult))
    return sorted(out, key=lambda p: p.at_epoch)


@dataclass
class Plan:
    """What the budget decided: the epochs, the schedule over them, and how it was estimated."""

    budget_s: float
    epochs: int  # planned epochs (trainer.max_epochs from now on)
    configured_epochs: int | None  # trainer.max_epochs the schedule was written for
    phases: list[tuple[int, list[str], float]]  # (at_epoch, trainable stages, lr_mult)
    warmup_epochs: float
    measured_epoch_s: float
    spent_s: float  # at the re-plan
    estimated_s: float  # the whole fit, as planned

    def schedule_phases(self) -> list[Phase]:
        return [Phase(at, frozenset(names), mult) for at, names, mult in self.phases]


def _stage_index(names: Sequence[str], trainable: frozenset[str]) -> int:
    """Index of the lowest trainable stage (len(names) when only the head trains)."""
    return min((names.index(n) for n in trainable if n in names), default=len(names))


def probe(
    module: Any,
    batch_size: int,
    starts: tuple[int, int],
    trainable: frozenset[str],
    context: Callable[[], Any] | None = None,
) -> tuple[float, float]:
    """Seconds of one training batch (forward and backward from stage `starts[0]`, with gradients for the
    stages in `trainable` and the head) and of one validation batch (forward from `starts[1]`), timed once
    each on random images of the module's crop size in eval mode (the network has just run a whole epoch,
    so nothing is cold). Parameters, gradients and modes are left as found."""
    stages = list(module.stages.values())
    size = module.preprocessing.crop_size
    params = list(module.parameters())
    grad_flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    modes = {m: m.training for m in module.modules()}
    make_context = context or contextlib.nullcontext

    def entering_at(start: int) -> torch.Tensor:
        with torch.no_grad(), make_context():
            x = torch.randn(batch_size, 3, size, size, device=module.device)
            for stage in stages[:start]:
                x = stage(x)
        return x

    try:
        module.eval()
        for p in params:
            p.requires_grad = False
        for name in [*trainable, HEAD]:
            part = module.head if name == HEAD else module.stages[name]
            for p in part.parameters():
                p.requires_grad = True
        x = entering_at(starts[0])
        begin = time.perf_counter()
        with make_context():
            out = module(x, starts[0])
        out.float().sum().backward()
        train_s = time.perf_counter() - begin
        x = entering_at(starts[1])
        begin = time.perf_counter()
        with torch.no_grad(), make_context():
            module(x, starts[1])
        return train_s, time.perf_counter() - begin
    finally:
        for p, flag, grad in zip(params, grad_flags, grads, strict=True):
            p.requires_grad, p.grad = flag, grad
        for m, mode in modes.items():
            m.training = mode


class TimeBudget(Callback):
    """Re-plans epochs, phases and the LR schedule after the first epoch so that the fit ends inside
    `budget_s` seconds (see the module docstring for the estimate)."""

    def __init__(self, budget_s: float, schedule: Schedule | None = None) -> None:
        self.budget_s = float(budget_s)
        self.schedule = schedule
        self.plan: Plan | None = None
        self._trainer: L.Trainer | None = None
        self._start = 0.0
        self._epoch_start: float | None = None
        self._before: str | None = None  # the configured phase boundaries, for the log line
        self.rescaled: str | None = None  # the LR scheduler's new length arguments

    @property
    def state_key(self) -> str:
        return "TimeBudget"

    # -- measuring -------------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer, self._start = trainer, time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.plan is None and self._epoch_start is None:
            self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.plan is not None or self._epoch_start is None:
            return
        measured = time.perf_counter() - self._epoch_start
        done = trainer.current_epoch + 1
        plan = self._make_plan(trainer, pl_module, measured, done)
        self.plan = trainer.strategy.broadcast(plan, src=0)  # under DDP every rank follows rank 0's plan
        self._apply(trainer, pl_module, self.plan, advance=True)
        self._log(self.plan, done)

    # -- planning --------------------------------------------------------------------------------------

    def _epoch_costs(
        self,
        trainer: L.Trainer,
        pl_module: Any,
        measured: float,
        kinds: set[frozenset[str]],
        now: frozenset[str],
    ) -> dict[frozenset[str], float]:
        """Estimated seconds of an epoch that trains each set of stages (`now`: the measured epoch's)."""
        costs = {now: measured}
        others = kinds - {now}
        if not others or not hasattr(pl_module, "stages"):
            return {kind: measured for kind in kinds}
        names = list(pl_module.stages)
        datamodule = getattr(trainer, "datamodule", None)
        cache = getattr(datamodule, "cache", None)
        entries = getattr(cache, "entries", {}) if cache is not None else {}

        def served(split: str, trainable: frozenset[str], measured_kind: bool) -> int:
            """Where the split's batches enter the network: the cache's boundary, or the images (0)."""
            entry = entries.get(split)
            if entry is None:  # the measured epoch ran on images: so will the others
                return 0
            return int(entry.segment.boundary) if measured_kind else _stage_index(names, trainable)

        batch = int(getattr(datamodule, "batch_size", 0) or 8)
        context = trainer.precision_plugin.forward_context
        train_batches = float(trainer.num_training_batches)
        val_batches = float(sum(trainer.num_val_batches)) if trainer.num_val_batches else 0.0
        if not math.isfinite(train_batches):
            train_batches = 0.0

        def batch_seconds(trainable: frozenset[str], measured_kind: bool) -> tuple[float, float]:
            starts = (served("train", trainable, measured_kind), served("val", trainable, measured_kind))
            return probe(pl_module, batch, starts, trainable, context)

        base_train, base_val = batch_seconds(now, True)
        for kind in others:
            train_s, val_s = batch_seconds(kind, False)
            extra = train_batches * (train_s - base_train) + val_batches * (val_s - base_val)
            costs[kind] = max(MIN_EPOCH_SHARE * measured, measured + extra)
        return costs

    def _make_plan(self, trainer: L.Trainer, pl_module: Any, measured: float, done: int) -> Plan:
        configured = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        schedule = self.schedule
        phases = list(schedule.phases) if schedule is not None else [Phase(0, frozenset())]
        warmup = schedule.warmup_epochs if schedule is not None else 0.0
        now = schedule.trainable(done - 1) if schedule is not None else frozenset()
        costs = self._epoch_costs(trainer, pl_module, measured, {p.trainable for p in phases}, now)
        spent = time.perf_counter() - self._start  # the probes included

        def scaled(epochs: int) -> list[Phase]:
            return scale_phases(phases, epochs / configured if configured else 1.0, done)

        def total(epochs: int) -> float:
            planned = scaled(epochs)
            seconds = spent
            for i, phase in enumerate(planned):
                stop = planned[i + 1].at_epoch if i + 1 < len(planned) else epochs
                first, last = max(phase.at_epoch, done), min(stop, epochs)
                seconds += max(0, last - first) * costs.get(phase.trainable, measured)
            return seconds

        cheapest = min(costs.values())
        horizon = min(MAX_EPOCHS, done + int(max(0.0, self.budget_s - spent) / cheapest) + 1)
        epochs = done
        for candidate in range(done + 1, horizon + 1):
            if total(candidate) <= PLAN_SHARE * self.budget_s:
                epochs = candidate
        planned = scaled(epochs)
        factor = epochs / configured if configured else 1.0
        return Plan(
            budget_s=self.budget_s,
            epochs=epochs,
            configured_epochs=configured,
            phases=[(p.at_epoch, sorted(p.trainable), p.lr_mult) for p in planned],
            warmup_epochs=warmup * factor,
            measured_epoch_s=measured,
            spent_s=spent,
            estimated_s=total(epochs),
        )

    # -- applying --------------------------------------------------------------------------------------

    def _apply(self, trainer: L.Trainer, pl_module: Any, plan: Plan, advance: bool) -> None:
        """Planned epochs into the fit loop, phases into the schedule, the LR scheduler rebuilt for them;
        `advance`: step the new scheduler as far as the old one had gone (false on resume: the checkpoint's
        scheduler state is loaded into it next)."""
        built_for = trainer.max_epochs
        trainer.fit_loop.max_epochs = plan.epochs
        if self.schedule is not None:
            self.schedule.phases = plan.schedule_phases()
            self.schedule.warmup_epochs = plan.warmup_epochs
        self.rescaled = self._rebuild_scheduler(trainer, pl_module, built_for, plan.epochs, advance)

    def _rebuild_scheduler(
        self, trainer: L.Trainer, pl_module: Any, built_for: int | None, epochs: int, advance: bool
    ) -> str | None:
        factory = getattr(pl_module, "scheduler_factory", None)
        configs = trainer.lr_scheduler_configs
        if factory is None or not configs or not built_for or built_for < 0:
            return None
        config = configs[0]
        old = config.scheduler
        keywords = dict(getattr(factory, "keywords", {}) or {})
        kwargs: dict[str, Any] = {}
        parameters = inspect.signature(factory).parameters
        if "total_steps" in parameters and "total_steps" not in keywords:  # ftlab fills it in
            kwargs["total_steps"] = int(trainer.estimated_stepping_batches)
        for key in LENGTH_KEYS:
            if key in keywords and isinstance(keywords[key], int | float) and key not in kwargs:
                kwargs[key] = max(1, int(round(keywords[key] * epochs / built_for)))
        if not kwargs:
            return None
        groups = old.optimizer.param_groups
        peaks = [
            group.get("max_lr", base) if isinstance(old, OneCycleLR) else base
            for group, base in zip(groups, old.base_lrs, strict=True)
        ]
        for group, peak in zip(groups, peaks, strict=True):
            group["lr"] = peak
            group.pop("initial_lr", None)
        steps = old.last_epoch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()"
            new = factory(old.optimizer, **kwargs)
            if advance:
                for _ in range(steps - new.last_epoch):
                    new.step()
        config.scheduler = new
        return ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def _log(self, plan: Plan, done: int) -> None:
        phases = ", ".join(str(at) for at, _, _ in plan.phases)
        was = self._before or phases
        lr = f"LR schedule rebuilt ({self.rescaled})" if self.rescaled else "LR schedule unchanged"
        log.info(
            "time budget %s: %s spent after %d epoch(s), the last took %s; planned %d epoch(s) "
            "(configured %s), about %s in all; phases start at epochs %s (were %s), unfreeze warmup %.2g "
            "epochs; %s.",
            format_duration(plan.budget_s),
            format_duration(plan.spent_s),
            done,
            format_duration(plan.measured_epoch_s),
            plan.epochs,
            plan.configured_epochs if plan.configured_epochs is not None else "none",
            format_duration(plan.estimated_s),
            phases,
            was,
            plan.warmup_epochs,
            lr,
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.schedule is not None and self.plan is None:
            self._before = ", ".join(str(p.at_epoch) for p in self.schedule.phases)

    # -- checkpoints -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"plan": None if self.plan is None else vars(self.plan).copy()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("plan")
        if saved is None or self._trainer is None:
            return
        self.plan = Plan(**saved)
        self._apply(self._trainer, self._trainer.lightning_module, self.plan, advance=False)
        log.info("time budget: resumed with the plan of %d epochs", self.plan.epochs)
