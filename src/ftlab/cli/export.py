"""`python -m ftlab.export ckpt_path=<ckpt> format=onnx|torchscript`: a standalone model file.

The exported model takes float32 images (N, 3, crop, crop), already resized, cropped and normalised as the
recorded preprocessing says, and returns logits (N, classes) in the recorded class order (softmax gives
probabilities). The record (class names, preprocessing, backbone, weights id) travels inside the file: ONNX
`metadata_props` (values are JSON), TorchScript `_extra_files["ftlab.json"]`. After writing, the file is run
on a random batch and compared with the checkpoint (ONNX needs `onnxruntime` for that check).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import MISSING, DictConfig
from rich.console import Console

from ftlab.config.location import config_dir
from ftlab.config.schemas import checked_options
from ftlab.errors import FtlabError, report_errors
from ftlab.inference.checkpoint import TrainedModel
from ftlab.training.checkpoint_io import atomic_write

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
TOLERANCE = 1e-4  # max |logit difference| accepted, relative to the logits' scale
INPUT_NAME, OUTPUT_NAME = "images", "logits"


@dataclass
class ExportOptions:
    """The options of `ftlab.export` (conf/export.yaml)."""

    ckpt_path: str = MISSING
    format: str = "onnx"
    output: str | None = None
    verify: bool = True


def metadata(model: TrainedModel) -> dict[str, Any]:
    """What the exported file records about its input and output, as plain JSON-able values."""
    prep = model.preprocessing
    crop = prep.crop_size
    return {
        "class_names": model.class_names,
        "preprocessing": prep.to_dict(),
        "backbone": model.record.get("backbone"),
        "weights_id": model.record.get("weights_id"),
        "input": (
            f"{INPUT_NAME}: float32 (N, 3, {crop}, {crop}) RGB. Resize the short side to {prep.resize_size} "
            f"({prep.interpolation}; images smaller than {crop} are resized whole to {crop}), centre-crop "
            f"{crop}, scale to [0, 1], subtract mean and divide by std (see preprocessing)."
        ),
        "output": f"{OUTPUT_NAME}: float32 (N, {len(model.class_names)}) in class_names order; softmax gives "
        "probabilities.",
        "source_checkpoint": str(model.path),
    }


def export_onnx(model: TrainedModel, example: torch.Tensor, path: Path, record: dict[str, Any]) -> None:
    """ONNX (torch.export-based exporter) with a dynamic batch axis and the record in metadata_props."""
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise FtlabError("The ONNX exporter returned nothing; export with format=torchscript instead.")
    program.model.metadata_props.update(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}
    )
    proto = program.model_proto  # weights inside the one file (protobuf's limit: 2 GiB)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))


def export_torchscript(
    model: TrainedModel, example: torch.Tensor, path: Path, record: dict[str, Any]
) -> None:
    """TorchScript (traced) with the record in `_extra_files["ftlab.json"]`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream, still widely deployed
        script = model.module.to_torchscript(method="trace", example_inputs=example)
        extra = {"ftlab.json": json.dumps(record)}
        atomic_write(path, lambda f: torch.jit.save(script, f, _extra_files=extra))


def run_exported(path: Path, fmt: str, images: torch.Tensor) -> torch.Tensor | None:
    """Logits of the exported file for `images`; None when the runtime to check it is not installed."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(str(path), map_location="cpu")
            with torch.inference_mode():
                return loaded(images)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])


def export(options: Any) -> tuple[Path, float | None]:
    """Write the exported file; return its path and the max |logit difference| from the checkpoint."""
    if options.format not in FORMATS:
        raise FtlabError(f"format={options.format!r}: use one of {', '.join(FORMATS)}.")
    model = TrainedModel.load(options.ckpt_path, "cpu")
    ckpt = Path(options.ckpt_path).expanduser()
    path = (
        Path(options.output).expanduser()
        if options.output
        else ckpt.with_name(ckpt.stem + FORMATS[options.format])
    )
    crop = model.preprocessing.crop_size
    example = torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    record = metadata(model)
    writer = export_onnx if options.format == "onnx" else export_torchscript
    try:
        writer(model, example, path, record)
    except OSError as err:
        raise FtlabError(f"Could not write {path}: {err}.") from err
    if not options.verify:
        return path, None
    check = torch.randn(3, 3, crop, crop, generator=torch.Generator().manual_seed(1))  # another batch size
    exported = run_exported(path, options.format, check)
    if exported is None:
        return path, None
    expected = model.logits(check)
    diff = float((exported - expected).abs().max())
    if diff > TOLERANCE * max(1.0, float(expected.abs().max())):
        raise FtlabError(
            f"The exported {path} disagrees with the checkpoint: max |logit difference| {diff:.3g}. Try the "
            "other format, and report the backbone."
        )
    return path, diff


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    options: Any = checked_options(cfg, ExportOptions, "export")
    path, diff = export(options)
    console = Console()
    size = path.stat().st_size / 2**20
    console.print(f"wrote {path} ({options.format}, {size:.1f} MiB)")
    if diff is not None:
        console.print(f"checked against the checkpoint: max |logit difference| {diff:.2e}")
    elif options.verify:
        console.print("not checked: `pip install onnxruntime` to compare the ONNX file with the checkpoint")


if __name__ == "__main__":
    main()
