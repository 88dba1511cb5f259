"""Checkpoints written before the package layout changed still load, predict, evaluate and export.

`tests/fixtures/before_layout_shufflenet.ckpt` was written by `python -m ftlab.train` at commit 0a89876 (the
flat layout): `+experiment=smoke model.backbone=shufflenet_v2_x0_5 model.weights=null finetune=freeze_unfreeze
scheduler=cosine_warmup`, 1 epoch on 24 synthetic 32 px images of 3 classes. It is kept as written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torchvision
from PIL import Image

from ftlab.callbacks.lr_finder import LRFinderCallback
from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.finetune.strategies import build_phases
from ftlab.inference.checkpoint import TrainedModel
from ftlab.models.module import Classifier
from tests.helpers.cli import run_clis

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "before_layout_shufflenet.ckpt"


def _reference_logits(images: torch.Tensor) -> torch.Tensor:
    """The same network built by torchvision alone from the checkpoint's raw state dict."""
    checkpoint = torch.load(FIXTURE, map_location="cpu", weights_only=False)
    record = checkpoint["ftlab"]
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=len(record["class_names"]))
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    model.load_state_dict(state)
    mean = torch.tensor(record["preprocessing"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(record["preprocessing"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()((images.float() / 255 - mean) / std)


def test_old_checkpoint_loads_into_the_module_and_matches_torchvision():
    images = SyntheticSource(num_classes=3, train_size=3, val_size=8, seed=3).load()[1].images
    module = Classifier.load_from_checkpoint(FIXTURE, map_location="cpu", weights=None).eval()
    assert module.class_names == ["class_0", "class_1", "class_2"]
    trained = TrainedModel.load(FIXTURE, device="cpu")
    prep = trained.preprocessing
    normalized = (images.float() / 255 - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(
        prep.std
    ).view(1, 3, 1, 1)
    expected = _reference_logits(images)
    torch.testing.assert_close(trained.logits(normalized), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(module(normalized), expected, rtol=1e-5, atol=1e-5)


def test_old_checkpoint_through_predict_eval_and_export(tmp_path):
    ckpt = tmp_path / "old.ckpt"
    shutil.copy(FIXTURE, ckpt)
    images = SyntheticSource(num_classes=3, train_size=3, val_size=4, seed=5).load()[1].images
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    predict, evaluate, export = run_clis(
        [
            ("ftlab.predict", [f"ckpt_path={ckpt}", f"inputs=[{folder}]", "format=json", "num_workers=0"]),
            (
                "ftlab.eval",
                [f"ckpt_path={ckpt}", "data=synthetic", "device=cpu", f"hydra.run.dir={tmp_path / 'eval'}"],
            ),
            ("ftlab.export", [f"ckpt_path={ckpt}", "format=torchscript", f"output={tmp_path / 'old.pt'}"]),
        ],
        tmp_path,
    )
    for result in (predict, evaluate, export):
        assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in predict.stdout.splitlines() if line.strip()]
    assert len(rows) == len(images)
    reference = torch.softmax(_reference_logits(images), dim=1)
    by_name = {Path(r["path"]).name: r for r in rows}
    for i in range(len(images)):
        probs = by_name[f"{i}.png"]["probs"]
        got = torch.tensor([probs[c] for c in ["class_0", "class_1", "class_2"]])
        torch.testing.assert_close(got, reference[i], rtol=1e-4, atol=1e-4)
    assert (tmp_path / "eval" / "metrics.json").is_file(), evaluate.stdout[-2000:]
    scripted = torch.jit.load(str(tmp_path / "old.pt"))
    assert scripted(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_old_checkpoint_callback_states_keep_their_keys_after_the_renames():
    """Lightning finds a callback's saved state by `state_key`: the renamed callbacks (ScheduleCallback,
    once FinetuneSchedule; LRFinderCallback, once PhaseLRFinder) keep the keys old checkpoints hold."""
    checkpoint = torch.load(FIXTURE, map_location="cpu", weights_only=False)
    module = Classifier.load_from_checkpoint(FIXTURE, map_location="cpu", weights=None)
    phases = build_phases("freeze_unfreeze", module.trainable_stage_names, unfreeze_at_epoch=1)
    schedule = ScheduleCallback(phases, bn="frozen", warmup_epochs=0.5)
    assert checkpoint["callbacks"][schedule.state_key] == schedule.state_dict()
    assert LRFinderCallback(schedule).state_key == "PhaseLRFinder"
