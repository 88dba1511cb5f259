"""LR range test maths: the multipliers swept, the smoothed loss curve, and the suggestion rules (pure; the
callback that runs the test during training is `callbacks/lr_finder.py::LRFinderCallback`).

Rules (`finetune.lr_find_rule`), each applied to the usable part of the curve (`usable_curve`: smoothed
without lag, cut where the loss diverges):

- `steepest` (the default, measured best on the recipes proxy: docs/recipes.md): the LR where the loss falls
  fastest per decade of LR.
- `valley`: the longest descending stretch of the curve (the longest chain of ever lower losses, each step
  down larger than the noise, bumps skipped), and the LR halfway along it in log scale: inside the descent,
  well before its bottom, where the loss is about to blow up.
- `min_div10`: a tenth of the LR of the lowest loss (the LR of the minimum is already too high to train
  with; a decade lower is the classic safe choice).
"""

from __future__ import annotations

import numpy as np

DIVERGE = 4.0  # the curve ends where the smoothed loss exceeds DIVERGE x its minimum so far
RULES = ("steepest", "valley", "min_div10")  # what `finetune.lr_find_rule` accepts
DEFAULT_RULE = "steepest"  # measured best on the recipes proxy (docs/recipes.md, "LR finder: which rule")
HALF_WIDTH = 5  # points each side of the centred average the rules read (a quarter decade at 20 a decade)
NOISE_MARGIN = 2.0  # a step of the valley must fall by more than this many times the smoothed noise
VALLEY_AT = 0.5  # where in the valley the suggestion sits: 0 = its start (low LR), 1 = its bottom


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


def smooth_centred(losses: np.ndarray, half_width: int = HALF_WIDTH) -> np.ndarray:
    """A centred moving average with triangular weights over 2 * half_width + 1 points (fewer at the ends,
    renormalised): about as smooth as `smooth` at beta 0.9, but without its lag (a forward average trails
    the raw curve by about beta / (1 - beta) steps, half a decade of LR for 100 steps over 5 decades, which
    would shift every rule's answer by that much) and without long tails (a bend moves at most half_width
    points)."""
    losses = np.asarray(losses, dtype=float)
    if not len(losses):
        return losses
    weights = np.concatenate([np.arange(1, half_width + 2), np.arange(half_width, 0, -1)]).astype(float)
    total = np.convolve(losses, weights, mode="same")
    norm = np.convolve(np.ones(len(losses)), weights, mode="same")
    return total / norm


def usable_curve(lrs: np.ndarray, losses: np.ndarray, beta: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The LRs and the centred smoothed loss (`smooth_centred`) up to where the test went wrong: the first
    non-finite loss, or the first step whose forward smoothed loss (`smooth`, `beta`) exceeds DIVERGE x its
    minimum so far."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses)
    end = int(np.argmin(finite)) if not finite.all() else len(losses)
    trailing = smooth(losses[:end], beta)
    if len(trailing):
        diverged = np.nonzero(trailing > DIVERGE * np.minimum.accumulate(trailing))[0]
        end = int(diverged[0]) if len(diverged) else end
    return lrs[:end], smooth_centred(losses[:end])


def smoothed_noise(losses: np.ndarray, half_width: int = HALF_WIDTH) -> float:
    """The batch-to-batch noise left in `smooth_centred(losses)`: a robust estimate of the raw noise from the
    second differences (a straight or gently bent curve has none; the median ignores a few sharp bends),
    shrunk by the averaging weights."""
    losses = np.asarray(losses, dtype=float)
    if len(losses) < 3:
        return 0.0
    second = np.diff(losses, 2)
    raw = 1.4826 * float(np.median(np.abs(second - np.median(second)))) / np.sqrt(6.0)
    weights = np.concatenate([np.arange(1, half_width + 2), np.arange(half_width, 0, -1)]).astype(float)
    return raw * float(np.sqrt(np.sum(weights**2)) / np.sum(weights))


def longest_descent(curve: np.ndarray, tol: float = 0.0) -> tuple[int, int]:
    """First and last index of the longest chain of points of `curve`, in order, each lower than the one
    before by more than `tol` (a subsequence, not a run, so a bump of noise does not cut a descent in two;
    `tol` keeps the wiggles of a flat stretch out of it). Of equal chains the one that ends first, each
    point extending the latest of the longest chains before it. (0, 0) for a curve that never falls."""
    n = len(curve)
    if n == 0:
        return 0, 0
    length, start = np.ones(n, dtype=int), np.arange(n)
    for i in range(1, n):
        above = np.nonzero(curve[:i] > curve[i] + tol)[0]  # earlier, higher points this one can extend
        if len(above):
            best = above[::-1][np.argmax(length[above][::-1])]
            length[i], start[i] = length[best] + 1, start[best]
    end = int(np.argmax(length))
    return int(start[end]), end


def valley(lrs: np.ndarray, curve: np.ndarray, tol: float = 0.0) -> float:
    """The LR VALLEY_AT of the way (in log LR) through the curve's longest descent (`longest_descent`, steps
    larger than `tol`), from where the curve last stood at the descent's first level to its last point; the
    lowest LR swept when the loss never falls."""
    first, last = longest_descent(curve, tol)
    if last == first:
        return float(lrs[0])
    # the descent starts where the curve last stood at the chain's first level: one high point of noise
    # early on must not stretch the valley back over a flat start
    first += int(np.nonzero(curve[first : last + 1] >= curve[first] - tol)[0][-1])
    log_lrs = np.log(lrs)
    target = log_lrs[first] + VALLEY_AT * (log_lrs[last] - log_lrs[first])
    return float(lrs[first + int(np.argmin(np.abs(log_lrs[first : last + 1] - target)))])


def min_div10(lrs: np.ndarray, curve: np.ndarray) -> float:
    """A tenth of the LR at the curve's minimum."""
    return float(lrs[int(np.argmin(curve))]) / 10.0


def steepest(lrs: np.ndarray, curve: np.ndarray, skip: int = 5) -> float:
    """The LR where d(loss)/d(log lr) is most negative, ignoring the first `skip` points (the ends of a
    smoothed curve are the least reliable); the LR of the lowest loss when the curve is too short."""
    if len(curve) <= skip + 2:
        return float(lrs[int(np.argmin(curve))])
    slope = np.gradient(curve, np.log(lrs))
    return float(lrs[skip + int(np.argmin(slope[skip:]))])


def suggest(lrs: np.ndarray, losses: np.ndarray, rule: str = DEFAULT_RULE, beta: float = 0.9) -> float:
    """The LR (multiplier) that `rule` (one of RULES) picks from a range test's losses at `lrs`; NaN when no
    loss is usable."""
    if rule not in RULES:
        raise ValueError(f"unknown LR suggestion rule {rule!r}; rules: {', '.join(RULES)}")
    lrs, curve = usable_curve(lrs, losses, beta)
    if not len(curve):
        return float("nan")
    if rule == "valley":
        return valley(
            lrs, curve, NOISE_MARGIN * smoothed_noise(np.asarray(losses, dtype=float)[: len(curve)])
        )
    if rule == "min_div10":
        return min_div10(lrs, curve)
    return steepest(lrs, curve)
