"""A checkpoint as a standalone ONNX or TorchScript file, checked against the checkpoint after writing.

The file takes float32 images (N, 3, crop, crop), already resized, cropped and normalised as the recorded
preprocessing says, and returns logits (N, classes) in the recorded class order; a calibrated checkpoint's
temperature is built in (the file returns logits / T), so softmax of its output gives calibrated
probabilities. The record (class names, preprocessing, backbone, weights id, temperature) travels inside the
file: ONNX `metadata_props` (values are JSON), TorchScript `_extra_files["ftlab.json"]`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftlab.errors import FtlabError
from ftlab.inference.checkpoint import TrainedModel
from ftlab.io.checkpoints import atomic_write

FILE_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}  # export format -> file name ending
TOLERANCE = 1e-4  # max |logit difference| accepted, relative to the logits' scale
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class ScaledLogits(nn.Module):
    """The classifier with its calibration temperature built in: returns logits / T."""

    def __init__(self, network: nn.Module, temperature: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images) / self.temperature


def exported_network(model: TrainedModel) -> nn.Module:
    """What goes into the file: the classifier, divided by its temperature when it is calibrated."""
    temperature = model.temperature
    if temperature is None:
        return model.module
    return ScaledLogits(model.module.net, temperature).eval()  # the plain torchvision network: traceable


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
        + (
            "calibrated probabilities (logits already divided by temperature)."
            if model.temperature
            else "probabilities (not calibrated)."
        ),
        "temperature": model.temperature,
        "source_checkpoint": str(model.path),
        "multi_label": model.multi_label,  # true: sigmoid per label, label i shown when p_i >= thresholds[i]
        "thresholds": model.thresholds,  # multi-label: per-label thresholds tuned on val (else null)
    }


def export_onnx(model: TrainedModel, example: torch.Tensor, path: Path, record: dict[str, Any]) -> None:
    """ONNX (torch.export-based exporter) with a dynamic batch axis and the record in metadata_props."""
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            exported_network(model),
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
        network = exported_network(model)
        if network is model.module:
            script = model.module.to_torchscript(method="trace", example_inputs=example)
        else:
            script = torch.jit.trace(network, example)
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
    if options.format not in FILE_SUFFIXES:
        raise FtlabError(f"format={options.format!r}: use one of {', '.join(FILE_SUFFIXES)}.")
    model = TrainedModel.load(options.ckpt_path, "cpu")
    ckpt = Path(options.ckpt_path).expanduser()
    path = (
        Path(options.output).expanduser()
        if options.output
        else ckpt.with_name(ckpt.stem + FILE_SUFFIXES[options.format])
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
    expected = model.logits(check) / (model.temperature or 1.0)
    diff = float((exported - expected).abs().max())
    if diff > TOLERANCE * max(1.0, float(expected.abs().max())):
        raise FtlabError(
            f"The exported {path} disagrees with the checkpoint: max |logit difference| {diff:.3g}. Try the "
            "other format, and report the backbone."
        )
    return path, diff
