"""Multi-label pieces checked against independent references: scikit-learn's metrics, a brute-force threshold
search, hand counts, and PyTorch's own binary cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score
from torch.nn import functional as F

from ftlab.data.audit import MULTI_LABEL_NOTE, audit
from ftlab.data.augment import BatchMix
from ftlab.data.batches import CollateFeatures
from ftlab.data.datasets import FileImages, TensorImages
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.sampling import balanced_weights, class_counts
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.errors import FtlabError
from ftlab.features.store import CachedFeatures
from ftlab.inference.tta import tta_multilabel_logits
from ftlab.models.loss import LossSettings, MultiLabelLoss, positive_weights, smooth_binary
from ftlab.models.module import Classifier
from ftlab.models.multilabel import MultiLabelScores, predicted_labels, tune_thresholds


def _case(seed: int = 0, n: int = 60, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities that carry some signal about multi-hot targets, with ties (rounded to 0.05)."""
    gen = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, c, generator=gen) < 0.35).float()
    targets[0] = 1.0  # every label has a positive
    probs = (0.4 * targets + 0.6 * torch.rand(n, c, generator=gen)).mul(20).round().div(20)
    return probs, targets


def test_scores_match_scikit_learn() -> None:
    probs, targets = _case()
    thresholds = torch.tensor([0.3, 0.5, 0.45, 0.6])
    scores = MultiLabelScores.of(probs, targets, thresholds)
    y, p = targets.numpy().astype(int), probs.numpy().astype(np.float64)
    pred = (p >= thresholds.numpy()).astype(int)
    ap = [average_precision_score(y[:, k], p[:, k]) for k in range(4)]
    np.testing.assert_allclose(scores.ap, ap, atol=1e-5)
    np.testing.assert_allclose(scores.mean_ap, average_precision_score(y, p, average="macro"), atol=1e-5)
    np.testing.assert_allclose(
        scores.f1_macro, f1_score(y, pred, average="macro", zero_division=0), atol=1e-6
    )
    np.testing.assert_allclose(
        scores.f1_micro, f1_score(y, pred, average="micro", zero_division=0), atol=1e-6
    )
    np.testing.assert_allclose(scores.f1, f1_score(y, pred, average=None, zero_division=0), atol=1e-6)
    np.testing.assert_allclose(
        scores.precision, precision_score(y, pred, average=None, zero_division=0), atol=1e-6
    )
    np.testing.assert_allclose(scores.recall, recall_score(y, pred, average=None, zero_division=0), atol=1e-6)
    np.testing.assert_allclose(
        scores.precision_micro, precision_score(y, pred, average="micro", zero_division=0), atol=1e-6
    )
    assert scores.support == y.sum(axis=0).tolist()


def test_a_label_without_positives_has_no_ap_and_stays_out_of_the_mean() -> None:
    probs, targets = _case(seed=3)
    targets[:, 2] = 0.0
    scores = MultiLabelScores.of(probs, targets, None)
    assert np.isnan(scores.ap[2])
    y, p = targets.numpy().astype(int), probs.numpy()
    expected = np.mean([average_precision_score(y[:, k], p[:, k]) for k in (0, 1, 3)])
    np.testing.assert_allclose(scores.mean_ap, expected, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_tuned_thresholds_reach_the_best_f1_of_a_brute_force_search(seed: int) -> None:
    probs, targets = _case(seed)
    thresholds = tune_thresholds(probs, targets)
    y, p = targets.numpy().astype(int), probs.numpy()
    for k in range(p.shape[1]):
        candidates = np.concatenate([np.unique(p[:, k]), [np.inf]])  # every distinct cut, and none
        hits = (p[:, k][None, :] >= candidates[:, None]).astype(int)  # one row of predictions per cut
        tp = (hits * y[:, k]).sum(axis=1)
        best = float((2 * tp / (hits.sum(axis=1) + y[:, k].sum())).max())  # F1 = 2TP / (2TP + FP + FN)
        chosen = f1_score(y[:, k], predicted_labels(probs, thresholds)[:, k].numpy(), zero_division=0)
        assert chosen == pytest.approx(best, abs=1e-9)


def test_a_label_never_positive_keeps_the_default_threshold() -> None:
    probs, targets = _case()
    targets[:, 1] = 0.0
    assert float(tune_thresholds(probs, targets)[1]) == 0.5


def test_pos_weight_auto_is_negatives_over_positives_per_label() -> None:
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float32)
    # label 0: 3 positive, 2 negative; label 1: 2 / 3; label 2: none positive -> 1
    expected = torch.tensor([2 / 3, 3 / 2, 1.0])
    torch.testing.assert_close(positive_weights("auto", labels, 3), expected)
    torch.testing.assert_close(positive_weights([1.0, 2.0, 3.0], None, 3), torch.tensor([1.0, 2.0, 3.0]))
    assert positive_weights(None, labels, 3) is None
    with pytest.raises(FtlabError, match="3 non-negative weights"):
        positive_weights([1.0, 2.0], None, 3)
    with pytest.raises(FtlabError, match="loss.pos_weight"):
        LossSettings(pos_weight="often")


def test_bce_matches_pytorch_with_weights_pos_weight_and_smoothing() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    targets = (torch.rand(6, 3, generator=gen) < 0.5).float()
    loss = MultiLabelLoss()
    torch.testing.assert_close(loss(logits, targets), F.binary_cross_entropy_with_logits(logits, targets))
    loss.weight, loss.pos_weight = torch.tensor([1.0, 0.5, 2.0]), torch.tensor([3.0, 1.0, 0.25])
    expected = F.binary_cross_entropy_with_logits(
        logits, targets, weight=torch.tensor([1.0, 0.5, 2.0]), pos_weight=torch.tensor([3.0, 1.0, 0.25])
    )
    torch.testing.assert_close(loss(logits, targets), expected)
    smoothed = MultiLabelLoss(label_smoothing=0.2)
    by_hand = torch.where(targets > 0, 0.9, 0.1)  # 1 -> 1 - 0.2 + 0.1, 0 -> 0.1
    torch.testing.assert_close(smooth_binary(targets, 0.2), by_hand)
    torch.testing.assert_close(smoothed(logits, targets), F.binary_cross_entropy_with_logits(logits, by_hand))


def test_the_multi_label_module_trains_on_bce_and_refuses_single_label_rules() -> None:
    torch.manual_seed(0)
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=32, multi_label=True).eval()
    images = torch.randn(4, 3, 32, 32)
    targets = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=torch.float32)
    with torch.no_grad():
        expected = F.binary_cross_entropy_with_logits(module.net(images), targets)
        torch.testing.assert_close(module.training_step((images, targets), 0), expected)
    with pytest.raises(FtlabError, match="loss.pos_weight=auto"):
        Classifier("resnet18", ["a", "b"], weights=None, multi_label=True, loss={"class_weights": "auto"})
    with pytest.raises(FtlabError, match="multi-label data only"):
        Classifier("resnet18", ["a", "b"], weights=None, loss={"pos_weight": "auto"})


def test_multi_hot_rows_through_datasets_cache_collate_counts_and_sampler() -> None:
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.float32)
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    torch.testing.assert_close(TensorImages(images, labels)[1][1], labels[1])
    files = FileImages(["a.png"] * 2, [labels[0], labels[3]])  # rows kept by data.exclude: one tensor
    torch.testing.assert_close(files.labels, labels[[0, 3]])
    cached = CachedFeatures(torch.zeros(1, 4, 5), labels, random_view=False)
    batch = CollateFeatures(2)([cached[i] for i in range(4)])
    torch.testing.assert_close(batch.labels, labels)
    assert class_counts(labels, 3) == [3, 1, 1]
    # weight 1 / (images carrying the rarest label); images with no label form their own group
    expected = torch.tensor([1 / 3, 1.0, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(balanced_weights(labels), expected)
    assert balanced_weights(torch.tensor([0, 0, 1])).tolist() == [0.5, 0.5, 1.0]  # single-label as before


def test_mixup_mixes_multi_hot_targets_with_the_image_weight() -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 3, 8, 8)
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    mixed, targets = BatchMix(3, mixup_alpha=0.4)(images, labels)
    lam = float((mixed[0, 0, 0, 0] - images[3, 0, 0, 0]) / (images[0, 0, 0, 0] - images[3, 0, 0, 0]))
    torch.testing.assert_close(targets, lam * labels + (1 - lam) * labels.roll(1, 0), atol=1e-4, rtol=0)


def test_the_synthetic_source_draws_several_labels_per_image() -> None:
    train, val = SyntheticSource(num_classes=4, train_size=40, val_size=8, multi_label=True).load()
    assert train.labels.shape == (40, 4) and train.labels.dtype == torch.float32
    assert bool((train.labels.sum(dim=1) >= 1).all()) and bool((train.labels.sum(dim=1) >= 2).any())
    single, _ = SyntheticSource(num_classes=4, train_size=40, val_size=8).load()
    assert single.labels.ndim == 1


def test_multi_label_tta_averages_sigmoid_probabilities() -> None:
    linear = torch.nn.Linear(3 * 8 * 8, 3)
    images = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def logits(x: torch.Tensor) -> torch.Tensor:
        return linear(x.flatten(1))

    with torch.no_grad():
        mean = (torch.sigmoid(logits(images)) + torch.sigmoid(logits(images.flip(-1)))) / 2
        torch.testing.assert_close(torch.sigmoid(tta_multilabel_logits(logits, images, "hflip")), mean)
        torch.testing.assert_close(tta_multilabel_logits(logits, images, "none"), logits(images))


def test_the_audit_counts_labels_and_explains_why_it_skips_the_label_check() -> None:
    train, val = SyntheticSource(num_classes=3, train_size=12, val_size=6, multi_label=True).load()
    extractor = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    prep = Preprocessing(resize_size=32, crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    result, _ = audit({"train": train, "val": val}, ["a", "b", "c"], extractor, prep)
    counts = {name: [c["train"], c["val"]] for name, c in result.counts.items()}
    expected = {n: [int(train.labels[:, k].sum()), int(val.labels[:, k].sum())] for k, n in enumerate("abc")}
    assert counts == expected
    assert result.label_suspects == [] and MULTI_LABEL_NOTE in result.notes
