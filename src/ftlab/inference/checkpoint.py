"""A trained checkpoint ready for inference: the network, its class names and preprocessing, on a device.

Shared by `ftlab.predict`, `ftlab.eval` and `ftlab.export`. Everything needed comes from the checkpoint's
`checkpoint["ftlab"]` record; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftlab.data.preprocessing import Preprocessing
from ftlab.errors import FtlabError
from ftlab.io.checkpoints import load_checkpoint
from ftlab.models.module import Classifier


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:<n>` as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise FtlabError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:<index>.") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FtlabError(f"device={name!r}, but PyTorch sees no CUDA device here. Use device=cpu (or auto).")
    return device


def read_record(path: str | Path) -> dict[str, Any]:
    """The `checkpoint["ftlab"]` record (class names, backbone, weights id, preprocessing, temperature)."""
    path = Path(path).expanduser()
    checkpoint = load_checkpoint(path)  # tensors and plain values only: a pickle that runs code is refused
    record = checkpoint.get("ftlab") if isinstance(checkpoint, dict) else None
    if not isinstance(record, dict) or "class_names" not in record or "preprocessing" not in record:
        raise FtlabError(
            f"ckpt_path={str(path)!r} has no ftlab record (class names, preprocessing): give a checkpoint "
            "written by `python -m ftlab.train` (checkpoints/best.ckpt or last.ckpt of a run)."
        )
    return record


class RecordedModel:
    """What a model file's ftlab record says about its outputs, for a checkpoint (`TrainedModel`) and an
    exported file (`exported.ExportedModel`) alike; subclasses give `record` and `logits`."""

    record: dict[str, Any]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def multi_label(self) -> bool:
        """The head is one sigmoid per label (trained on multi-label data)."""
        return bool(self.record.get("multi_label", False))

    @property
    def thresholds(self) -> list[float] | None:
        """Multi-label: the per-label thresholds tuned on the validation split (None: 0.5 for every label)."""
        values = self.record.get("thresholds")
        return None if values is None else [float(v) for v in values]

    @property
    def temperature(self) -> float | None:
        """The temperature stored by `ftlab.eval calibrate=true` (or training); None if never fitted."""
        value = self.record.get("temperature")
        return None if value is None else float(value)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, classes) on the CPU: softmax(logits / T) once calibrated, else softmax;
        multi-label: one sigmoid probability per label."""
        if self.multi_label:
            return torch.sigmoid(self.logits(images))
        return torch.softmax(self.logits(images) / (self.temperature or 1.0), dim=1)


@dataclass
class TrainedModel(RecordedModel):
    """A checkpoint's classifier in eval mode on `device`, with its recorded class names and preprocessing."""

    module: Classifier
    class_names: list[str]
    preprocessing: Preprocessing
    record: dict[str, Any]
    path: Path
    device: torch.device

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
        """Load a checkpoint written by `ftlab.train` without downloading any pretrained weights."""
        record = read_record(path)  # refuses files that are not ftlab's before Lightning opens them
        target = device if isinstance(device, torch.device) else resolve_device(device)
        try:
            module = Classifier.load_from_checkpoint(
                str(path), map_location="cpu", weights_only=True, weights=None
            )
        except (RuntimeError, TypeError, KeyError) as err:
            raise FtlabError(
                f"ckpt_path={str(path)!r} could not be loaded into a {record.get('backbone')} classifier: "
                f"{str(err).splitlines()[0]}"
            ) from err
        module.eval().to(target)
        prep = Preprocessing.from_dict(record["preprocessing"])
        return cls(module, list(record["class_names"]), prep, record, Path(path), target)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) on the CPU for a batch of preprocessed images."""
        return self.module(images.to(self.device)).float().cpu()


def class_mismatch(
    checkpoint_classes: list[str], data_classes: list[str], ckpt_path: str | Path
) -> str | None:
    """A clear message when the data's classes are not the checkpoint's (order aside), else None."""
    if sorted(checkpoint_classes) == sorted(data_classes):
        return None
    missing = sorted(set(data_classes) - set(checkpoint_classes))
    extra = sorted(set(checkpoint_classes) - set(data_classes))
    return (
        f"The checkpoint's classes differ from the data's. Checkpoint {ckpt_path}: {checkpoint_classes}; "
        f"data: {data_classes}. Only in the data: {missing}; only in the checkpoint: {extra}. Evaluate on "
        "data with the classes the model was trained on (for data=cifar10 set data.classes, for "
        "data=imagefolder one sub-folder per class)."
    )


def require_same_classes(ckpt_path: str | Path, data_classes: list[str]) -> None:
    """Stop before resuming training from a checkpoint whose head was trained on other classes (or order)."""
    record = read_record(ckpt_path)
    trained = list(record["class_names"])
    if trained != list(data_classes):
        raise FtlabError(
            f"ckpt_path={str(ckpt_path)!r} was trained on the classes {trained}; the data has "
            f"{data_classes}. Resuming needs the same classes in the same order (label i is output i): "
            "use the data the run was trained on, or start a new run without ckpt_path/resume."
        )
