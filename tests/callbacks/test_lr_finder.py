"""LR finder per phase: the suggestion rule, a known good LR range, state restored bit for bit, resume."""

from __future__ import annotations

import json
import random

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ftlab.callbacks.lr_finder import LRFinderCallback
from ftlab.finetune.lr_suggestion import RULES, suggest, sweep
from ftlab.finetune.phases import Phase, Schedule
from tests.helpers.trainers import needs_gloo, quiet_cpu_trainer, two_cpu_ranks


def test_suggestion_is_the_steepest_descent_of_a_known_curve():
    lrs = sweep(1e-5, 10.0, 120)
    x = np.log10(lrs)
    losses = 2.0 / (1 + np.exp(3 * (x + 2))) + 0.1 + np.where(x > 0, 10 ** (2 * x) - 1, 0.0)
    chosen = suggest(lrs, losses, "steepest")
    assert 10**-2.15 < chosen < 10**-1.85  # the sigmoid falls fastest at 1e-2 (centred smoothing: no lag)


class _Regression(L.LightningModule):
    """Least squares with an MSE loss: SGD is stable for LRs below 1 (Hessian ~ 2I) and diverges above."""

    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.net = (
            nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)) if bn else nn.Linear(8, 1)
        )
        self.criterion = nn.MSELoss()
        self.lr = 0.05 if bn else 1.0

    def forward(self, x, start: int = 0):
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.5)


def _data(n: int = 256, batch_size: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator)
    y = x @ torch.randn(8, generator=generator) + 0.01 * torch.randn(n, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)


def _trainer(epochs: int, callbacks: list[Callback], root=None) -> L.Trainer:
    return quiet_cpu_trainer(
        max_epochs=epochs, enable_checkpointing=root is not None, default_root_dir=root, callbacks=callbacks
    )


@pytest.mark.parametrize("rule", RULES)
def test_suggestion_falls_in_the_known_good_range(rule):
    """The sweep's loss falls between LRs 1e-2 and 1e-1 (there the steps so far converge) and diverges
    above 1, where SGD on this least-squares problem is unstable: every rule picks inside [1e-2, 1]."""
    finder = LRFinderCallback(Schedule([Phase(0, frozenset())]), steps=60, rule=rule)
    _trainer(1, [finder]).fit(_Regression(), _data())
    assert 0.01 <= finder.choices[0] <= 1.0  # the base LR is 1.0: multiplier = LR
    assert finder.choices[0] == suggest(sweep(1e-3, 100.0, 60), np.array(finder.curves[0]), rule)


class _Snapshot(Callback):
    def __init__(self) -> None:
        self.states: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.states.append(
            {
                "model": {k: v.clone() for k, v in pl_module.state_dict().items()},
                "optimizer": repr(trainer.optimizers[0].state_dict()),
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state()[1].copy(),
                "python": random.getstate(),
            }
        )


def test_state_after_the_test_equals_state_before_bit_for_bit():
    before, after = _Snapshot(), _Snapshot()
    schedule = Schedule([Phase(0, frozenset()), Phase(1, frozenset({"all"}))])
    finder = LRFinderCallback(schedule, steps=20)
    _trainer(2, [before, finder, after]).fit(_Regression(bn=True), _data())
    assert finder.tests_run == 2 and sorted(finder.choices) == [0, 1]
    for b, a in zip(before.states, after.states, strict=True):
        assert b["model"].keys() == a["model"].keys()
        assert all(torch.equal(b["model"][k], a["model"][k]) for k in b["model"])  # weights and BN buffers
        assert b["optimizer"] == a["optimizer"] and "momentum_buffer" in after.states[1]["optimizer"]
        assert torch.equal(b["torch"], a["torch"]) and (b["numpy"] == a["numpy"]).all()
        assert b["python"] == a["python"]


def test_resume_reuses_the_choice(tmp_path):
    phases = [Phase(0, frozenset()), Phase(1, frozenset({"all"}))]
    first = LRFinderCallback(Schedule(list(phases)), steps=20)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer(2, [first, checkpoint], tmp_path).fit(_Regression(), _data())
    schedule = Schedule(list(phases))
    resumed = LRFinderCallback(schedule, steps=20)
    _trainer(3, [resumed], tmp_path).fit(_Regression(), _data(), ckpt_path=tmp_path / "last.ckpt")
    assert resumed.tests_run == 0 and resumed.choices == first.choices
    assert [p.lr_mult for p in schedule.phases] == [first.choices[0], first.choices[1]]


class _WeightsAfterEachStep(Callback):
    """The weights after every optimizer step of the range test: a post-step hook on the optimizer, put on
    before the finder's epoch-start hook runs (this callback comes first) and taken off before training."""

    def __init__(self) -> None:
        self.steps: list[list[torch.Tensor]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        def record(optimizer, args, kwargs) -> None:
            self.steps.append([p.detach().clone() for p in pl_module.parameters()])

        self.handle = trainer.optimizers[0].register_step_post_hook(record)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.handle.remove()


SWEEP = {"steps": 12, "low": 1e-2, "high": 1.0}  # stays finite: SGD on this problem diverges above ~1


def _sweep_in_fit(init: dict, n: int, batch_size: int, accumulate: int):
    """One range test inside a real fit: its recorded losses, and the weights after each of its steps."""
    module = _Regression()
    module.load_state_dict(init)
    finder, weights = LRFinderCallback(Schedule([Phase(0, frozenset())]), **SWEEP), _WeightsAfterEachStep()
    trainer = quiet_cpu_trainer(
        max_epochs=1, limit_train_batches=2, accumulate_grad_batches=accumulate, callbacks=[weights, finder]
    )
    trainer.fit(module, _data(n, batch_size))
    return finder.curves[0], weights.steps


def _assert_same_sweep(a, b) -> None:
    (losses_a, weights_a), (losses_b, weights_b) = a, b
    assert len(losses_a) == len(weights_a) == SWEEP["steps"]
    torch.testing.assert_close(torch.tensor(losses_a), torch.tensor(losses_b), rtol=1e-5, atol=1e-7)
    for step_a, step_b in zip(weights_a, weights_b, strict=True):
        for pa, pb in zip(step_a, step_b, strict=True):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_accumulated_micro_batches_sweep_like_batches_of_their_total_size():
    """accumulate_grad_batches=2 with batches of 8 = one step per LR on batches of 16: the same losses and
    the same weights after every step. 64 items: the 12 steps run through the shuffled data three times."""
    init = _Regression().state_dict()
    accumulated = _sweep_in_fit(init, n=64, batch_size=8, accumulate=2)
    _assert_same_sweep(accumulated, _sweep_in_fit(init, n=64, batch_size=16, accumulate=1))
    assert accumulated[0][-1] < accumulated[0][0] / 2  # the sweep trained: not a trivially equal pair


def test_accumulated_sweep_matches_plain_pytorch_full_batch_descent():
    """16 items: two micro-batches of 8 are the whole set in any shuffle, so each LR value of the sweep is
    one full-batch SGD step at lr = base LR x multiplier, written here in plain PyTorch."""
    init = _Regression().state_dict()
    accumulated = _sweep_in_fit(init, n=16, batch_size=8, accumulate=2)
    net = nn.Linear(8, 1)
    net.load_state_dict({k.removeprefix("net."): v for k, v in init.items()})
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.5)  # as _Regression's
    x, y = _data(16).dataset.tensors
    losses, weights = [], []
    for mult in sweep(SWEEP["low"], SWEEP["high"], SWEEP["steps"]):
        loss = nn.functional.mse_loss(net(x).squeeze(-1), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.param_groups[0]["lr"] = 1.0 * float(mult)
        optimizer.step()
        weights.append([p.detach().clone() for p in net.parameters()])
    _assert_same_sweep(accumulated, (losses, weights))


class _RankScaledData(_Regression):
    """Rank r trains on the inputs and targets / (1 + 2r): the same least-squares solution, but rank 1's loss
    is a ninth as curved, so its own range test diverges only at about 9x rank 0's LR. Training runs at a
    base LR of 0.01 (multiplier = LR / 0.01): the weights barely move between the phases' tests, so the
    curves of phase 1 are as far apart as phase 0's (near the optimum the suggestion is noise)."""

    def __init__(self) -> None:
        super().__init__()
        self.lr = 0.01

    def train_dataloader(self) -> DataLoader:
        x, y = _data().dataset.tensors
        scale = 1.0 / (1.0 + 2.0 * self.global_rank)
        return DataLoader(TensorDataset(x * scale, y * scale), batch_size=32, shuffle=True)


class _WriteRankFindings(Callback):
    """Each rank writes `rank<r>.json`: its finder's choices, its schedule's lr_mults, its own loss curves."""

    def __init__(self, finder: LRFinderCallback, out_dir) -> None:
        self.finder, self.out_dir = finder, out_dir

    def on_train_end(self, trainer, pl_module) -> None:
        findings = {
            "choices": {str(k): v for k, v in self.finder.choices.items()},
            "lr_mults": [phase.lr_mult for phase in self.finder.schedule.phases],
            "curves": {str(k): v for k, v in self.finder.curves.items()},
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(findings))


@needs_gloo
def test_two_ranks_apply_rank_zeros_suggestion_in_every_phase(tmp_path, monkeypatch):
    """2 gloo ranks with different data: each runs its own range test, and both take rank 0's suggestion,
    per phase, although rank 1's own curve (through the same `suggest`) points elsewhere."""
    phases = [Phase(0, frozenset()), Phase(1, frozenset({"all"}))]
    finder = LRFinderCallback(Schedule(phases), steps=30, low=0.1, high=1e4)
    trainer = two_cpu_ranks(
        monkeypatch,
        max_epochs=2,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        callbacks=[finder, _WriteRankFindings(finder, tmp_path)],
    )
    torch.manual_seed(0)
    trainer.fit(_RankScaledData())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    mults = sweep(finder.low, finder.high, finder.steps)
    own = [{k: suggest(mults, np.array(curve)) for k, curve in r["curves"].items()} for r in ranks]
    assert sorted(own[0]) == sorted(own[1]) == ["0", "1"]  # both ranks ran a test in both phases
    assert ranks[0]["choices"] == ranks[1]["choices"] == own[0]  # rank 0's suggestion, applied on both
    assert ranks[0]["lr_mults"] == ranks[1]["lr_mults"] == [own[0]["0"], own[0]["1"]]
    for phase in ("0", "1"):  # not agreement by accident: rank 1's flatter loss points to a much higher LR
        assert own[1][phase] > own[0][phase] * 3


def test_range_test_batches_follow_the_balanced_sampler():
    """Under data.sampler=balanced the sweep draws classes equally often, as training does (9:1 data)."""
    from types import SimpleNamespace

    from ftlab.data.sampling import BalancedSampler

    labels = torch.tensor([0] * 900 + [1] * 100)
    dataset = TensorDataset(torch.zeros(1000, 1), labels)
    counts = {}
    for name, sampler in (("random", None), ("balanced", BalancedSampler(labels, 0, lambda: 0))):
        loader = DataLoader(dataset, batch_size=50, sampler=sampler)
        trainer = SimpleNamespace(
            train_dataloader=loader, datamodule=SimpleNamespace(seed=0), current_epoch=0
        )
        batches = LRFinderCallback(Schedule([Phase(0, frozenset())]))._batches(trainer)
        drawn = torch.cat([next(batches)[1] for _ in range(40)])  # 2,000 draws
        counts[name] = torch.bincount(drawn, minlength=2).float() / len(drawn)
    assert abs(float(counts["random"][1]) - 0.1) < 0.03
    assert abs(float(counts["balanced"][1]) - 0.5) < 0.05
