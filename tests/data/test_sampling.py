"""Balanced sampler: equal class frequencies over epochs, per-epoch reproducibility, disjoint DDP shares."""

from __future__ import annotations

import torch

from ftlab.data.sampling import BalancedSampler, class_counts, epoch_seed

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
    from ftlab.features.cache import CachedFeatures

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
