"""Transferability scores of frozen features: LogME, cross-validated kNN accuracy, linear-probe accuracy.

LogME (You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021) treats each class's one-vs-rest target y (n values, 1 for the class, 0 otherwise) as a Bayesian
linear regression on the features F (n x D): w ~ N(0, I / alpha), y | F, w ~ N(F w, I / beta). The
evidence p(y | F, alpha, beta) integrates w out; its logarithm is

    n/2 log beta + D/2 log alpha - n/2 log 2 pi - beta/2 |F m - y|^2 - alpha/2 |m|^2 - 1/2 log det A,

with A = alpha I + beta F^T F and m = beta A^-1 F^T y. LogME maximises it over alpha and beta by MacKay's
fixed point (gamma = sum_i beta s_i / (alpha + beta s_i) over the eigenvalues s_i of F^T F; alpha <- gamma /
|m|^2, beta <- (n - gamma) / |F m - y|^2), which one SVD of F makes cheap, and reports the maximum divided
by n, averaged over the classes (or the labels of a multi-label task: 2-D 0/1 targets, one column each).
Higher is better; the values compare models on one data set, not data sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class Spectrum:
    """The SVD of the features that every target shares: squared singular values and the left vectors."""

    n: int  # images
    dim: int  # feature dimension D
    s: np.ndarray  # (r,) eigenvalues of F^T F that are not zero (r = rank)
    u: np.ndarray  # (n, r) left singular vectors

    @classmethod
    def of(cls, features: np.ndarray) -> Spectrum:
        f = np.asarray(features, dtype=np.float64)
        u, sigma, _ = np.linalg.svd(f, full_matrices=False)
        keep = sigma > sigma.max(initial=0.0) * max(f.shape) * np.finfo(np.float64).eps
        return cls(n=f.shape[0], dim=f.shape[1], s=sigma[keep] ** 2, u=u[:, keep])


def evidence_terms(spec: Spectrum, y: np.ndarray, alpha: float, beta: float) -> tuple[float, float, float]:
    """(log evidence / n, |m|^2, |F m - y|^2) at (alpha, beta), from the spectrum (no D x D matrix)."""
    z = spec.u.T @ y  # y's coordinates in the column space of F
    outside = float(y @ y - z @ z)  # the part of y that no w can fit
    denom = alpha + beta * spec.s
    m2 = float(np.sum(beta**2 * spec.s * z**2 / denom**2))
    res2 = float(np.sum((alpha * z / denom) ** 2)) + max(outside, 0.0)
    logdet = float(np.sum(np.log(denom))) + (spec.dim - spec.s.size) * math.log(alpha)
    n = spec.n
    evidence = (
        n / 2 * math.log(beta)
        + spec.dim / 2 * math.log(alpha)
        - n / 2 * LOG_2PI
        - beta / 2 * res2
        - alpha / 2 * m2
        - logdet / 2
    )
    return evidence / n, m2, res2


def maximise_evidence(
    spec: Spectrum, y: np.ndarray, max_iter: int = 100, tol: float = 1e-5
) -> tuple[float, float, float]:
    """(max log evidence / n, alpha, beta) for one target by LogME's fixed-point iteration."""
    y = np.asarray(y, dtype=np.float64)
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        _, m2, res2 = evidence_terms(spec, y, alpha, beta)
        gamma = float(np.sum(beta * spec.s / (alpha + beta * spec.s)))
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = (spec.n - gamma) / max(res2, 1e-12)
        done = abs(new_alpha / alpha - 1) < tol and abs(new_beta / beta - 1) < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return evidence_terms(spec, y, alpha, beta)[0], alpha, beta


def one_vs_rest(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """(n, C) 0/1 targets: one column per class of integer labels, or 2-D multi-hot labels as they are."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return (labels > 0.5).astype(np.float64)
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    return np.eye(classes, dtype=np.float64)[labels.astype(np.int64)]


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of `features` (n, D) for integer labels (n,) or multi-hot labels (n, C): the mean over
    classes (labels) of the maximised log evidence per image."""
    spec = Spectrum.of(features)
    targets = one_vs_rest(labels)
    present = [c for c in range(targets.shape[1]) if 0 < targets[:, c].sum() < targets.shape[0]]
    values = [maximise_evidence(spec, targets[:, c])[0] for c in present or range(targets.shape[1])]
    return float(np.mean(values))


def _unit(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def _folds(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds (by class; by the first label column for multi-hot labels), shuffled by seed."""
    from sklearn.model_selection import KFold, StratifiedKFold

    index = np.zeros(len(labels))
    if labels.ndim == 1 and labels.size and np.bincount(labels.astype(np.int64)).min() >= folds:
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(index, labels))
    return list(KFold(folds, shuffle=True, random_state=seed).split(index))


def _accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Share of correct predictions; for multi-hot labels, of correct label decisions."""
    return float(np.mean(truth == predicted))


def knn_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    k: int = 10,
    folds: int = 5,
    seed: int = 0,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """Accuracy of a k-nearest-neighbour vote on L2-normalised features (Euclidean = cosine ranking):
    cross-validated over `folds` folds of (features, labels), or trained on them and scored on `val`."""
    from sklearn.neighbors import KNeighborsClassifier

    def score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
        model = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), algorithm="brute")
        model.fit(_unit(train_x), train_y)
        return _accuracy(test_y, model.predict(_unit(test_x)))

    return _evaluate(score, features, labels, folds, seed, val)


def probe_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    c: float = 1.0,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """Accuracy of a linear probe (standardised features, L2-regularised logistic regression with inverse
    strength `c`; one per label for multi-hot labels): cross-validated, or trained here, scored on `val`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
        probe = LogisticRegression(C=c, max_iter=2000)
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(probe) if train_y.ndim == 2 else probe)
        model.fit(train_x, train_y)
        return _accuracy(test_y, model.predict(test_x))

    return _evaluate(score, features, labels, folds, seed, val)


def _evaluate(
    score: object,
    features: np.ndarray,
    labels: np.ndarray,
    folds: int,
    seed: int,
    val: tuple[np.ndarray, np.ndarray] | None,
) -> float:
    """Mean of `score(train_x, train_y, test_x, test_y)` over the folds (weighted by fold size), or on val."""
    assert callable(score)
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    if val is not None:
        return float(score(x, y, np.asarray(val[0], dtype=np.float64), np.asarray(val[1])))
    correct = 0.0
    for train, test in _folds(y, folds, seed):
        correct += score(x[train], y[train], x[test], y[test]) * len(test)
    return correct / len(y)
