"""A checkpoint as a standalone ONNX (fp32 or int8) or TorchScript file, checked against the checkpoint.

The file takes float32 images (N, 3, crop, crop), already resized, cropped and normalised as the recorded
preprocessing says, and returns logits (N, classes) in the recorded class order; a calibrated checkpoint's
temperature is built in (the file returns logits / T), so softmax of its output gives calibrated
probabilities. The checkpoint's record (`exported.export_metadata`: class names, preprocessing, backbone,
weights id, temperature, multi-label keys, ...) travels inside the file: ONNX `metadata_props` (`ftlab`: the
whole record as JSON, and each key on its own, values JSON), TorchScript `_extra_files["ftlab.json"]`.

`format=onnx_int8` is the fp32 ONNX file quantized by ONNX Runtime's static quantization (QDQ, weights int8
per output channel, activations int8 with ranges calibrated on `calibration_images` training images read
through the run's own data pipeline, without augmentation), for CPUs.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ftlab.data import build_datamodule, build_source
from ftlab.errors import FtlabError
from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.exported import (
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAME,
    RECORD_KEY,
    ExportedModel,
    export_metadata,
)
from ftlab.io.checkpoints import atomic_write

# export format -> file name ending
FILE_SUFFIXES = {"onnx": ".onnx", "onnx_int8": ".int8.onnx", "torchscript": ".torchscript.pt"}
TOLERANCE = 1e-4  # max |logit difference| accepted (fp32 formats), relative to the logits' scale
MIN_INT8_AGREEMENT = 0.9  # int8: below this share of the checkpoint's top classes, the command warns


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


def onnx_props(record: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props: the whole record under `ftlab` (JSON), and each key on its own (strings as they
    are, other values as JSON) for tools that read one key."""
    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}
    return props | {RECORD_KEY: json.dumps(record)}


def onnx_program(model: TrainedModel, example: torch.Tensor) -> Any:
    """The classifier (divided by its temperature) as an ONNX program with a dynamic batch axis."""
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
    return program


def export_onnx(model: TrainedModel, example: torch.Tensor, path: Path, record: dict[str, Any]) -> None:
    """ONNX (torch.export-based exporter) with a dynamic batch axis and the record in metadata_props."""
    program = onnx_program(model, example)
    program.model.metadata_props.update(onnx_props(record))
    proto = program.model_proto  # weights inside the one file (protobuf's limit: 2 GiB)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))


class _Batches:
    """ONNX Runtime's calibration reader protocol over a list of preprocessed batches."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch.numpy()}

    def rewind(self) -> None:  # part of the protocol; one pass is all static MinMax calibration needs
        raise NotImplementedError


def export_onnx_int8(
    model: TrainedModel,
    example: torch.Tensor,
    path: Path,
    record: dict[str, Any],
    calibration: list[torch.Tensor],
) -> None:
    """The fp32 ONNX graph, pre-processed (shape inference, BatchNorm folded) and statically quantized by
    ONNX Runtime: QDQ, int8 weights per output channel, int8 activations calibrated (MinMax) on
    `calibration`; the record in metadata_props."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Batches, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="ftlab-int8-") as tmp:
        fp32, prepared, quantized = (Path(tmp) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        fp32.write_bytes(onnx_program(model, example).model_proto.SerializeToString())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(
                str(prepared),
                str(quantized),
                Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        proto = onnx.load(str(quantized))
    del proto.metadata_props[:]
    for key, value in onnx_props(record).items():
        proto.metadata_props.add(key=key, value=value)
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


def calibration_images(options: Any, model: TrainedModel) -> list[torch.Tensor]:
    """`options.calibration_images` training images of the run's data (or `data=` on the command line),
    preprocessed as at validation (no augmentation), in batches: a seeded sample spread over the classes."""
    from ftlab.inference.evaluation import data_settings

    count = options.calibration_images
    if count < 1:
        raise FtlabError(f"calibration_images={count}: give a positive number of training images.")
    data, seed, _ = data_settings(options)
    source = build_source(data, seed)
    datamodule = build_datamodule(data, source, model.preprocessing)
    datamodule.setup("validate")
    assert datamodule.train_set is not None and datamodule.val_set is not None
    train = datamodule.train_set
    train.transform = datamodule.val_set.transform  # no augmentation
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count]
    loader = DataLoader(Subset(train, order.tolist()), batch_size=32, num_workers=datamodule.num_workers)
    batches = [datamodule.device_transform(images).float().cpu() for images, _ in loader]
    if not batches:
        raise FtlabError("format=onnx_int8: the data has no training images to calibrate on.")
    return batches


@dataclass
class ExportResult:
    """The written file and how it compares with the checkpoint (None when not checked)."""

    path: Path
    max_diff: float | None = None  # max |logit difference| on a random batch (fp32 formats)
    agreement: float | None = None  # int8: share of calibration images with the checkpoint's top class
    checked_images: int = 0

    def __iter__(self) -> Iterator[Any]:
        """`path, max_diff = export(options)`, as before the int8 format added its own check."""
        return iter((self.path, self.max_diff))


def run_exported(path: Path, fmt: str, images: torch.Tensor) -> torch.Tensor | None:
    """The exported file's output for `images` (logits / T when calibrated); None without onnxruntime."""
    try:
        loaded = ExportedModel.load(path, "cpu", key="output")
    except FtlabError:
        if fmt == "torchscript":
            raise
        return None  # onnxruntime missing
    return loaded.file_logits(images)


def export(options: Any) -> ExportResult:
    """Write the exported file and compare it with the checkpoint (`options.verify`)."""
    if options.format not in FORMATS:
        raise FtlabError(f"format={options.format!r}: use one of {', '.join(FORMATS)}.")
    model = TrainedModel.load(options.ckpt_path, "cpu")
    ckpt = Path(options.ckpt_path).expanduser()
    path = (
        Path(options.output).expanduser()
        if options.output
        else ckpt.with_name(ckpt.stem + FILE_SUFFIXES[options.format])
    )
    crop = model.preprocessing.crop_size
    example = torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    record = export_metadata(model.record, options.format, model.path)
    calibration = calibration_images(options, model) if options.format == "onnx_int8" else []
    try:
        if options.format == "onnx_int8":
            export_onnx_int8(model, example, path, record, calibration)
        elif options.format == "onnx":
            export_onnx(model, example, path, record)
        else:
            export_torchscript(model, example, path, record)
    except OSError as err:
        raise FtlabError(f"Could not write {path}: {err}.") from err
    if not options.verify:
        return ExportResult(path)
    if options.format == "onnx_int8":
        return check_int8(model, path, calibration)
    check = torch.randn(3, 3, crop, crop, generator=torch.Generator().manual_seed(1))  # another batch size
    exported = run_exported(path, options.format, check)
    if exported is None:
        return ExportResult(path)
    expected = model.logits(check) / (model.temperature or 1.0)
    diff = float((exported - expected).abs().max())
    if diff > TOLERANCE * max(1.0, float(expected.abs().max())):
        raise FtlabError(
            f"The exported {path} disagrees with the checkpoint: max |logit difference| {diff:.3g}. Try the "
            "other format, and report the backbone."
        )
    return ExportResult(path, max_diff=diff, checked_images=len(check))


def check_int8(model: TrainedModel, path: Path, calibration: list[torch.Tensor]) -> ExportResult:
    """The int8 file's top class against the checkpoint's on the calibration images."""
    images = torch.cat(calibration)
    exported = run_exported(path, "onnx_int8", images)
    if exported is None:
        return ExportResult(path)
    agreement = float((exported.argmax(1) == model.logits(images).argmax(1)).float().mean())
    return ExportResult(path, agreement=agreement, checked_images=len(images))
