"""`python -m ftlab.eval`: metrics checked against training's own val accuracy and against scikit-learn."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from torchvision.transforms import v2

from ftlab.cli.eval import evaluate
from ftlab.errors import FtlabError
from ftlab.models.module import Classifier
from tests.helpers.cli import CONF, run_clis
from tests.helpers.images import write_synthetic_folder


def _best_val_acc(ckpt: Path) -> float:
    callbacks = torch.load(ckpt, map_location="cpu", weights_only=False)["callbacks"]
    state = next(v for k, v in callbacks.items() if "'monitor': 'val/acc'" in k)
    return float(state["best_model_score"])


def _folder_of_synthetic_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    return write_synthetic_folder(root, classes, count=30, seed=7)


def _reference_predictions(ckpt: Path, files: list[tuple[Path, int]]) -> np.ndarray:
    """Class indices predicted by the checkpoint in-process, on torchvision-normalised input."""
    prep = torch.load(ckpt, map_location="cpu", weights_only=False)["ftlab"]["preprocessing"]
    model = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights=None).eval()
    to_input = v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep["mean"], prep["std"])]
    )
    batch = torch.stack([to_input(Image.open(path).convert("RGB")) for path, _ in files])
    with torch.no_grad():
        return model(batch).argmax(dim=1).numpy()


def _compose_eval(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[*overrides, "data.num_workers=0"])
    GlobalHydra.instance().clear()
    return cfg


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_eval_reports_match_training_and_sklearn(smoke_run, tmp_path):
    ckpt = smoke_run / "checkpoints" / "best.ckpt"
    names = ["class_0", "class_1", "class_2"]
    files = _folder_of_synthetic_images(tmp_path / "images", names)
    _folder_of_synthetic_images(tmp_path / "other_classes", ["cat", "class_1", "dog"])
    own, folder = run_clis(
        [
            ("ftlab.eval", [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'own'}"]),
            (
                "ftlab.eval",
                [
                    f"ckpt_path={ckpt}",
                    "data=imagefolder",
                    f"data.root={tmp_path / 'images'}",
                    "data.num_workers=0",
                    "split=all",
                    f"hydra.run.dir={tmp_path / 'folder'}",
                ],
            ),
        ],
        cwd=tmp_path,
    )

    # Without data=...: the training run's own validation split, so the accuracy is the one training logged.
    assert own.returncode == 0, own.stderr[-3000:]
    report = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert report["split"] == "val" and report["images"] == 12 and report["data"]["source"] == "synthetic"
    assert report["data_config_from"].endswith(".hydra/config.yaml")
    assert report["accuracy"] == pytest.approx(_best_val_acc(ckpt), abs=1e-6)
    assert f"accuracy: {report['accuracy']:.4f}" in own.stdout

    # data=imagefolder split=all: every image, metrics equal to scikit-learn's on in-process predictions.
    assert folder.returncode == 0, folder.stderr[-3000:]
    out = tmp_path / "folder"
    report = json.loads((out / "metrics.json").read_text())
    truth = np.array([label for _, label in files])
    predicted = _reference_predictions(ckpt, files)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=[0, 1, 2], zero_division=0
    )
    assert report["images"] == 30
    assert report["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert report["confusion_matrix"] == confusion_matrix(truth, predicted, labels=[0, 1, 2]).tolist()
    for i, name in enumerate(names):
        row = report["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]))
        assert row["support"] == support[i]
    assert report["macro"]["f1"] == pytest.approx(f1.mean())
    per_class = _read_csv(out / "per_class.csv")
    assert per_class[0] == ["class", "precision", "recall", "f1", "support"]
    assert [r[0] for r in per_class[1:]] == names
    assert [float(r[1]) for r in per_class[1:]] == pytest.approx(precision.tolist())
    matrix = _read_csv(out / "confusion_matrix.csv")
    assert (
        matrix[0][1:] == names and [[int(v) for v in r[1:]] for r in matrix[1:]] == report["confusion_matrix"]
    )
    with Image.open(out / "confusion_matrix.png") as png:
        assert png.format == "PNG" and min(png.size) >= 300
    shares = confusion_matrix(truth, predicted, labels=[0, 1, 2], normalize="true")
    assert np.allclose(report["confusion_matrix_normalized"], shares)
    rows = _read_csv(out / "confusion_matrix_normalized.csv")
    assert rows[0][1:] == names and np.allclose([[float(v) for v in r[1:]] for r in rows[1:]], shares)
    with Image.open(out / "confusion_matrix_normalized.png") as png:
        assert png.format == "PNG" and min(png.size) >= 300
    for heading in (
        "precision",
        "recall",
        "f1",
        "support",
        "confusion matrix",
        "macro avg",
        "rows normalised",
    ):
        assert heading in folder.stdout

    # A checkpoint whose classes differ from the data's: one clear error naming both lists.
    cfg = _compose_eval([f"ckpt_path={ckpt}", "data=imagefolder", f"data.root={tmp_path / 'other_classes'}"])
    with pytest.raises(FtlabError) as err:
        evaluate(cfg)
    assert str(names) in str(err.value) and str(["cat", "class_1", "dog"]) in str(err.value)


def test_eval_matches_classes_by_name_when_the_order_differs(smoke_run, tmp_path):
    """A checkpoint listing its classes in another order than the folder's: labels are matched by name."""
    checkpoint = torch.load(smoke_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    order = ["class_2", "class_0", "class_1"]  # the network's output j now means order[j]
    checkpoint["ftlab"]["class_names"] = order
    checkpoint["hyper_parameters"]["class_names"] = order
    ckpt = tmp_path / "reordered.ckpt"
    torch.save(checkpoint, ckpt)
    files = _folder_of_synthetic_images(tmp_path / "images", ["class_0", "class_1", "class_2"])
    overrides = [f"ckpt_path={ckpt}", "data=imagefolder", f"data.root={tmp_path / 'images'}", "split=all"]
    report, _ = evaluate(_compose_eval(overrides))
    truth = np.array([order.index(f"class_{label}") for _, label in files])
    predicted = _reference_predictions(ckpt, files)
    assert report.class_names == order
    assert report.confusion == confusion_matrix(truth, predicted, labels=[0, 1, 2]).tolist()
    assert report.accuracy == pytest.approx(accuracy_score(truth, predicted))
