"""`python -m ftlab.bench --exports ckpt_path=<ckpt>`: each export format against its checkpoint.

The checkpoint is exported to every format (`ftlab.export`: ONNX fp32, ONNX int8, TorchScript), each file is
evaluated by `ftlab.eval`'s own code on the run's validation split (so every format's accuracy comes from the
same metrics), and each model's CPU latency is timed at batch 1 and batch 32 on the same random input, the
formats alternated within each repeat so that load on the machine hits them alike. ONNX Runtime gets the
thread count torch uses.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from ftlab.benchmark.settings import device_name
from ftlab.data.settings import DataSettings
from ftlab.errors import FtlabError
from ftlab.inference import evaluation
from ftlab.inference.export import FILE_SUFFIXES, export
from ftlab.inference.exported import ExportedModel, load_model, onnx_session

FORMATS = ("onnx", "onnx_int8", "torchscript")  # what is exported and measured besides the checkpoint
BATCH_SIZES = (1, 32)


@dataclass
class ExportsOptions:
    """`--exports KEY=VALUE ...`: what to measure."""

    ckpt_path: str  # checkpoint written by ftlab.train, in its run folder (its val split is evaluated)
    calibration_images: int = 128  # onnx_int8: training images that calibrate the activation ranges
    repeats: int = 20  # timed forward passes per format and batch size (median reported)
    warmup: int = 3  # untimed passes first
    out_dir: str | None = None  # folder for the exported files; null = next to the checkpoint
    threads: int | None = None  # CPU threads for torch and ONNX Runtime alike; null = torch's default

    @classmethod
    def parse(cls, items: list[str]) -> ExportsOptions:
        """`ckpt_path=<ckpt> [calibration_images=N repeats=N warmup=N out_dir=<folder>]`."""
        values: dict[str, Any] = {}
        for item in items:
            key, sep, value = item.partition("=")
            keys = ", ".join(cls.__dataclass_fields__)
            if not sep or key not in cls.__dataclass_fields__:
                raise FtlabError(f"--exports {item!r}: give KEY=VALUE with KEY one of {keys}.")
            numbers = ("calibration_images", "repeats", "warmup", "threads")
            values[key] = int(value) if key in numbers else value
        if "ckpt_path" not in values:
            raise FtlabError("--exports needs ckpt_path=<checkpoint written by ftlab.train>.")
        return cls(**values)


@dataclass
class _Export:
    """ftlab.export's options (the command's own class lives in the cli layer)."""

    ckpt_path: str
    format: str
    output: str | None
    calibration_images: int
    verify: bool = True
    seed: int | None = None
    data: DataSettings | None = None


@dataclass
class _Eval:
    """ftlab.eval's options: the run's own val split on the CPU."""

    ckpt_path: str
    split: str = "val"
    seed: int | None = None
    data: DataSettings | None = None
    device: str = "cpu"
    calibrate: bool = False
    tta: str = "none"


def _latencies(models: dict[str, Any], crop: int, options: ExportsOptions) -> dict[str, dict[int, float]]:
    """Median ms per forward pass, per model and batch size; models alternate within each repeat."""
    result: dict[str, dict[int, float]] = {name: {} for name in models}
    for batch in BATCH_SIZES:
        images = torch.randn(batch, 3, crop, crop, generator=torch.Generator().manual_seed(batch))
        times: dict[str, list[float]] = {name: [] for name in models}
        for step in range(options.warmup + options.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model.logits(images)
                if step >= options.warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
        for name in models:
            result[name][batch] = statistics.median(times[name])
    return result


def exports_benchmark(options: ExportsOptions) -> dict[str, Any]:
    """Export, evaluate and time every format; one entry per format plus the checkpoint's."""
    ckpt = Path(options.ckpt_path).expanduser()
    files: dict[str, Path] = {"checkpoint": ckpt}
    for fmt in FORMATS:
        output = str(Path(options.out_dir) / (ckpt.stem + FILE_SUFFIXES[fmt])) if options.out_dir else None
        files[fmt] = export(_Export(str(ckpt), fmt, output, options.calibration_images)).path
    entries: dict[str, dict[str, Any]] = {}
    for name, path in files.items():
        report, about = evaluation.evaluate(_Eval(str(path)))
        entries[name] = {
            "file": str(path),
            "size_mib": path.stat().st_size / 2**20,
            "val_acc": report.headline,  # accuracy; val mAP for a multi-label model
            "val_images": about["images"],
        }
    if options.threads:
        torch.set_num_threads(options.threads)
    threads = torch.get_num_threads()
    models: dict[str, Any] = {}
    for name, path in files.items():
        model = load_model(path, "cpu")
        if isinstance(model, ExportedModel) and name != "torchscript":
            model.runner = onnx_session(path, torch.device("cpu"), threads=threads)
        models[name] = model
    crop = models["checkpoint"].preprocessing.crop_size
    for name, latency in _latencies(models, crop, options).items():
        reference = entries["checkpoint"]["val_acc"]
        entries[name] |= {
            "delta_vs_checkpoint": entries[name]["val_acc"] - reference,
            "latency_ms": {str(b): ms for b, ms in latency.items()},
        }
    return {
        "device": device_name(torch.device("cpu")),
        "torch": torch.__version__,
        "threads": threads,
        "crop": crop,
        "calibration_images": options.calibration_images,
        "repeats": options.repeats,
        "exports": entries,
    }


def exports_table(result: dict[str, Any]) -> Table:
    """Format, val accuracy, its delta from the checkpoint, latency at batch 1 and 32, file size."""
    table = Table(
        title=f"exports on {result['device']}, {result['crop']} px, median of {result['repeats']} passes"
    )
    for column in ("format", "val acc", "delta vs checkpoint", "ms batch 1", "ms batch 32", "MiB"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for name, entry in result["exports"].items():
        latency = entry["latency_ms"]
        table.add_row(
            name,
            f"{entry['val_acc']:.4f}",
            f"{entry['delta_vs_checkpoint'] * 100:+.2f} pt",
            f"{latency['1']:.2f}",
            f"{latency['32']:.1f}",
            f"{entry['size_mib']:.1f}",
        )
    return table
