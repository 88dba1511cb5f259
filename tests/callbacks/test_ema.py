"""EMA callback: the average equals AveragedModel / the EMA formula applied by hand to the same steps,
validation sees it, and frozen weights are left exactly as they are."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, TensorDataset

from ftlab.callbacks.ema import EMA, warmup_decay
from ftlab.errors import FtlabError
from tests.helpers.trainers import quiet_cpu_trainer


class _Toy(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.body, self.bn, self.head = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)
        self.seen_in_validation: torch.Tensor | None = None

    def forward(self, x):
        return self.head(self.bn(self.body(self.frozen(x))).relu())

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        self.seen_in_validation = self.head.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.5)


class _Record(Callback):
    """The model's state after every optimizer step (runs before the EMA callback)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _fit(ema: EMA) -> tuple[_Toy, _Record, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = _Toy()
    initial = copy.deepcopy(model.state_dict())
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    record = _Record()
    trainer = quiet_cpu_trainer(
        max_epochs=2,
        num_sanity_val_steps=0,
        callbacks=[record, ema],
    )
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=8))
    return model, record, initial


def test_ema_without_warmup_equals_averaged_model_by_hand():
    model, record, _ = _fit(EMA(decay=0.8, warmup=False))
    assert len(record.states) == 8
    reference = AveragedModel(_Toy(), multi_avg_fn=get_ema_multi_avg_fn(0.8), use_buffers=True)
    for state in record.states:
        shadow = _Toy()
        shadow.load_state_dict(state)
        reference.update_parameters(shadow)
    for key, value in reference.module.state_dict().items():  # after fit the model holds the EMA
        if value.is_floating_point():
            torch.testing.assert_close(model.state_dict()[key], value)
        else:  # integer buffers (num_batches_tracked) are copied, not averaged
            assert torch.equal(model.state_dict()[key], record.states[-1][key])


def test_ema_with_warmup_follows_the_formula_and_validation_sees_it():
    model, record, initial = _fit(EMA(decay=0.99, warmup=True))
    expected = {k: v.clone() for k, v in record.states[0].items()}
    for step, state in enumerate(record.states[1:], start=1):
        decay = warmup_decay(0.99, step)
        for key, value in state.items():
            if value.is_floating_point():
                expected[key] = decay * expected[key] + (1 - decay) * value
            else:
                expected[key] = value.clone()
    for key, value in expected.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert warmup_decay(0.99, 1) == pytest.approx(2 / 11)
    # the last validation ran after the last step, on the EMA weights
    assert model.seen_in_validation is not None
    torch.testing.assert_close(model.seen_in_validation, expected["head.weight"])
    assert not torch.allclose(expected["head.weight"], record.states[-1]["head.weight"])
    # the frozen layer is bit-identical to its initial weights
    assert torch.equal(model.frozen.weight, initial["frozen.weight"])


def test_ema_decay_out_of_range_is_a_clear_error():
    with pytest.raises(FtlabError, match="ema.decay=1.5"):
        EMA(decay=1.5)
