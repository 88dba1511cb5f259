"""Test-time augmentation: views, batched mean of probabilities, and the hooks in eval and predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn
from torchvision.transforms.v2 import functional as F

from ftlab.cli.eval import evaluate
from ftlab.data import transforms
from ftlab.data.images import load_rgb
from ftlab.errors import FtlabError
from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.tta import tta_probabilities, tta_views
from tests.helpers.cli import CONF, run_cli
from tests.helpers.images import write_synthetic_folder


class _FlipSymmetric(nn.Module):
    """Logits from a linear map of x + flip(x): the same for an image and its mirror."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x + x.flip(-1)).flatten(1))


IMAGES = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_hflip_tta_on_a_flip_symmetric_model_equals_no_tta():
    torch.manual_seed(0)
    model = _FlipSymmetric()
    torch.testing.assert_close(
        tta_probabilities(model, IMAGES, "hflip"), tta_probabilities(model, IMAGES, "none")
    )


def test_tta_is_the_mean_of_the_views_probabilities_in_one_forward():
    torch.manual_seed(0)
    linear = nn.Linear(3 * 8 * 8, 4)
    calls: list[int] = []

    def logits(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return linear(x.flatten(1))

    got = tta_probabilities(logits, IMAGES, "five_crop")
    assert calls == [25]  # 5 views x 5 images, batched
    crops = F.five_crop(IMAGES, [7, 7])  # 0.875 * 8 = 7
    expected = torch.stack([torch.softmax(linear(F.resize(c, [8, 8]).flatten(1)), 1) for c in crops]).mean(0)
    torch.testing.assert_close(got, expected)
    flipped = (
        torch.softmax(linear(IMAGES.flatten(1)), 1) + torch.softmax(linear(IMAGES.flip(-1).flatten(1)), 1)
    ) / 2
    torch.testing.assert_close(tta_probabilities(lambda x: linear(x.flatten(1)), IMAGES, "hflip"), flipped)


def test_unknown_tta_is_a_clear_error():
    with pytest.raises(FtlabError, match="tta='flip'"):
        tta_views(IMAGES, "flip")


def _write_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    return write_synthetic_folder(root, classes, count=12, seed=3)


def test_predict_and_eval_hooks_average_the_mirrored_views(smoke_run, tmp_path):
    ckpt = smoke_run / "checkpoints" / "best.ckpt"
    model = TrainedModel.load(ckpt)
    files = _write_images(tmp_path / "images", model.class_names)
    batch = torch.stack([transforms.preprocess(load_rgb(path), model.preprocessing) for path, _ in files])
    with torch.no_grad():
        logits = model.module(batch), model.module(batch.flip(-1))
    by_hand = (torch.softmax(logits[0], 1) + torch.softmax(logits[1], 1)) / 2

    args = [
        f"ckpt_path={ckpt}",
        f"inputs=[{tmp_path / 'images'}]",
        "format=json",
        "num_workers=0",
        "tta=hflip",
    ]
    result = run_cli("ftlab.predict", args, cwd=tmp_path)  # the command a user types
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {Path(r["path"]).name: r["probs"] for r in map(json.loads, result.stdout.splitlines())}
    for (path, _), row in zip(files, by_hand, strict=True):
        got = torch.tensor([rows[path.name][name] for name in model.class_names])
        torch.testing.assert_close(got, row, rtol=1e-4, atol=1e-5)

    GlobalHydra.instance().clear()
    overrides = [f"ckpt_path={ckpt}", "data=imagefolder", f"data.root={tmp_path / 'images'}", "split=all"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[*overrides, "data.num_workers=0", "tta=hflip"])
    GlobalHydra.instance().clear()
    report, about = evaluate(cfg)
    truth = torch.tensor([label for _, label in files])
    assert about["tta"] == "hflip"
    assert report.accuracy == pytest.approx(float((by_hand.argmax(1) == truth).float().mean()))
