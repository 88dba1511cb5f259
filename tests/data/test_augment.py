"""Augmentation presets and MixUp/CutMix: soft targets, torchvision equivalence, cache rule, device hook."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torchvision.transforms import v2

from ftlab.data import ImageDataModule
from ftlab.data.augment import BatchMix, ImageAugment, augment_key, parse_augment
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.errors import FtlabError
from ftlab.features.cache import FeatureCache
from ftlab.features.settings import CacheSettings

PREP = Preprocessing.from_weights(torchvision.models.ResNet18_Weights.IMAGENET1K_V1).at_size(32)


def _batch(n: int = 8, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(n, 3, 16, 16, generator=generator)
    labels = torch.arange(n) % classes
    return images, labels


def test_mixup_soft_targets_sum_to_one_and_mix_images_by_their_weight():
    images, labels = _batch()
    torch.manual_seed(3)
    mixed, soft = BatchMix(4, mixup_alpha=0.4)(images, labels)
    assert soft.shape == (8, 4)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(8))
    # independent check: image i is lam * x_i + (1 - lam) * x_{i-1}, lam = weight of its own label
    lam = float(soft[0, labels[0]])
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.roll(1, 0))
    assert 0.0 < lam < 1.0


def test_cutmix_soft_targets_equal_the_pasted_area():
    images, labels = _batch()
    torch.manual_seed(5)
    mixed, soft = BatchMix(4, cutmix_alpha=1.0)(images, labels)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(8))
    pasted = (mixed[0] != images[0]).any(dim=0).float().mean()  # share of pixels from the rolled image
    torch.testing.assert_close(float(soft[0, labels[0]]), 1.0 - float(pasted))


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_batch_mix_matches_torchvision_with_the_same_seed(mixup, cutmix):
    images, labels = _batch()
    torch.manual_seed(11)
    ours = BatchMix(4, mixup, cutmix)(images, labels)
    torch.manual_seed(11)
    parts = [v2.MixUp(alpha=mixup, num_classes=4)] if mixup else []
    parts += [v2.CutMix(alpha=cutmix, num_classes=4)] if cutmix else []
    reference = (parts[0] if len(parts) == 1 else v2.RandomChoice(parts))(images, labels)
    for got, expected in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, expected)


def test_parse_augment_lists_and_errors():
    assert parse_augment("hflip") == ("hflip",)
    assert parse_augment(["hflip", "randaugment", "none"]) == ("hflip", "randaugment")
    assert parse_augment("hflip+color_jitter") == ("hflip", "color_jitter")
    assert augment_key(("hflip",), mixup_alpha=0.2) == "hflip+mixup"
    assert augment_key(()) == "none"
    with pytest.raises(FtlabError, match="randaugmnt.*Did you mean: randaugment"):
        parse_augment(["randaugmnt"])


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "random_resized_crop", "color_jitter"])
def test_presets_keep_uint8_batches_and_draw_per_image(name):
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    batch = image.expand(16, -1, -1, -1).contiguous()
    out = ImageAugment([name])(batch)
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    distinct = {out[i].numpy().tobytes() for i in range(16)}
    assert len(distinct) > 2  # one parameter draw per image, not one per batch


def _train_loader(augment, **mix):
    dm = ImageDataModule(SyntheticSource(train_size=8, val_size=8), PREP, augment=augment, **mix)
    cache = FeatureCache(CacheSettings(), module=None, schedule=None, datamodule=dm, data_dir="/tmp")  # type: ignore[arg-type]
    return dm, cache


def test_cache_rule_finite_augmentations_only(caplog):
    dm, cache = _train_loader("hflip")
    assert dm.augment == "hflip" and cache.views("train") == 2
    with caplog.at_level(logging.INFO, logger="ftlab.features.cache"):
        for augment, mix in ((["hflip", "random_resized_crop"], {}), ("hflip", {"mixup_alpha": 0.2})):
            dm, cache = _train_loader(augment, **mix)
            assert cache.loader("train", 0, 2) is None  # served from images, never from cached views
    assert "train not cached" in caplog.text and "hflip+mixup" in caplog.text


def test_device_hook_augments_and_mixes_only_training_batches():
    dm = ImageDataModule(
        SyntheticSource(train_size=8, val_size=8, num_classes=3),
        PREP,
        augment=["color_jitter"],
        mixup_alpha=0.4,
    )

    class _Trainer:
        training = True
        lightning_module = None

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0])
    dm.trainer = _Trainer()  # type: ignore[assignment]
    torch.manual_seed(0)
    train_images, soft = dm.on_after_batch_transfer((images, labels), 0)
    assert soft.shape == (4, 3)
    _Trainer.training = False
    val_images, hard = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(hard, labels)
    torch.testing.assert_close(val_images, dm.device_transform(images))
    assert not torch.allclose(train_images, val_images)
