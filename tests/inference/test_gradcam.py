"""Grad-CAM against a reference built from plain autograd hooks; the predict CLI writes one PNG per image."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.gradcam import Explainer, grad_cam, unsupported_reason
from tests.helpers.cli import run_clis
from tests.inference.test_old_checkpoints import FIXTURE


def _hook_reference(
    model: nn.Module, layer: nn.Module, images: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """Grad-CAM the textbook way: forward hook keeps A, full backward hook keeps dy/dA."""
    kept: dict[str, torch.Tensor] = {}
    forward = layer.register_forward_hook(lambda _m, _a, out: kept.__setitem__("a", out.detach()))
    backward = layer.register_full_backward_hook(lambda _m, _gi, go: kept.__setitem__("g", go[0].detach()))
    try:
        logits = model(images.clone().requires_grad_(True))
        model.zero_grad()
        logits[torch.arange(len(classes)), classes].sum().backward()
    finally:
        forward.remove()
        backward.remove()
    maps = []
    for a, g in zip(kept["a"], kept["g"], strict=True):  # one image at a time, loops spelled out
        weights = g.mean(dim=(1, 2))
        cam = torch.clamp(sum(w * channel for w, channel in zip(weights, a, strict=True)), min=0)
        cam = F.interpolate(cam[None, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[
            0, 0
        ]
        maps.append(cam / cam.max())
    return torch.stack(maps)


def test_grad_cam_matches_autograd_hooks_on_a_tiny_cnn():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        layer,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()
    images = torch.randn(3, 3, 12, 10)
    classes = torch.tensor([0, 3, 1])
    maps, logits = grad_cam(model, layer, images, classes)
    expected = _hook_reference(model, layer, images, classes)
    assert maps.shape == (3, 12, 10)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    default, _ = grad_cam(model, layer, images)  # default: the predicted class
    torch.testing.assert_close(default, _hook_reference(model, layer, images, logits.argmax(1)))


def test_explainer_uses_the_last_spatial_stage_and_leaves_the_model_as_it_was():
    model = TrainedModel.load(FIXTURE)
    module = model.module.train()
    running = {k: v.clone() for k, v in module.state_dict().items() if "running" in k}
    images = torch.randn(2, 3, 32, 32)
    explainer = Explainer(module)
    maps = explainer.maps(images)
    assert module.training and all(torch.equal(module.state_dict()[k], v) for k, v in running.items())
    names = list(module.stages)
    shapes = {}
    x = images
    with torch.no_grad():
        for name in names:
            x = module.stages[name].eval()(x)
            shapes[name] = x.shape
    expected_name = [n for n in names if len(shapes[n]) == 4 and min(shapes[n][-2:]) > 1][-1]
    assert explainer.layer_name == expected_name
    module.eval()
    classes = module(images).argmax(1)
    expected = _hook_reference(module, module.stages[expected_name], images, classes)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)


def test_transformer_families_are_refused_with_the_reason():
    for backbone in ("vit_b_16", "swin_t", "maxvit_t"):
        reason = unsupported_reason(backbone)
        assert reason is not None and backbone in reason and "not supported" in reason and "CNN" in reason
    assert unsupported_reason("resnet18") is None and unsupported_reason("efficientnet_b0") is None


def test_predict_explain_writes_one_overlay_per_image(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(FIXTURE, ckpt)
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    names = ["a.png", "b.jpg", "sub/a.png"]  # two files named a: both get an overlay
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / name)
    out = tmp_path / "explained"
    (result,) = run_clis(
        [("ftlab.predict", [f"ckpt_path={ckpt}", f"inputs=[{folder}]", "explain=true", f"out_dir={out}"])],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(out.glob("*.png"))
    assert len(written) == len(names), written
    crop = TrainedModel.load(ckpt).preprocessing.crop_size
    for path in written:
        with Image.open(path) as overlay:
            assert overlay.size == (crop, crop) and overlay.mode == "RGB"
    assert "not calibrated" in result.stderr
