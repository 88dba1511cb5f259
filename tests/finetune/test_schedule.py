"""Fine-tuning schedules: phases of every strategy, BatchNorm policies, per-stage LRs, exact resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.data import ImageDataModule
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.errors import FtlabError
from ftlab.finetune.param_groups import NO_DECAY_SUFFIX
from ftlab.finetune.phases import Phase
from ftlab.finetune.strategies import build_phases
from ftlab.models.module import Classifier
from tests.helpers.trainers import quiet_cpu_trainer

RESNET = ["stem", "layer1", "layer2", "layer3", "layer4"]


def test_strategies_compile_to_phases():
    assert build_phases("linear_probe", RESNET) == [Phase(0, frozenset())]
    assert build_phases("full", RESNET) == [Phase(0, frozenset(RESNET))]
    assert build_phases("freeze_unfreeze", RESNET, unfreeze_at_epoch=3) == [
        Phase(0, frozenset()),
        Phase(3, frozenset(RESNET)),
    ]
    gradual = build_phases("gradual", RESNET, every=2, min_stage="layer2")
    assert [(p.at_epoch, sorted(p.trainable)) for p in gradual] == [
        (0, []),
        (2, ["layer4"]),
        (4, ["layer3", "layer4"]),
        (6, ["layer2", "layer3", "layer4"]),
    ]
    milestones = build_phases("gradual", RESNET, milestones=[1, 5])
    assert [(p.at_epoch, len(p.trainable)) for p in milestones] == [(0, 0), (1, 1), (5, 2)]
    custom = build_phases(
        "custom",
        RESNET,
        phases=[{"at_epoch": 2, "trainable": ["top-2"], "lr_mult": 0.5}, {"at_epoch": 4, "trainable": "all"}],
    )
    assert custom == [
        Phase(0, frozenset()),
        Phase(2, frozenset({"layer3", "layer4"}), 0.5),
        Phase(4, frozenset(RESNET), 1.0),
    ]
    with pytest.raises(FtlabError, match=r"'layer5'.*layer"):
        build_phases("custom", RESNET, phases=[{"at_epoch": 0, "trainable": ["layer5"]}])
    with pytest.raises(FtlabError, match="gradual"):
        build_phases("gradul", RESNET)


def test_lr_factor_warms_up_a_stage_after_it_unfreezes():
    schedule = ScheduleCallback(build_phases("gradual", RESNET, every=2), warmup_epochs=1.0)
    assert schedule.lr_factor("layer4", 1, 0.5) == 0.0  # still frozen
    assert schedule.lr_factor("layer4", 2, 0.25) == pytest.approx(0.25)
    assert schedule.lr_factor("layer4", 3, 0.5) == 1.0
    assert schedule.lr_factor("layer3", 4, 0.5) == pytest.approx(0.5)
    assert schedule.lr_factor("head", 0, 0.1) == 1.0  # trains from the start: no warmup


def _data(module: Classifier, size: int = 16) -> ImageDataModule:
    return ImageDataModule(
        SyntheticSource(train_size=size, val_size=8), module.preprocessing, batch_size=8, augment="hflip"
    )


def _module(**kwargs) -> Classifier:
    L.seed_everything(0)
    return Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=32, **kwargs)


def _trainer(epochs: int, schedule: ScheduleCallback, root: Path | None = None, **kwargs) -> L.Trainer:
    callbacks: list[Callback] = [schedule]
    if root is not None:
        callbacks.append(ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0))
    return quiet_cpu_trainer(
        max_epochs=epochs,
        enable_checkpointing=root is not None,
        deterministic=True,
        callbacks=callbacks,
        **kwargs,
    )


def _snapshot(module: Classifier, stages: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    for name in stages:
        for key, value in module.stages[name].state_dict().items():
            out[f"{name}.{key}"] = value.detach().clone()
    return out


def _bn_stats(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if "running_" in k]


def test_bn_frozen_keeps_frozen_stages_bit_identical():
    module = _module()
    before = _snapshot(module, RESNET)
    _trainer(1, ScheduleCallback(build_phases("gradual", RESNET, every=1), bn="frozen")).fit(
        module, _data(module)
    )
    after = _snapshot(module, RESNET)
    assert [k for k in before if not torch.equal(before[k], after[k])] == []


def test_bn_train_updates_statistics_of_frozen_stages_but_not_weights():
    module = _module()
    before = _snapshot(module, RESNET)
    _trainer(1, ScheduleCallback(build_phases("linear_probe", RESNET), bn="train")).fit(module, _data(module))
    after = _snapshot(module, RESNET)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert set(_bn_stats(before)) <= changed | {k for k in before if k.endswith("num_batches_tracked")}
    assert all("running_" in k or "num_batches_tracked" in k for k in changed)


def test_bn_all_frozen_fixes_statistics_of_training_stages():
    module = _module()
    before = _snapshot(module, RESNET)
    _trainer(1, ScheduleCallback(build_phases("full", RESNET), bn="all_frozen")).fit(module, _data(module))
    after = _snapshot(module, RESNET)
    assert all(torch.equal(before[k], after[k]) for k in _bn_stats(before))
    assert not torch.equal(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])


class _Watch(Callback):
    """Records the optimizer object and which stages' weights changed, per epoch."""

    def __init__(self) -> None:
        self.optimizers: list[int] = []
        self.trained: list[set[str]] = []
        self._before: dict[str, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._before = _snapshot(pl_module, RESNET)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.optimizers.append(id(trainer.optimizers[0]))
        after = _snapshot(pl_module, RESNET)
        self.trained.append(
            {
                k.split(".")[0]
                for k in after
                if "running" not in k and not torch.equal(after[k], self._before[k])
            }
        )


def test_unfreezing_never_rebuilds_the_optimizer_and_trains_exactly_the_phase_stages():
    module = _module()
    watch = _Watch()
    schedule = ScheduleCallback(build_phases("gradual", RESNET, milestones=[1, 2]), warmup_epochs=0.5)
    trainer = _trainer(3, schedule)
    trainer.callbacks.append(watch)
    trainer.fit(module, _data(module))
    assert len(set(watch.optimizers)) == 1
    assert watch.trained == [set(), {"layer4"}, {"layer3", "layer4"}]
    groups = trainer.optimizers[0].param_groups
    assert {g["stage"] for g in groups} == {*RESNET, "head"}  # every group from the start


def test_param_groups_decay_lr_and_skip_weight_decay_on_norm_and_bias():
    module = _module(backbone_lr_mult=0.5, lr_decay=0.5)
    groups = module.param_groups(lr=1.0, weight_decay=0.05)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["head"] == 1.0 and lrs["layer4"] == 0.5 and lrs["layer3"] == 0.25 and lrs["stem"] == 0.5**5
    for group in groups:
        if group["name"].endswith(NO_DECAY_SUFFIX):
            assert group["weight_decay"] == 0.0 and all(p.ndim == 1 for p in group["params"])
        else:
            assert group["weight_decay"] == 0.05 and all(p.ndim > 1 for p in group["params"])
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in module.parameters())  # each parameter exactly once


def _schedule() -> ScheduleCallback:
    return ScheduleCallback(build_phases("freeze_unfreeze", RESNET, unfreeze_at_epoch=1), warmup_epochs=1.5)


def _cosine(optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)


def test_resume_mid_schedule_matches_an_uninterrupted_run(tmp_path):
    """4 epochs straight == 2 epochs, then resume from last.ckpt for 2 (after the unfreeze, inside warmup)."""
    from functools import partial

    def module():
        return _module(optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01), scheduler=_cosine)

    straight = module()
    _trainer(4, _schedule()).fit(straight, _data(straight, 24))

    first = module()
    _trainer(2, _schedule(), root=tmp_path).fit(first, _data(first, 24))
    resumed = module()
    trainer = _trainer(4, _schedule(), root=tmp_path / "again")
    trainer.fit(resumed, _data(resumed, 24), ckpt_path=str(tmp_path / "last.ckpt"))
    a, b = straight.state_dict(), resumed.state_dict()
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert mismatched == []
    assert all(p.requires_grad for p in resumed.parameters())
    first_state = first.state_dict()
    assert not torch.equal(first_state["net.layer1.0.conv1.weight"], b["net.layer1.0.conv1.weight"])


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "vit_b_16"])
def test_schedule_runs_on_other_families(name):
    """Stages from `split` drive the schedule for any family (gradual with every stage)."""
    L.seed_everything(0)
    size = 224 if name.startswith("vit") else 32
    module = Classifier(name, ["a", "b"], weights=None, image_size=size)
    stages = module.trainable_stage_names
    schedule = ScheduleCallback(build_phases("gradual", stages, every=1))
    dm = ImageDataModule(
        SyntheticSource(num_classes=2, train_size=4, val_size=2, size=size),
        module.preprocessing,
        batch_size=2,
    )
    before = _snapshot(module, stages)
    _trainer(2, schedule, limit_train_batches=1, limit_val_batches=1).fit(module, dm)
    after = _snapshot(module, stages)
    top = stages[-1]
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(top + "."))
    deep = [k for k in before if k.startswith(stages[0] + ".")]
    assert all(torch.equal(before[k], after[k]) for k in deep)


def test_linear_probe_trains_only_the_head():
    module = _module()
    head_before = module.head.weight.detach().clone()
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    _trainer(1, ScheduleCallback(build_phases("linear_probe", RESNET))).fit(module, _data(module))
    changed = {k for k, v in module.net.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"fc.weight", "fc.bias"}
    assert not torch.equal(head_before, module.head.weight)
    assert isinstance(module.head, nn.Linear)


@pytest.mark.slow
def test_compiled_training_recompiles_on_unfreeze_and_checkpoints_load_uncompiled(tmp_path):
    """torch.compile (aot_eager: the dynamo + autograd path, without codegen time) across an unfreeze."""
    import torch._dynamo

    def run(compiled: bool) -> tuple[Classifier, L.Trainer]:
        module = _module()
        if compiled:
            module.compile_stages(backend="aot_eager")
        trainer = _trainer(
            2,
            ScheduleCallback(build_phases("freeze_unfreeze", RESNET, unfreeze_at_epoch=1)),
            root=tmp_path / str(compiled),
        )
        trainer.fit(module, _data(module))
        return module, trainer

    torch._dynamo.reset()
    eager, _ = run(False)
    compiled, _ = run(True)
    start = _module().state_dict()
    assert not torch.equal(start["net.conv1.weight"], compiled.state_dict()["net.conv1.weight"])  # unfroze
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    plain = Classifier.load_from_checkpoint(tmp_path / "True" / "last.ckpt", weights=None)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(plain.eval()(x), compiled.eval()._run_network(x))


def test_step_schedulers_keep_each_groups_own_peak():
    """Per-group LR trajectories follow the closed forms, scaled by each group's configured LR."""
    import math

    from ftlab.finetune.lr import one_cycle, warmup_cosine

    def optimizer():
        params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
        return torch.optim.SGD(
            [{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.1}], lr=1.0
        )

    def trajectory(make_scheduler, steps: int) -> list[list[float]]:
        opt = optimizer()
        sched = make_scheduler(opt)
        lrs = []
        for _ in range(steps):
            lrs.append([g["lr"] for g in opt.param_groups])
            opt.step()
            sched.step()
        return lrs

    seen = trajectory(lambda o: warmup_cosine(o, total_steps=100, warmup_fraction=0.1), 100)
    assert seen[0] == pytest.approx([0.1, 0.01]) and seen[9] == pytest.approx([1.0, 0.1])
    expected = 0.5 * (1 + math.cos(math.pi * 45 / 90))
    assert seen[55] == pytest.approx([expected, 0.1 * expected])
    peaks = trajectory(lambda o: one_cycle(o, total_steps=50, pct_start=0.2), 50)
    top = max(range(50), key=lambda i: peaks[i][0])
    assert peaks[top] == pytest.approx([1.0, 0.1]) and peaks[0][0] == pytest.approx(1.0 / 25)


def test_unreached_phases_are_those_starting_at_or_after_max_epochs():
    phases = build_phases("gradual", RESNET, every=2)  # head, then one more stage every 2 epochs
    schedule = ScheduleCallback(phases)
    starts = sorted(p.at_epoch for p in schedule.phases)
    for max_epochs in range(0, starts[-1] + 2):
        expected = [s for s in starts if s >= max_epochs]
        assert [p.at_epoch for p in schedule.unreached(max_epochs)] == expected, max_epochs
    assert schedule.unreached(None) == [] and schedule.unreached(-1) == []  # unbounded runs
