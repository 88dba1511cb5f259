"""The LR finder's suggestion rules (`finetune.lr_find_rule`) on hand-made loss curves with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ftlab.errors import FtlabError
from ftlab.finetune.lr_suggestion import RULES, longest_descent, suggest, sweep, usable_curve
from ftlab.training.recipes import recipe_callbacks
from ftlab.training.run import build_schedule
from ftlab.training.settings import load_settings

LRS = sweep(1e-5, 10.0, 121)  # 20 points a decade, log10(lr) = -5, -4.95, ..., 1
X = np.log10(LRS)
STEP = 0.05  # one grid step in decades


def _decades(lr: float) -> float:
    return float(np.log10(lr))


def _valley_curve() -> np.ndarray:
    """Flat (slightly rising, so not a descent) up to 1e-3, a straight fall in log LR down to 1e-1, a rise as
    steep for half a decade, then a blow-up. The smoothed curve (a centred average over +-5 points, a quarter
    decade) starts falling a quarter decade before 1e-3 and, the bend at the bottom being symmetric, is
    lowest at 1e-1: its descent spans [10**-3.25, 1e-1], whose log-middle is 10**-2.125."""
    flat = 2.0 + 0.001 * (X + 5)
    fall = 2.004 - 0.75 * (X + 3)
    rise = 0.504 + 0.75 * (X + 1) + 50 * np.maximum(0.0, X + 0.5) ** 2
    return np.where(X < -3, flat, np.where(X <= -1, fall, rise))


def test_valley_is_the_middle_of_the_longest_descent():
    assert abs(_decades(suggest(LRS, _valley_curve(), "valley")) - (-2.125)) <= STEP


def test_min_div10_is_a_decade_below_the_minimum():
    parabola = 1.0 + (X + 1.5) ** 2  # minimum at 10**-1.5; rises to 7.25 at 10 (diverged there)
    assert abs(_decades(suggest(LRS, parabola, "min_div10")) - (-2.5)) <= STEP
    assert abs(_decades(suggest(LRS, _valley_curve(), "min_div10")) - (-2.0)) <= STEP


def test_steepest_is_where_the_loss_falls_fastest_without_the_smoothing_lag():
    sigmoid = 2.0 / (1 + np.exp(3 * (X + 2))) + 0.1 + np.where(X > 0, 10 ** (2 * X) - 1, 0.0)
    assert abs(_decades(suggest(LRS, sigmoid, "steepest")) - (-2.0)) <= 2 * STEP


def test_the_rules_differ_on_a_long_gentle_descent_ending_in_a_cliff():
    """Gentle fall from 1e-5 to 1e-1, a cliff over the next half decade, then divergence: steepest picks
    the cliff (just below the minimum), valley the log-middle of the whole descent (10**-2.75), min_div10
    a decade below the bottom (10**-1.5)."""
    gentle = 3.0 - 0.1 * (X + 5)
    cliff = 2.6 - 3.0 * (X + 1)
    curve = np.where(X <= -1, gentle, np.where(X <= -0.5, cliff, 1.1 + 40 * (X + 0.5) ** 2))
    chosen = {rule: _decades(suggest(LRS, curve, rule)) for rule in RULES}
    assert -1.0 <= chosen["steepest"] <= -0.5
    assert abs(chosen["valley"] - (-2.75)) <= 3 * STEP
    assert abs(chosen["min_div10"] - (-1.5)) <= 2 * STEP


@pytest.mark.parametrize(("rule", "moves"), [("valley", 0.35), ("min_div10", 0.15), ("steepest", 0.7)])
def test_noise_moves_each_rule_a_bounded_distance(rule, moves):
    """Seeded batch-to-batch noise (5 % of the loss) moves valley by at most a third of a decade on the valley
    curve and min_div10 (the lowest point of a V) hardly at all; the steepest point, a derivative of a noisy
    curve, moves up to 0.7 decades."""
    clean = _decades(suggest(LRS, _valley_curve(), rule))
    rng = np.random.default_rng(0)
    for _ in range(5):
        noisy = _valley_curve() * (1 + 0.05 * rng.standard_normal(len(LRS)))
        assert abs(_decades(suggest(LRS, noisy, rule)) - clean) <= moves


def test_valley_ignores_the_wiggles_of_a_noisy_flat_start():
    """Without the noise margin and the trim to where the descent leaves its first level, one high point of
    noise in the flat start stretches the valley back and pulls the suggestion most of a decade lower."""
    rng = np.random.default_rng(1)
    curve = _valley_curve() * (1 + 0.05 * rng.standard_normal(len(LRS)))
    lrs, smoothed = usable_curve(LRS, curve)
    first, _ = longest_descent(smoothed)
    assert X[first] < -4.0  # the bare longest chain starts deep in the flat part
    assert abs(_decades(suggest(LRS, curve, "valley")) - (-2.125)) <= 0.35


def test_a_diverged_tail_is_cut_before_any_rule_sees_it():
    curve = _valley_curve()
    curve[X > -0.8] = np.inf  # the test blew up
    lrs, smoothed = usable_curve(LRS, curve)
    assert len(lrs) == len(smoothed) == int(np.sum(X <= -0.8))
    assert all(np.isfinite(suggest(LRS, curve, rule)) for rule in RULES)
    assert np.isnan(suggest(LRS, np.full(len(LRS), np.nan), "valley"))


def _brute_force_longest(curve: list[float]) -> int:
    for size in range(len(curve), 0, -1):
        for picks in itertools.combinations(range(len(curve)), size):
            if all(curve[a] > curve[b] for a, b in itertools.pairwise(picks)):
                return size
    return 0


def test_longest_descent_against_a_brute_force_search():
    rng = np.random.default_rng(1)
    for _ in range(30):
        curve = rng.integers(0, 6, size=9).astype(float).tolist()
        first, last = longest_descent(np.array(curve))
        best = _brute_force_longest(curve)
        # a strictly decreasing subsequence of the optimal length runs from `first` to `last`
        inner = range(first + 1, last)
        assert any(
            all(a > b for a, b in itertools.pairwise([curve[first], *(curve[i] for i in mid), curve[last]]))
            for mid in itertools.combinations(inner, best - 2)
        ) or (best == 1 and first == last)
    assert longest_descent(np.array([3.0, 5, 2, 4, 1, 0.5, 6])) == (
        1,
        5,
    )  # 5 4 1 0.5 (3 2 1 0.5 starts earlier)


def test_the_rule_is_a_checked_setting_that_reaches_the_callback(compose_cfg):
    cfg = compose_cfg(["+experiment=smoke", "finetune.lr_find=true", "finetune.lr_find_rule=min_div10"])
    settings = load_settings(cfg)
    schedule = build_schedule(settings.finetune, ["stem", "layer1"])
    (finder,) = recipe_callbacks(settings, schedule)
    assert finder.rule == "min_div10"
    with pytest.raises(FtlabError, match=r"finetune.lr_find_rule='valey'.*Did you mean.*valley"):
        load_settings(compose_cfg(["+experiment=smoke", "finetune.lr_find_rule=valey"]))
