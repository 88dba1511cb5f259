"""Grad-CAM: where in the image the evidence for a class lies, from the last spatial stage of a CNN.

The map is ReLU(sum_c w_c A_c) with A the last spatial stage's activations (N, C, h, w) and w_c the mean
over h, w of d(class logit)/dA_c (Selvaraju et al. 2017), upsampled to the input and scaled to [0, 1] per
image. Transformer families have no convolutional feature map at their last stage, so they are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ftlab.errors import FtlabError
from ftlab.models.stages import run_stages

TRANSFORMER_FAMILIES = ("vit_", "swin_", "maxvit_")
OVERLAY_ALPHA = 0.5  # weight of the heat map over the image


def unsupported_reason(backbone: str) -> str | None:
    """Why Grad-CAM does not apply to `backbone`, or None when it does."""
    if backbone.startswith(TRANSFORMER_FAMILIES):
        return (
            f"explain=true: Grad-CAM is not supported for {backbone}. It needs a convolutional feature map "
            "(N, C, H, W) whose channels are pooled into the logits; ViT, Swin and MaxViT end in attention "
            "over tokens (ViT classifies from the class token alone), so channel-weighted maps of their last "
            "stage do not locate the evidence. Use a CNN backbone (resnet, efficientnet, convnext, "
            "mobilenet, ...) for explanations."
        )
    return None


def last_spatial_stage(stages: dict[str, nn.Module], images: torch.Tensor) -> str:
    """Name of the last stage whose output is a (N, C, H, W) map with H, W > 1 (found by one forward pass)."""
    shapes: dict[str, torch.Size] = {}
    handles = [
        stage.register_forward_hook(lambda _m, _a, out, name=name: shapes.__setitem__(name, out.shape))
        for name, stage in stages.items()
    ]
    try:
        with torch.no_grad():
            x = images[:1]
            for stage in stages.values():
                x = stage(x)
    finally:
        for handle in handles:
            handle.remove()
    spatial = [name for name, shape in shapes.items() if len(shape) == 4 and min(shape[-2:]) > 1]
    if not spatial:
        raise FtlabError("explain=true: no stage of this network outputs a spatial feature map for Grad-CAM.")
    return spatial[-1]


def grad_cam(
    model: Callable[[torch.Tensor], torch.Tensor],
    layer: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input size for `classes` (default: the predicted ones).

    Returns the maps and the logits. `layer` is a module that `model` runs whose output is (N, C, h, w).
    """
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _a, out: captured.append(out))
    try:
        with torch.enable_grad():
            logits = model(images.detach().requires_grad_(True))
            activation = captured[-1]
            chosen = logits.argmax(dim=1) if classes is None else classes.to(logits.device)
            score = logits.gather(1, chosen[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).amax(dim=1).clamp(min=1e-12)
    return cam / top[:, None, None], logits.detach()


def overlay(image: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) image blended with a jet-coloured (H, W) map in [0, 1]."""
    from matplotlib import colormaps

    heat = colormaps["jet"](cam.cpu().numpy())[..., :3]  # (H, W, 3) floats in [0, 1]
    heat_t = torch.from_numpy((heat * 255).astype(np.float32)).permute(2, 0, 1)
    blended = (1 - OVERLAY_ALPHA) * image.float().cpu() + OVERLAY_ALPHA * heat_t
    return blended.round().clamp(0, 255).to(torch.uint8)


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write a uint8 (3, H, W) tensor as PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


class Explainer:
    """Grad-CAM for a `Classifier` (stages from `models.stages.split`); refused for transformer families."""

    def __init__(self, module: nn.Module) -> None:
        backbone = str(getattr(module, "hparams", {}).get("backbone", ""))
        reason = unsupported_reason(backbone)
        if reason:
            raise FtlabError(reason)
        self.module = module
        self.stages: dict[str, nn.Module] = module.stages  # type: ignore[assignment]
        self.layer_name: str | None = None

    def _network(self, images: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages, self.module.head, images)  # type: ignore[arg-type]

    def maps(self, images: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Grad-CAM maps (N, H, W) in [0, 1] for preprocessed `images`, in eval mode (BatchNorm untouched)."""
        was_training = self.module.training
        self.module.eval()
        try:
            if self.layer_name is None:
                self.layer_name = last_spatial_stage(self.stages, images)
            cam, _ = grad_cam(self._network, self.stages[self.layer_name], images, classes)
        finally:
            self.module.train(was_training)
        return cam
