"""The transferability scores against independent computations: LogME's fixed point against the log evidence
evaluated directly (the Gaussian marginal likelihood of y) on a grid of alpha and beta; kNN accuracy against a
brute-force vote; the linear probe against a logistic regression fitted with torch's L-BFGS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import StratifiedKFold

from ftlab.selection.scores import (
    Spectrum,
    evidence_terms,
    knn_accuracy,
    logme,
    maximise_evidence,
    one_vs_rest,
    probe_accuracy,
)


def direct_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) / n by definition: w integrated out, y ~ N(0, I / beta + F F^T / alpha)."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y))) / n


def _clusters(n: int, dim: int, classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, dim))
    return centres[labels] + spread * rng.normal(size=(n, dim)), labels


@pytest.mark.parametrize(("n", "dim"), [(60, 12), (25, 40)])  # more images than dimensions, and fewer
def test_fixed_point_reaches_the_maximum_of_the_direct_evidence_on_a_grid(n: int, dim: int) -> None:
    features, labels = _clusters(n, dim, 3, 1.5, seed=n)
    y = (labels == 1).astype(float)
    spec = Spectrum.of(features)
    best, alpha, beta = maximise_evidence(spec, y)
    # the spectral formula is the evidence itself, at the optimum and anywhere else
    for a, b in ((alpha, beta), (0.3, 7.0), (20.0, 0.5)):
        assert evidence_terms(spec, y, a, b)[0] == pytest.approx(
            direct_log_evidence(features, y, a, b), abs=1e-9
        )
    grid = np.exp(np.linspace(-7, 7, 41))
    values = np.array([[direct_log_evidence(features, y, a, b) for b in grid] for a in grid])
    assert best >= values.max() - 1e-9  # no grid point beats the fixed point
    i, j = np.unravel_index(values.argmax(), values.shape)
    assert best - values.max() < 0.02  # and the grid's best is close (its step is a factor 1.42)
    assert abs(np.log(alpha / grid[i])) <= 0.5 and abs(np.log(beta / grid[j])) <= 0.5
    fine = [direct_log_evidence(features, y, alpha * s, beta * t) for s in (0.9, 1.1) for t in (0.9, 1.1)]
    assert best >= max(fine)  # a local maximum in both directions


def test_logme_is_the_mean_over_one_vs_rest_targets_and_multi_hot_labels_agree() -> None:
    features, labels = _clusters(45, 10, 3, 1.0, seed=3)
    per_class = [maximise_evidence(Spectrum.of(features), (labels == c).astype(float))[0] for c in range(3)]
    assert logme(features, labels) == pytest.approx(np.mean(per_class), rel=1e-12)
    assert logme(features, one_vs_rest(labels)) == pytest.approx(np.mean(per_class), rel=1e-12)
    multi = np.stack([labels == 0, labels != 2], axis=1).astype(np.float32)  # two overlapping labels
    expected = np.mean(
        [maximise_evidence(Spectrum.of(features), multi[:, k].astype(float))[0] for k in range(2)]
    )
    assert logme(features, multi) == pytest.approx(expected, rel=1e-12)


def test_logme_prefers_features_that_carry_the_labels() -> None:
    informative, labels = _clusters(80, 16, 4, 0.7, seed=5)
    noise = np.random.default_rng(6).normal(size=informative.shape) * informative.std()
    assert logme(informative, labels) > logme(noise, labels) + 0.1


def brute_force_knn(train_x, train_y, test_x, k: int) -> np.ndarray:
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(test_x) @ unit(train_x).T
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    votes = np.stack([np.bincount(train_y[row], minlength=train_y.max() + 1) for row in nearest])
    return votes.argmax(axis=1)  # ties: the smallest label, as scikit-learn's vote


def test_knn_accuracy_equals_a_brute_force_vote_per_fold_and_on_val() -> None:
    features, labels = _clusters(90, 8, 2, 1.6, seed=7)  # two classes, odd k: no tied votes
    folds = StratifiedKFold(5, shuffle=True, random_state=11).split(features, labels)
    correct = sum(
        (brute_force_knn(features[a], labels[a], features[b], 7) == labels[b]).sum() for a, b in folds
    )
    assert knn_accuracy(features, labels, k=7, folds=5, seed=11) == pytest.approx(correct / len(labels))
    assert 0.5 < correct / len(labels) < 1.0  # neither trivial nor hopeless: the vote decides
    val_x, val_y = features[:30] + 0.3 * np.random.default_rng(8).normal(size=(30, 8)), labels[:30]
    expected = (brute_force_knn(features, labels, val_x, 7) == val_y).mean()
    assert knn_accuracy(features, labels, k=7, val=(val_x, val_y)) == pytest.approx(expected)


def torch_logistic_regression(train_x, train_y, test_x, c: float) -> np.ndarray:
    """Multinomial logistic regression minimising C * sum(cross-entropy) + |W|^2 / 2 (bias not penalised) on
    standardised features, by L-BFGS: scikit-learn's objective, solved independently."""
    mean, std = train_x.mean(0), train_x.std(0)
    std[std == 0] = 1.0
    x = torch.tensor((train_x - mean) / std, dtype=torch.float64)
    y = torch.tensor(train_y)
    classes = int(train_y.max()) + 1
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = c * torch.nn.functional.cross_entropy(x @ w + b, y, reduction="sum") + 0.5 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    test = torch.tensor((test_x - mean) / std, dtype=torch.float64)
    return (test @ w + b).argmax(1).numpy()


def test_probe_accuracy_equals_an_independent_logistic_regression() -> None:
    features, labels = _clusters(80, 6, 3, 2.5, seed=13)
    folds = StratifiedKFold(4, shuffle=True, random_state=2).split(features, labels)
    correct = sum(
        (torch_logistic_regression(features[a], labels[a], features[b], 0.5) == labels[b]).sum()
        for a, b in folds
    )
    ours = probe_accuracy(features, labels, folds=4, seed=2, c=0.5)
    assert ours == pytest.approx(correct / len(labels), abs=1.01 / len(labels))  # at most one near-tie apart
    assert 0.4 < ours < 1.0
