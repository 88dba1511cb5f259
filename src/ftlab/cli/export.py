"""`python -m ftlab.export ckpt_path=<ckpt> format=onnx|torchscript`: a standalone model file.

The exported model takes float32 images (N, 3, crop, crop), already resized, cropped and normalised as the
recorded preprocessing says, and returns logits (N, classes) in the recorded class order (softmax gives
probabilities; a calibrated checkpoint's temperature is built in). The record (class names, preprocessing,
backbone, weights id, temperature) travels inside the file: ONNX
`metadata_props` (values are JSON), TorchScript `_extra_files["ftlab.json"]`. After writing, the file is run
on a random batch and compared with the checkpoint (ONNX needs `onnxruntime` for that check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hydra
from omegaconf import DictConfig
from rich.console import Console

from ftlab.config.check import check_command_line, command_options
from ftlab.config.location import config_dir
from ftlab.config.registry import register
from ftlab.errors import report_errors
from ftlab.inference.calibration import describe
from ftlab.inference.checkpoint import read_record
from ftlab.inference.export import export

__all__ = ["ExportOptions", "export", "main"]


@register("command", "export")
@dataclass
class ExportOptions:
    """`python -m ftlab.export ckpt_path=<ckpt> format=onnx|torchscript`: a standalone model file."""

    ckpt_path: str = "???"  # checkpoint written by ftlab.train (a run's checkpoints/best.ckpt or last.ckpt)
    format: str = "onnx"  # onnx | torchscript
    # file to write; null = next to the checkpoint: <name>.onnx / <name>.torchscript.pt
    output: str | None = None
    verify: bool = True  # run the file on a random batch and compare with the checkpoint (ONNX: onnxruntime)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
@report_errors
def _hydra_main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    options: Any = command_options(cfg, ExportOptions, "export")
    path, diff = export(options)
    temperature = read_record(options.ckpt_path).get("temperature")
    console = Console()
    size = path.stat().st_size / 2**20
    console.print(f"wrote {path} ({options.format}, {size:.1f} MiB)")
    console.print(describe(temperature) + ("; built into the file's logits" if temperature else ""))
    if diff is not None:
        console.print(f"checked against the checkpoint: max |logit difference| {diff:.2e}")
    elif options.verify:
        console.print("not checked: `pip install onnxruntime` to compare the ONNX file with the checkpoint")


@report_errors
def main() -> None:
    """The command line is checked (unknown keys, wrong types) before Hydra runs the command."""
    check_command_line("export")
    _hydra_main()


if __name__ == "__main__":
    main()
