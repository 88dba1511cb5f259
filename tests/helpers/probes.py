"""Callbacks that record what the network actually saw, added to real runs on the command line or in-process
(`+callbacks.probe._target_=tests.helpers.probes.ConvProbe`)."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn


class ConvProbe(L.Callback):
    """Records, for the first training step, the first convolution's output dtype (what autocast produced)
    and whether its input and weight were in channels_last memory format."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        conv = next(m for m in pl_module.modules() if isinstance(m, nn.Conv2d))

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            ConvProbe.seen.append(
                {
                    "output_dtype": output.dtype,
                    "input_channels_last": inputs[0].is_contiguous(memory_format=torch.channels_last),
                    "weight_channels_last": module.weight.is_contiguous(memory_format=torch.channels_last),
                    "device": output.device.type,
                }
            )
            handle.remove()

        handle = conv.register_forward_hook(hook)
