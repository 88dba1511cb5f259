"""PhaseTimer counts every instant once: loader calls before validation before training epochs."""

from __future__ import annotations

import pytest

from ftlab.benchmark.timing import PhaseTimer


def test_nested_intervals_are_counted_once(tmp_path):
    timer = PhaseTimer(str(tmp_path / "t.json"))
    timer.intervals = [
        ("loaders", 0.0, 2.0),  # train loader (cache build) before the first epoch
        ("train_epoch", 2.0, 10.0),
        ("val", 7.0, 10.0),  # validation inside the epoch ...
        ("loaders", 7.0, 8.0),  # ... whose loader call builds the val cache
        ("train_epoch", 10.0, 13.0),
        ("val", 12.0, 13.0),
    ]
    out = timer.summary(fit_end=14.0)
    assert out["cache_build_s"] == pytest.approx(3.0)
    assert out["val_epochs_s"] == pytest.approx(3.0)
    assert out["train_epochs_s"] == pytest.approx(5.0 + 2.0)
    assert out["epochs"] == 2
