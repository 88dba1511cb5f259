"""LR range test maths: the multipliers swept, the smoothed loss curve, and the suggestion rule (pure; the
callback that runs the test during training is `callbacks/lr_finder.py::LRFinderCallback`)."""

from __future__ import annotations

import numpy as np

DIVERGE = 4.0  # the curve ends where the smoothed loss exceeds DIVERGE x its minimum so far


def sweep(low: float, high: float, steps: int) -> np.ndarray:
    """`steps` LR multipliers spaced evenly in log scale from `low` to `high`."""
    return np.geomspace(low, high, steps)


def smooth(losses: np.ndarray, beta: float = 0.9) -> np.ndarray:
    """Exponential moving average of the losses with bias correction (as fastai's range test)."""
    out, avg = np.empty(len(losses)), 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * float(loss)
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def suggest(lrs: np.ndarray, losses: np.ndarray, beta: float = 0.9, skip: int = 5) -> float:
    """The LR of steepest descent: the smoothed loss (see `smooth`), cut where it first diverges (non-finite
    or above 4x its running minimum), then the point where d(loss)/d(log lr) is most negative, ignoring the
    first `skip` points (the average is still settling). Falls back to the LR of the lowest loss."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses)
    end = int(np.argmin(finite)) if not finite.all() else len(losses)
    curve = smooth(losses[:end], beta)
    running_min = np.minimum.accumulate(curve) if len(curve) else curve
    diverged = np.nonzero(curve > DIVERGE * running_min)[0]
    end = int(diverged[0]) if len(diverged) else len(curve)
    curve, lrs = curve[:end], lrs[:end]
    if len(curve) <= skip + 2:
        return float(lrs[int(np.argmin(curve))]) if len(curve) else float("nan")
    slope = np.gradient(curve, np.log(lrs))
    return float(lrs[skip + int(np.argmin(slope[skip:]))])
