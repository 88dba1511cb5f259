"""Multi-label end to end through the commands (real subprocesses, offline): a one-epoch run on the synthetic
multi-label source, then predict, eval and export on its checkpoint, each checked against the checkpoint's
network run directly and scikit-learn."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score
from torchvision.transforms import v2

from ftlab.cli.eval import EvalOptions
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.errors import FtlabError
from ftlab.inference import evaluation
from ftlab.inference.prediction import Prediction
from ftlab.models.module import Classifier
from ftlab.runs.report import load_runs, render
from tests.helpers.cli import TINY, run_cli, run_clis

DATA = ["data.multi_label=true", "data.num_classes=3", "data.noise=0.05"]
SEED = 42  # train.yaml's seed: the synthetic split is drawn from it


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch `+experiment=smoke` run on multi-label synthetic images."""
    root = tmp_path_factory.mktemp("multi_label_run")
    args = ["+experiment=smoke", *TINY, "trainer.max_epochs=1", *DATA, f"paths.log_dir={root / 'logs'}"]
    result = run_cli("ftlab.train", args, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/mAP" in result.stdout  # the per-epoch table and the best checkpoint's monitor
    (run_dir,) = (root / "logs" / "smoke").iterdir()
    return run_dir


def _val_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The run's validation images (uint8) and multi-hot labels, generated as the run generated them."""
    _, val = SyntheticSource(
        num_classes=3, train_size=24, val_size=12, noise=0.05, seed=SEED, multi_label=True
    ).load()
    return val.images, val.labels  # type: ignore[attr-defined]


def _probabilities(ckpt: Path, images: torch.Tensor) -> torch.Tensor:
    """Sigmoid probabilities of the checkpoint's torchvision network on torchvision-normalised images."""
    record = torch.load(ckpt, map_location="cpu", weights_only=False)["ftlab"]
    prep = record["preprocessing"]
    model = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights=None).eval()
    x = v2.Normalize(prep["mean"], prep["std"])(images.float() / 255)
    with torch.no_grad():
        return torch.sigmoid(model.net(x))


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_predict_eval_and_export_on_a_multi_label_checkpoint(multi_label_run: Path, tmp_path: Path) -> None:
    ckpt = multi_label_run / "checkpoints" / "best.ckpt"
    record = torch.load(ckpt, map_location="cpu", weights_only=False)["ftlab"]
    assert record["multi_label"] is True
    thresholds = record["thresholds"]
    assert len(thresholds) == 3 and all(0.0 <= t <= 1.0 for t in thresholds)

    images, labels = _val_images()
    files, inputs = [], tmp_path / "inputs"
    inputs.mkdir()
    for i in range(4):
        files.append(inputs / f"val{i}.png")
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(files[-1])
    eval_dir = tmp_path / "eval"
    cams = tmp_path / "cam"
    predicted, evaluated, exported = run_clis(
        [
            (
                "ftlab.predict",
                [f"ckpt_path={ckpt}", f"inputs={inputs}", "format=json", "explain=true", f"out_dir={cams}"],
            ),
            ("ftlab.eval", [f"ckpt_path={ckpt}", "device=cpu", f"hydra.run.dir={eval_dir}"]),
            ("ftlab.export", [f"ckpt_path={ckpt}", "format=torchscript", f"output={tmp_path / 'm.pt'}"]),
        ],
        cwd=tmp_path,
    )
    names = record["class_names"]
    reference = _probabilities(ckpt, images)

    # predict: every label's probability, and the label set at the stored thresholds
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(f) for f in files]
    for i, row in enumerate(rows):
        expected = {n: float(p) for n, p in zip(names, reference[i], strict=True)}
        assert set(row["probs"]) == set(names)
        for name, p in row["probs"].items():
            assert p == pytest.approx(expected[name], abs=1e-4)
        assert row["labels"] == [n for n, t in zip(names, thresholds, strict=True) if expected[n] >= t]
    for i, row in enumerate(rows):  # one map per predicted label (the top one when none passes)
        assert len(list(cams.glob(f"val{i}.*.gradcam.png"))) == max(1, len(row["labels"]))
    text = Prediction("a.png", {"bag": 0.9, "coat": 0.4, "shirt": 0.1}, ["bag", "coat"]).text()
    assert text == "a.png  [bag,coat]  bag 0.90  coat 0.40  shirt 0.10"

    # eval: the per-label table against scikit-learn on the same validation images
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(eval_dir / "per_class.csv", newline="") as f:
        table = {row["class"]: row for row in csv.DictReader(f)}
    y, p = labels.numpy().astype(int), reference.numpy()
    pred = (p >= np.array(thresholds)).astype(int)
    f1 = f1_score(y, pred, average=None, zero_division=0)
    for k, name in enumerate(names):
        assert float(table[name]["f1"]) == pytest.approx(f1[k], abs=1e-4)
        assert int(table[name]["support"]) == y[:, k].sum()
        if y[:, k].any():
            assert float(table[name]["ap"]) == pytest.approx(
                average_precision_score(y[:, k], p[:, k]), abs=1e-4
            )
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["micro"]["f1"] == pytest.approx(
        f1_score(y, pred, average="micro", zero_division=0), abs=1e-4
    )
    assert "mAP" in evaluated.stdout

    # export: the thresholds travel in the file's record
    assert exported.returncode == 0, exported.stderr[-3000:]
    extra = {"ftlab.json": ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    saved = json.loads(extra["ftlab.json"])
    assert saved["multi_label"] is True and saved["thresholds"] == pytest.approx(thresholds)


def test_calibration_is_refused_for_a_multi_label_checkpoint(multi_label_run: Path) -> None:
    ckpt = str(multi_label_run / "checkpoints" / "best.ckpt")
    with pytest.raises(FtlabError, match="ftlab does not calibrate multi-label models"):
        evaluation.evaluate(EvalOptions(ckpt_path=ckpt, calibrate=True, device="cpu"))


def test_the_report_reads_a_multi_label_runs_map(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text("epoch,step,val/loss,val/mAP\n0,5,0.6,0.55\n1,11,0.5,0.71\n")
    (loaded,) = load_runs(run)
    assert loaded.val_acc == {1: 0.55, 2: 0.71} and loaded.score == "val/mAP" and loaded.best_epoch == 2
    assert "best val/mAP" in render([loaded], "markdown", 0.6)
