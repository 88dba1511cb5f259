"""A file written by `ftlab.export` (ONNX fp32 or int8, TorchScript) as a model with a checkpoint's interface.

`load_model(path)` opens any model file ftlab accepts: a checkpoint (`TrainedModel`) or an exported file
(`ExportedModel`). Both give `class_names`, `preprocessing`, `record`, `temperature`, `logits(images)` (the
uncalibrated logits, as the checkpoint computes them) and `probabilities(images)`, so predict, eval and the
server run one code path whatever the file. An exported file's record is the metadata `ftlab.export` wrote
(`export_metadata`): ONNX `metadata_props["ftlab"]`, TorchScript `_extra_files["ftlab.json"]`; a file
without it is not ftlab's and is refused before anything in it runs.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftlab.data.preprocessing import Preprocessing
from ftlab.errors import FtlabError
from ftlab.inference.checkpoint import RecordedModel, TrainedModel, read_record, resolve_device
from ftlab.io.checkpoints import is_torchscript

RECORD_KEY = "ftlab"  # ONNX metadata_props key holding the whole record as one JSON object
EXTRA_FILE = "ftlab.json"  # TorchScript _extra_files entry holding the same JSON object
INPUT_NAME, OUTPUT_NAME = "images", "logits"
ONNX_FORMATS = ("onnx", "onnx_int8")
FORMATS = (*ONNX_FORMATS, "torchscript")  # what `ftlab.export format=` writes
INSTEAD = (
    "a checkpoint written by `python -m ftlab.train` (a run's checkpoints/best.ckpt or last.ckpt) or a model "
    "file written by `python -m ftlab.export`"
)
# Record keys that describe the file rather than the model; written by ftlab.export, never copied.
FILE_KEYS = ("format", "input", "output", "temperature_applied", "source_checkpoint")


def export_metadata(record: dict[str, Any], fmt: str, source: str | Path) -> dict[str, Any]:
    """The metadata an exported file carries: every JSON value of the checkpoint's ftlab record (class
    names, preprocessing, backbone, weights id, temperature, multi-label keys, and whatever the record gains
    later), plus the file's format, a description of its input and output, and its source checkpoint."""
    meta: dict[str, Any] = {}
    for key, value in record.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue  # a tensor or other non-JSON value: not metadata
        meta[key] = value
    prep = Preprocessing.from_dict(record["preprocessing"])
    crop, temperature = prep.crop_size, record.get("temperature")
    meta["format"] = fmt
    meta["input"] = (
        f"{INPUT_NAME}: float32 (N, 3, {crop}, {crop}) RGB. Resize the short side to {prep.resize_size} "
        f"({prep.interpolation}; images smaller than {crop} are resized whole to {crop}), centre-crop "
        f"{crop}, scale to [0, 1], subtract mean and divide by std (see preprocessing)."
    )
    activation = "sigmoid" if record.get("multi_label") else "softmax"
    meta["output"] = f"{OUTPUT_NAME}: float32 (N, {len(record['class_names'])}) in class_names order; " + (
        f"{activation} gives calibrated probabilities (logits already divided by temperature)."
        if temperature
        else f"{activation} gives probabilities (not calibrated)."
    )
    meta["temperature_applied"] = temperature is not None  # the file's logits are logits / temperature
    meta["source_checkpoint"] = str(source)
    return meta


def file_kind(path: str | Path) -> str:
    """`checkpoint`, `torchscript` or `onnx`, from the file's content (not its name)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return "torchscript" if is_torchscript(path) else "checkpoint"
    with open(path, "rb") as f:
        head = f.read(2)
    # An ONNX ModelProto starts with field 1 (ir_version, varint: 0x08) in every exporter we know.
    return "onnx" if head[:1] == b"\x08" else "checkpoint"


def _not_ftlab(path: Path, key: str, kind: str) -> FtlabError:
    return FtlabError(
        f"{key}={str(path)!r} is a {kind} file without ftlab's metadata (class names, preprocessing), so it "
        f"was not written by `python -m ftlab.export`; give {INSTEAD}."
    )


def _checked(meta: Any, path: Path, key: str, kind: str) -> dict[str, Any]:
    if not isinstance(meta, dict) or "class_names" not in meta or "preprocessing" not in meta:
        raise _not_ftlab(path, key, kind)
    return meta


def read_onnx_record(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The ftlab record in an ONNX file's metadata (parsed protobuf only: nothing in the file runs)."""
    import onnx

    path = Path(path).expanduser()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends
        raise FtlabError(
            f"{key}={str(path)!r} is not a readable ONNX file ({err}); give {INSTEAD}."
        ) from None
    props = {p.key: p.value for p in model.metadata_props}
    if RECORD_KEY not in props:  # written before the whole record had one key: one JSON value per key
        return _checked({k: _json_or_text(v) for k, v in props.items()}, path, key, "ONNX")
    try:
        meta = json.loads(props[RECORD_KEY])
    except ValueError:
        raise _not_ftlab(path, key, "ONNX") from None
    return _checked(meta, path, key, "ONNX")


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def read_torchscript_record(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The ftlab record in a TorchScript archive, read from the zip before the archive is loaded."""
    path = Path(path).expanduser()
    with zipfile.ZipFile(path) as archive:
        name = next((n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")), None)
        if name is None:
            raise _not_ftlab(path, key, "TorchScript")
        try:
            meta = json.loads(archive.read(name))
        except ValueError:
            raise _not_ftlab(path, key, "TorchScript") from None
    return _checked(meta, path, key, "TorchScript")


def read_any_record(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The ftlab record of a checkpoint or of an exported file; one FtlabError for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FtlabError(f"{key}={str(path)!r}: no such file; give {INSTEAD}.")
    kind = file_kind(path)
    if kind == "onnx":
        return read_onnx_record(path, key)
    if kind == "torchscript":
        return read_torchscript_record(path, key)
    return read_record(path)


@dataclass
class ExportedModel(RecordedModel):
    """An exported file run by ONNX Runtime (ONNX) or torch.jit (TorchScript), with TrainedModel's
    interface."""

    runner: Any
    format: str  # onnx | onnx_int8 | torchscript (what the metadata says)
    class_names: list[str]
    preprocessing: Preprocessing
    record: dict[str, Any]
    path: Path
    device: torch.device

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", key: str = "ckpt_path"
    ) -> ExportedModel:
        """Open an ONNX or TorchScript file written by `ftlab.export` (its metadata is checked first)."""
        path = Path(path).expanduser()
        target = device if isinstance(device, torch.device) else resolve_device(device)
        if file_kind(path) == "torchscript":
            record = read_torchscript_record(path, key)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript is deprecated upstream
                runner: Any = torch.jit.load(str(path), map_location=target).eval()
        else:
            record = read_onnx_record(path, key)
            runner = onnx_session(path, target)
            target = torch.device("cpu")  # outputs come back as CPU arrays
        prep = Preprocessing.from_dict(record["preprocessing"])
        fmt = str(record.get("format", "onnx"))
        return cls(runner, fmt, list(record["class_names"]), prep, record, path, target)

    def file_logits(self, images: torch.Tensor) -> torch.Tensor:
        """What the file outputs (N, classes) on the CPU: logits / T when the checkpoint was calibrated."""
        if isinstance(self.runner, torch.jit.ScriptModule):
            with torch.inference_mode():
                return self.runner(images.to(self.device, torch.float32)).float().cpu()
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.runner.run([OUTPUT_NAME], {INPUT_NAME: array})[0]).float()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The uncalibrated logits (N, classes), as the checkpoint's `logits` gives them."""
        out = self.file_logits(images)
        applied = self.record.get("temperature_applied", True)  # older files: always built in
        return out * self.temperature if applied and self.temperature else out


def onnx_session(path: Path, device: torch.device, threads: int | None = None) -> Any:
    """An ONNX Runtime session for `path` (CUDA provider when asked for and installed, else the CPU)."""
    try:
        import onnxruntime
    except ImportError:
        raise FtlabError(
            f"{path} is an ONNX file; running it needs onnxruntime: `pip install onnxruntime`."
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # ONNX Runtime's Fail/InvalidGraph
        raise FtlabError(f"ONNX Runtime cannot run {path}: {str(err).splitlines()[0]}") from None


Model = TrainedModel | ExportedModel


def load_model(path: str | Path, device: str | torch.device = "cpu", key: str = "ckpt_path") -> Model:
    """A checkpoint or an exported file, ready for inference; a file that is not ftlab's is refused."""
    read_any_record(path, key)  # one refusal for files that are not ftlab's, before anything is loaded
    if file_kind(Path(path).expanduser()) == "checkpoint":
        return TrainedModel.load(path, device)
    return ExportedModel.load(path, device, key)
