"""`python -m ftlab.bench --quick` runs and writes the documented JSON (the figures themselves are not
asserted: performance claims come from the benchmark, not from timed tests)."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import run_cli


@pytest.mark.slow
def test_quick_bench_writes_its_json(tmp_path):
    result = run_cli(
        "ftlab.bench", ["--quick", "--json", str(tmp_path / "bench.json")], cwd=tmp_path, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {"cache_speedup", "ftlab_vs_hand", "device", "settings", "models", "pipeline_img_s"} <= data.keys()
    assert data["cache_speedup"] > 0 and data["ftlab_vs_hand"] > 0
    assert "ftlab bench on" in result.stdout
