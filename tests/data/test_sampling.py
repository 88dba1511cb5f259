"""Balanced sampler: equal class frequencies over epochs, per-epoch reproducibility, disjoint DDP shares
(in the sampler alone, and inside a real 2-rank Lightning fit)."""

from __future__ import annotations

import json

import lightning as L
import torch
from torch import nn

from ftlab.data.datasets import TensorImages
from ftlab.data.sampling import BalancedSampler, class_counts, epoch_seed
from tests.helpers.trainers import needs_gloo, two_cpu_ranks

LABELS = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)


def test_balanced_sampler_draws_classes_equally_often():
    epoch = [0]
    sampler = BalancedSampler(LABELS, seed=3, current_epoch=lambda: epoch[0])
    drawn = []
    for e in range(40):
        epoch[0] = e
        drawn += list(sampler)
    frequencies = torch.tensor(class_counts(LABELS[drawn], 3), dtype=torch.float) / len(drawn)
    torch.testing.assert_close(frequencies, torch.full((3,), 1 / 3), atol=0.02, rtol=0)
    plain = torch.tensor(class_counts(LABELS, 3), dtype=torch.float) / len(LABELS)
    assert plain[2] < 0.1  # the data itself is far from balanced


def test_balanced_sampler_is_a_function_of_seed_and_epoch():
    epoch = [0]
    a = BalancedSampler(LABELS, seed=3, current_epoch=lambda: epoch[0])
    b = BalancedSampler(LABELS, seed=3, current_epoch=lambda: epoch[0])
    first = list(a)
    assert first == list(b)
    epoch[0] = 1
    assert list(a) != first


def test_two_ranks_take_disjoint_shares_of_one_draw():
    labels = LABELS[:-1]  # 99 items: the draw is rounded up to 100 so both ranks take 50
    ranks = [BalancedSampler(labels, 7, lambda: 2, num_replicas=2, rank=r) for r in (0, 1)]
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [len(r) for r in ranks] == [50, 50]
    # reference: one multinomial draw of 100 with weights 1 / (images of the item's class), epoch 2's seed
    weights = torch.tensor([1 / 80] * 80 + [1 / 15] * 15 + [1 / 4] * 4, dtype=torch.double)
    generator = torch.Generator().manual_seed(epoch_seed(7, 2))
    draw = torch.multinomial(weights, 100, replacement=True, generator=generator).tolist()
    assert shares[0] == draw[0::2] and shares[1] == draw[1::2]  # disjoint positions that make up the draw
    assert shares[0] != shares[1]


def test_cached_features_are_drawn_balanced_too():
    import torchvision
    from torch.utils.data import DataLoader

    from ftlab.data import ImageDataModule
    from ftlab.data.preprocessing import Preprocessing
    from ftlab.data.sources.synthetic import SyntheticSource
    from ftlab.features.store import CachedFeatures

    features = CachedFeatures(torch.randn(1, len(LABELS), 4), LABELS, random_view=False)

    class _Cache:  # stands in for FeatureCache: serves the training features
        def loader(self, split, datamodule, epoch):
            return DataLoader(features, batch_size=10)

    prep = Preprocessing.from_weights(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    dm = ImageDataModule(SyntheticSource(train_size=8, val_size=8), prep, sampler="balanced")
    dm.attach_cache(_Cache())  # type: ignore[arg-type]
    labels = torch.cat([y for _, y in dm.train_dataloader()])
    assert isinstance(dm.train_dataloader().sampler, BalancedSampler) and len(labels) == len(LABELS)
    assert min(class_counts(labels, 3)) > 15  # class 2 has 5 images: drawn far more often than 5 times


class _IndexImages:
    """2x2 images whose every pixel is the image's index (< 256): the batches tell which items were drawn."""

    classes = ["a", "b", "c"]
    fixed_size = True

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def load(self) -> tuple[TensorImages, TensorImages]:
        index = torch.arange(len(self.labels), dtype=torch.uint8)
        images = index.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
        return TensorImages(images, self.labels), TensorImages(images[:3], self.labels[:3])

    def assets(self) -> list:
        return []


class _RecordDrawn(L.LightningModule):
    """Trains a linear layer; each rank writes `rank<r>.json`: per epoch, the indices its batches held."""

    def __init__(self, out_dir) -> None:
        super().__init__()
        self.net, self.out_dir = nn.Linear(12, 3), out_dir
        self.drawn: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        images, labels = batch  # preprocessed: index / 255 with mean 0 and std 1
        index = (images[:, 0, 0, 0] * 255).round().long()
        self.drawn.setdefault(self.current_epoch, []).extend(index.tolist())
        return nn.functional.cross_entropy(self.net(images.flatten(1)), labels)

    def on_train_end(self) -> None:
        (self.out_dir / f"rank{self.global_rank}.json").write_text(json.dumps(self.drawn))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@needs_gloo
def test_two_ranks_in_a_fit_draw_disjoint_shares_of_each_epochs_draw(tmp_path, monkeypatch):
    """`data.sampler=balanced` in a 2-rank DDP fit (gloo) through the real DataModule: in each epoch, rank
    r's batches hold positions r, r + 2, ... of one draw that is a function of (seed, epoch) alone."""
    from ftlab.data import ImageDataModule
    from ftlab.data.preprocessing import Preprocessing

    labels = LABELS[:-1]  # 99 items: each epoch draws 100, 50 per rank
    prep = Preprocessing(crop_size=2, resize_size=2, mean=(0.0,) * 3, std=(1.0,) * 3)
    source = _IndexImages(labels)
    data = ImageDataModule(source, prep, batch_size=10, augment="none", sampler="balanced", seed=7)
    trainer = two_cpu_ranks(
        monkeypatch, max_epochs=2, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp_path
    )
    trainer.fit(_RecordDrawn(tmp_path), datamodule=data)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # reference: one multinomial draw of 100 with weights 1 / (images of the item's class), the epoch's seed
    weights = torch.tensor([1 / 80] * 80 + [1 / 15] * 15 + [1 / 4] * 4, dtype=torch.double)
    draws = []
    for epoch in (0, 1):
        generator = torch.Generator().manual_seed(epoch_seed(7, epoch))
        draws.append(torch.multinomial(weights, 100, replacement=True, generator=generator).tolist())
        assert [len(r[str(epoch)]) for r in ranks] == [50, 50]
        assert ranks[0][str(epoch)] == draws[epoch][0::2] and ranks[1][str(epoch)] == draws[epoch][1::2]
    assert draws[0] != draws[1]  # a new draw each epoch
