"""A multi-label checkpoint (`"multi_label": true` and per-label `"thresholds"` in its ftlab record) is
answered with every label's sigmoid probability and the labels at or above their threshold, by the function
ftlab.predict and ftlab.serve share, and by the server itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ftlab.data.images import load_rgb
from ftlab.data.transforms import preprocess
from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.prediction import scores, to_prediction
from tests.serve.conftest import running

THRESHOLDS = [0.3, 0.5, 0.7]


@pytest.fixture(scope="module")
def multi_label_ckpt(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke checkpoint with its record edited to say multi-label, thresholds per label."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["ftlab"] = {**checkpoint["ftlab"], "multi_label": True, "thresholds": THRESHOLDS}
    path = tmp_path_factory.mktemp("multi_label") / "multi_label.ckpt"
    torch.save(checkpoint, path)
    return path


def _hand(module: torch.nn.Module, images: torch.Tensor, names: list[str]) -> list[tuple[dict, list[str]]]:
    """Per image: label -> sigmoid(logit), and the labels whose probability reaches the threshold."""
    with torch.no_grad():
        probs = torch.sigmoid(module(images)).tolist()
    out = []
    for row in probs:
        chosen = [n for n, p, t in zip(names, row, THRESHOLDS, strict=True) if p >= t]
        out.append((dict(zip(names, row, strict=True)), chosen))
    return out


def test_scores_and_label_sets_are_the_sigmoid_and_thresholds(multi_label_ckpt: Path):
    model = TrainedModel.load(multi_label_ckpt, "cpu")
    images = torch.randn(16, 3, 32, 32) * 3
    expected = _hand(model.module, images, model.class_names)
    rows = scores(model, images)
    for row, (probs, labels) in zip(rows, expected, strict=True):
        got = to_prediction(model, "x", row, None)
        assert got.probs == pytest.approx(probs, abs=1e-6) and len(got.probs) == 3  # every label
        assert sorted(got.labels or []) == sorted(labels)
        assert list(got.probs.values()) == sorted(got.probs.values(), reverse=True)
        assert got.as_dict()["labels"] == got.labels
    assert any(0 < len(labels) < 3 for _, labels in expected)  # the thresholds decide something here


@pytest.mark.slow
def test_the_server_answers_label_sets(multi_label_ckpt: Path, images, tmp_path):
    with running(multi_label_ckpt, [], tmp_path) as server:
        model = TrainedModel.load(multi_label_ckpt, "cpu")
        for path in images.values():
            status, answer = server.predict(path.read_bytes())
            assert status == 200
            image = preprocess(load_rgb(path), model.preprocessing)[None]
            ((probs, labels),) = _hand(model.module, image, model.class_names)
            np.testing.assert_allclose([answer["probs"][n] for n in probs], list(probs.values()), atol=1e-5)
            assert sorted(answer["labels"]) == sorted(labels)
