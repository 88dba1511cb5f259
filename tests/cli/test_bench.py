"""`python -m ftlab.bench` as users run it: the quick bench's JSON, and `--main-job` on a shrunk config
(the real training command in a subprocess, on stand-in assets the bench stages itself)."""

from __future__ import annotations

import json

import pytest

from ftlab.cli.bench import _variants
from ftlab.errors import FtlabError
from tests.helpers.cli import offline_env, run_cli


@pytest.mark.slow
def test_quick_bench_writes_consistent_json(tmp_path):
    result = run_cli(
        "ftlab.bench", ["--quick", "--json", str(tmp_path / "bench.json")], cwd=tmp_path, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "bench.json").read_text())
    cache = data["cache"]
    assert data["ftlab_vs_hand"] == data["models"]["resnet18"]["ratio"]
    assert data["cache_speedup"] == pytest.approx(sorted(cache["end_to_end_ratios"])[1])
    assert data["cache_speedup_steady"] == pytest.approx(sorted(cache["steady_ratios"])[1])
    assert cache["first_epoch_s"]["memory"] > cache["steady_epoch_s"]["memory"]  # the build is in epoch 1
    assert cache["final_weight_max_diff"] < 1e-5
    assert "ftlab bench on" in result.stdout


@pytest.mark.slow
def test_main_job_bench_runs_the_real_command_on_staged_assets(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    args = [
        "--main-job-only",
        "--main-job-epochs=2",
        "--main-job-train-size=24",
        "--main-job-val-size=12",
        "--main-job-override=callbacks.rich_progress_bar=null",
        *["--main-job-variant", "one_view", "features.views=1"],
        *["--main-job-variant", "broken", "trainer.precision=bf17"],
        "--json",
        str(tmp_path / "bench.json"),
    ]
    result = run_cli("ftlab.bench", args, cwd=tmp_path, env=offline_env(TORCH_HOME=str(home)), timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "bench.json").read_text())
    main, base = data["main_job"], data["whole_network"]
    for arm in (main, base):
        assert arm["epochs"] == 2
        phases = [arm[k] for k in ("startup_s", "cache_build_s", "train_epochs_s", "val_epochs_s")]
        assert all(p > 0 for p in phases)
        assert sum(phases) <= arm["wall_s"]
        assert any("feature cache" in line for line in arm["cache_log"])
    assert "finetune=freeze_unfreeze finetune.unfreeze_at_epoch=2" in base["command"]
    assert main["precision"] == base["precision"] != "auto"  # both arms: the experiment's auto, resolved
    assert ("resnet18_infer_img_s_bf16_channels_last" in data) == main["precision"].startswith("bf16")
    assert data["main_job_forward_equivalents"] == pytest.approx(
        data["main_job_s"] * data["resnet18_infer_img_s"]
    )
    assert data["whole_network_vs_main"] == pytest.approx(base["wall_s"] / main["wall_s"])
    assert not any(home.iterdir())  # the user's torch cache was never touched
    one_view, broken = data["variants"]["one_view"], data["variants"]["broken"]
    assert "features.views=1" in one_view["command"] and one_view["epochs"] == 2
    assert one_view["forward_equivalents"] == pytest.approx(one_view["wall_s"] * data["resnet18_infer_img_s"])
    assert any("train" in line and "x 1 view(s)" in line for line in one_view["cache_log"]), one_view[
        "cache_log"
    ]
    assert "bf17" in broken["error"]  # a failing arm is reported, the others keep their figures
    assert "variant one_view" in result.stdout and "variant broken: failed" in result.stdout


@pytest.mark.parametrize("given", [[["a=1"]], [["x", "a=1"], ["x", "b=2"]]])
def test_a_variant_needs_a_new_name_first(given):
    with pytest.raises(FtlabError, match="--main-job-variant"):
        _variants(given)
    assert _variants([["x", "a=1", "b=2"], ["y"]]) == {"x": ["a=1", "b=2"], "y": []}


@pytest.mark.slow
def test_serve_bench_reports_consistent_figures(smoke_run, tmp_path):
    """A shortened `--serve` run (4 clients, 3 s) on the smoke checkpoint: no errors, a clean SIGTERM exit,
    req/s = requests / seconds, ordered percentiles, the ratio over predict's mean throughput."""
    ckpt = smoke_run / "checkpoints" / "best.ckpt"
    args = ["--serve", f"--serve-ckpt={ckpt}", "--serve-clients=4", "--serve-seconds=3", "--serve-images=8"]
    args += ["--json", str(tmp_path / "serve.json")]
    result = run_cli("ftlab.bench", args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "serve.json").read_text())
    load = data["serve"]
    assert load["errors"] == 0 and load["requests"] > 0 and data["server_exit_status"] == 0
    assert load["req_s"] == pytest.approx(load["requests"] / load["seconds"])
    assert 0 < load["p50_ms"] <= load["p95_ms"] <= load["p99_ms"]
    assert data["predict_img_s"] == pytest.approx(sum(data["predict_img_s_before_after"]) / 2)
    assert data["serve_vs_predict"] == pytest.approx(load["req_s"] / data["predict_img_s"])
    assert "ftlab bench --serve" in result.stdout
