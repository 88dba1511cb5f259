"""Calibration: ECE/NLL/Brier by hand, temperature scaling, and a stored temperature in predict and export."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

from ftlab.cli.export import ExportOptions
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.inference.calibration import Calibration, fit_temperature, store_temperature
from ftlab.inference.checkpoint import TrainedModel, read_record
from ftlab.inference.export import export
from ftlab.inference.prediction import Prediction, predict
from tests.helpers.cli import run_clis
from tests.inference.test_old_checkpoints import FIXTURE, _reference_logits


def test_ece_nll_brier_match_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0], [1.0, 1.0, 1.0]])
    target = torch.tensor([0, 0, 2, 1])
    rows = [[math.exp(v) for v in row] for row in logits.tolist()]
    probs = [[v / sum(row) for v in row] for row in rows]
    nll = -sum(math.log(p[t]) for p, t in zip(probs, target.tolist(), strict=True)) / 4
    brier = (
        sum(
            sum((p[k] - (k == t)) ** 2 for k in range(3)) for p, t in zip(probs, target.tolist(), strict=True)
        )
        / 4
    )
    # ECE over 15 equal-width bins: |mean confidence - accuracy| per bin, weighted by the bin's share
    confidence = [max(p) for p in probs]
    correct = [p.index(max(p)) == t for p, t in zip(probs, target.tolist(), strict=True)]
    bins: dict[int, list[int]] = {}
    for i, c in enumerate(confidence):
        bins.setdefault(min(math.ceil(c * 15) - 1, 14), []).append(i)
    ece = sum(
        len(m) / 4 * abs(sum(confidence[i] for i in m) / len(m) - sum(correct[i] for i in m) / len(m))
        for m in bins.values()
    )
    scores = Calibration.of(logits, target)
    assert scores.nll == pytest.approx(nll, rel=1e-5)
    assert scores.brier == pytest.approx(brier, rel=1e-5)
    assert scores.ece == pytest.approx(ece, rel=1e-5)


def test_temperature_scaling_lowers_nll_and_keeps_accuracy():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (600,), generator=generator)
    # an over-confident model: right 70 % of the time, always with huge logit margins
    guess = torch.where(torch.rand(600, generator=generator) < 0.7, target, torch.randint(0, 4, (600,)))
    logits = torch.randn(600, 4, generator=generator) + 8.0 * torch.nn.functional.one_hot(guess, 4)
    temperature = fit_temperature(logits, target)
    before, after = Calibration.of(logits, target), Calibration.of(logits / temperature, target)
    assert temperature > 1.5  # softened
    assert after.nll < before.nll - 0.1 and after.ece < before.ece
    assert torch.equal((logits / temperature).argmax(1), logits.argmax(1))
    # the fitted T is the NLL minimum: nudging it either way does not help
    for nudged in (temperature * 0.9, temperature * 1.1):
        assert Calibration.of(logits / nudged, target).nll >= after.nll - 1e-6


@pytest.fixture
def calibrated(tmp_path: Path) -> tuple[Path, float]:
    ckpt = tmp_path / "calibrated.ckpt"
    shutil.copy(FIXTURE, ckpt)
    store_temperature(ckpt, 2.5)
    return ckpt, 2.5


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")  # TorchScript is deprecated upstream
def test_stored_temperature_applies_in_predict_and_export(calibrated, tmp_path):
    ckpt, temperature = calibrated
    assert read_record(ckpt)["temperature"] == temperature
    images = SyntheticSource(num_classes=3, train_size=3, val_size=4, seed=5).load()[1].images
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    expected = torch.softmax(_reference_logits(images) / temperature, dim=1)

    model = TrainedModel.load(ckpt)
    results = list(predict(model, paths, top_k=None, batch_size=2))
    for row, result in zip(expected, results, strict=True):
        assert isinstance(result, Prediction)
        got = torch.tensor([result.probs[name] for name in model.class_names])
        torch.testing.assert_close(got, row, rtol=1e-4, atol=1e-5)

    normalized = model.preprocessing
    mean, std = torch.tensor(normalized.mean).view(1, 3, 1, 1), torch.tensor(normalized.std).view(1, 3, 1, 1)
    batch = ((images.float() / 255 - mean) / std).numpy()
    onnx_path, _ = export(ExportOptions(ckpt_path=str(ckpt), format="onnx", output=str(tmp_path / "m.onnx")))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_probs = torch.softmax(torch.from_numpy(session.run(None, {"images": batch})[0]), dim=1)
    torch.testing.assert_close(onnx_probs, expected, rtol=1e-4, atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(meta["temperature"]) == temperature
    script_path, _ = export(
        ExportOptions(ckpt_path=str(ckpt), format="torchscript", output=str(tmp_path / "m.pt"))
    )
    with torch.no_grad():
        script_logits = torch.jit.load(str(script_path))(torch.from_numpy(batch))
    torch.testing.assert_close(torch.softmax(script_logits, dim=1), expected, rtol=1e-4, atol=1e-5)


def test_eval_calibrate_stores_the_temperature_and_writes_the_reliability_diagram(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(FIXTURE, ckpt)
    (first,) = run_clis(
        [
            (
                "ftlab.eval",
                [
                    f"ckpt_path={ckpt}",
                    "data=synthetic",
                    "device=cpu",
                    "calibrate=true",
                    f"hydra.run.dir={tmp_path}",
                ],
            )
        ],
        tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    temperature = read_record(ckpt)["temperature"]
    assert temperature > 0 and "probabilities: calibrated" in first.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["temperature"] == pytest.approx(temperature) and metrics["calibrated"] is True
    assert set(metrics["calibration"]) == {"ece", "nll", "brier", "ece_bins"}
    fit = metrics["calibration_fit"]
    assert fit["val_nll_after"] <= fit["val_nll_before"] + 1e-6
    assert metrics["calibration"]["nll"] == pytest.approx(fit["val_nll_after"], rel=1e-4)  # split=val
    with Image.open(tmp_path / "reliability_diagram.png") as diagram:
        assert diagram.width > 100


@pytest.mark.slow
def test_training_calibrates_best_checkpoint_and_eval_logs_the_diagram_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.helpers.cli import TINY, run_cli

    args = ["+experiment=smoke", *TINY, "trainer.max_epochs=1", "calibrate=true", f"paths.log_dir={tmp_path}"]
    train = run_cli("ftlab.train", args, cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    (run_dir,) = (tmp_path / "smoke").iterdir()
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    temperature = read_record(ckpt)["temperature"]
    assert f"calibrated: temperature {temperature:.4f}" in train.stdout
    evaluate = run_cli(
        "ftlab.eval", [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"], cwd=tmp_path
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert "probabilities: calibrated" in evaluate.stdout
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "eval/reliability_diagram" in events.Tags()["images"]
