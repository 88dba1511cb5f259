"""`python -m ftlab.export ckpt_path=<ckpt> format=onnx|onnx_int8|torchscript`: a standalone model file.

The exported model takes float32 images (N, 3, crop, crop), already resized, cropped and normalised as the
recorded preprocessing says, and returns logits (N, classes) in the recorded class order (softmax gives
probabilities; a calibrated checkpoint's temperature is built in). The checkpoint's record (class names,
preprocessing, backbone, weights id, temperature, ...) travels inside the file: ONNX `metadata_props`
(`ftlab`: the whole record as JSON), TorchScript `_extra_files["ftlab.json"]`. `format=onnx_int8` quantizes
the ONNX model statically (ONNX Runtime, QDQ, per-channel int8 weights) with activation ranges calibrated on
`calibration_images` training images of the run's data. After writing, the file is run and compared with the
checkpoint: fp32 logits on a random batch, int8 top classes on the calibration images. `python -m ftlab.eval
ckpt_path=<exported file>` measures its accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hydra
from omegaconf import DictConfig
from rich.console import Console

from ftlab.config.check import check_command_line, command_options
from ftlab.config.location import config_dir
from ftlab.config.registry import register
from ftlab.data.settings import DataSettings
from ftlab.errors import report_errors
from ftlab.inference.calibration import describe
from ftlab.inference.checkpoint import read_record
from ftlab.inference.export import MIN_INT8_AGREEMENT, export
from ftlab.training.settings import PathsSettings

__all__ = ["ExportOptions", "export", "main"]


@register("command", "export")
@dataclass
class ExportOptions:
    """`python -m ftlab.export ckpt_path=<ckpt> format=onnx|onnx_int8|torchscript`: a model file."""

    ckpt_path: str = "???"  # checkpoint written by ftlab.train (a run's checkpoints/best.ckpt or last.ckpt)
    format: str = "onnx"  # onnx | onnx_int8 (statically quantized for CPUs) | torchscript
    # file to write; null = next to the checkpoint: <name>.onnx / <name>.int8.onnx / <name>.torchscript.pt
    output: str | None = None
    verify: bool = True  # run the file and compare with the checkpoint (ONNX formats need onnxruntime)
    calibration_images: int = 128  # onnx_int8: training images that calibrate the activation ranges
    seed: int | None = None  # onnx_int8: seed of the train/val split and the sample; null = the run's
    # onnx_int8: data=<source> to calibrate on; null = the training run's own data config
    data: DataSettings | None = None
    # paths=default: data, logs and output folders
    paths: PathsSettings = field(default_factory=PathsSettings)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
@report_errors
def _hydra_main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    options: Any = command_options(cfg, ExportOptions, "export")
    result = export(options)
    temperature = read_record(options.ckpt_path).get("temperature")
    console = Console()
    size = result.path.stat().st_size / 2**20
    console.print(f"wrote {result.path} ({options.format}, {size:.1f} MiB)", soft_wrap=True)
    console.print(describe(temperature) + ("; built into the file's logits" if temperature else ""))
    if result.max_diff is not None:
        console.print(f"checked against the checkpoint: max |logit difference| {result.max_diff:.2e}")
    elif result.agreement is not None:
        console.print(
            f"checked against the checkpoint: same top class on {result.agreement:.1%} of the "
            f"{result.checked_images} calibration images (`python -m ftlab.eval ckpt_path={result.path}` "
            "measures its accuracy)",
            soft_wrap=True,
        )
        if result.agreement < MIN_INT8_AGREEMENT:
            console.print(
                f"warning: below {MIN_INT8_AGREEMENT:.0%}: this model loses accuracy in int8; compare with "
                "format=onnx (ftlab.eval on both), or calibrate on more images (calibration_images=)",
                soft_wrap=True,
            )
    elif options.verify:
        console.print("not checked: `pip install onnxruntime` to compare the ONNX file with the checkpoint")


@report_errors
def main() -> None:
    """The command line is checked (unknown keys, wrong types) before Hydra runs the command."""
    check_command_line("export")
    _hydra_main()


if __name__ == "__main__":
    main()
