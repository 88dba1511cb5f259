"""Exported files (ONNX fp32 and int8, TorchScript) against the checkpoint they came from: logits, metadata,
and ftlab.eval's metrics computed through `exported.load_model`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch

from ftlab.cli.eval import EvalOptions
from ftlab.cli.export import ExportOptions
from ftlab.errors import FtlabError
from ftlab.inference import evaluation
from ftlab.inference.calibration import store_temperature
from ftlab.inference.checkpoint import TrainedModel
from ftlab.inference.export import export
from ftlab.inference.exported import ExportedModel, load_model, read_any_record
from ftlab.models.module import Classifier

# slow: exporting three formats costs about 15 s on 2 cores, beyond the default suite's budget
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")]
TEMPERATURE = 1.7
EXTRA = {"multi_label": False, "thresholds": [0.25, 0.5, 0.75], "some_later_key": {"a": 1}}


@pytest.fixture(scope="module")
def exported(smoke_run: Path) -> dict[str, Path]:
    """A calibrated copy of the smoke checkpoint with extra record keys, inside its run folder (so eval finds
    the run's data), exported to every format."""
    folder = smoke_run / "checkpoints"
    ckpt = folder / "exported_case.ckpt"
    shutil.copy(folder / "best.ckpt", ckpt)
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["ftlab"].update(EXTRA)
    torch.save(checkpoint, ckpt)
    store_temperature(ckpt, TEMPERATURE)
    files = {"checkpoint": ckpt}
    for fmt in ("onnx", "onnx_int8", "torchscript"):  # default output: next to the checkpoint
        files[fmt] = export(ExportOptions(ckpt_path=str(ckpt), format=fmt)).path
    assert {p.name for p in files.values()} == {
        "exported_case.ckpt",
        "exported_case.onnx",
        "exported_case.int8.onnx",
        "exported_case.torchscript.pt",
    }
    return files


def _images(crop: int, count: int = 6) -> torch.Tensor:
    return torch.randn(count, 3, crop, crop, generator=torch.Generator().manual_seed(5))


def test_fp32_exports_give_the_checkpoints_logits_and_metadata(exported):
    ckpt = exported["checkpoint"]
    record = torch.load(ckpt, map_location="cpu", weights_only=True)["ftlab"]
    net = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights=None).eval()  # independent path
    images = _images(record["preprocessing"]["crop_size"])
    with torch.no_grad():
        raw = net(images)
    for fmt in ("onnx", "torchscript"):
        model = load_model(exported[fmt])
        assert isinstance(model, ExportedModel) and model.format == fmt
        torch.testing.assert_close(model.logits(images), raw, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.file_logits(images), raw / TEMPERATURE, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            model.probabilities(images), torch.softmax(raw / TEMPERATURE, 1), atol=1e-5, rtol=1e-4
        )
        # Metadata round trip: every record key (the later ones too), read back as written.
        meta = read_any_record(exported[fmt])
        for key, value in record.items():
            assert meta[key] == value, key
        assert meta["temperature"] == pytest.approx(TEMPERATURE) and meta["temperature_applied"] is True
        assert model.class_names == record["class_names"]
        assert model.preprocessing.to_dict() == record["preprocessing"]
    # The same record read with the plain libraries, as a user would.
    props = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    assert json.loads(props["ftlab"])["thresholds"] == EXTRA["thresholds"]
    assert json.loads(props["class_names"]) == record["class_names"]
    extra = {"ftlab.json": ""}
    torch.jit.load(str(exported["torchscript"]), _extra_files=extra)
    assert json.loads(extra["ftlab.json"])["some_later_key"] == EXTRA["some_later_key"]


def test_int8_onnx_is_quantized_and_close_to_fp32(exported):
    graph = onnx.load(str(exported["onnx_int8"])).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    per_channel = [
        i for i in graph.initializer if i.name.endswith("_scale") and len(i.dims) == 1 and i.dims[0] > 1
    ]
    assert per_channel, "weights should carry one scale per output channel"
    assert exported["onnx_int8"].stat().st_size < 0.4 * exported["onnx"].stat().st_size
    fp32 = onnxruntime.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    model = load_model(exported["onnx_int8"])
    crop = model.preprocessing.crop_size
    images = _images(crop, 16)
    (reference,) = fp32.run(["logits"], {"images": images.numpy()})
    quantized = model.file_logits(images)
    spread = float(torch.from_numpy(reference).std())
    assert float((quantized - torch.from_numpy(reference)).abs().mean()) < 0.25 * spread


def _eval(path: Path) -> dict:
    options = EvalOptions(ckpt_path=str(path), device="cpu")
    report, about = evaluation.evaluate(options)
    return {
        "accuracy": report.accuracy,
        "confusion": report.confusion,
        "calibration": report.calibration.as_dict(),
        "temperature": report.temperature,
        "format": about["model_format"],
    }


def test_eval_of_each_export_equals_eval_of_the_checkpoint(exported):
    reference = _eval(exported["checkpoint"])
    assert reference["temperature"] == pytest.approx(TEMPERATURE)
    for fmt in ("onnx", "torchscript", "onnx_int8"):
        result = _eval(exported[fmt])
        assert result["format"] == fmt
        assert result["temperature"] == pytest.approx(TEMPERATURE)
        if fmt == "onnx_int8":  # 12 val images: at most one prediction may change
            assert abs(result["accuracy"] - reference["accuracy"]) <= 1 / 12 + 1e-9
            continue
        assert result["accuracy"] == reference["accuracy"] and result["confusion"] == reference["confusion"]
        for name, value in reference["calibration"].items():
            assert result["calibration"][name] == pytest.approx(value, abs=1e-4)
    with pytest.raises(FtlabError, match="calibrate=true stores a temperature in a checkpoint"):
        evaluation.evaluate(EvalOptions(ckpt_path=str(exported["onnx"]), calibrate=True))


def test_files_without_ftlab_metadata_are_refused(exported, tmp_path):
    proto = onnx.load(str(exported["onnx"]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(proto.SerializeToString())
    with pytest.raises(FtlabError, match="ONNX file without ftlab's metadata"):
        load_model(bare)
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))  # TorchScript without ftlab.json
    with pytest.raises(FtlabError, match="TorchScript file without ftlab's metadata"):
        load_model(plain)
    assert isinstance(load_model(exported["checkpoint"]), TrainedModel)


def test_bench_exports_reports_every_format_beside_the_checkpoint(exported, tmp_path):
    from ftlab.cli.bench import main

    tables = []
    ckpt = exported["checkpoint"]
    args = ["--exports", f"ckpt_path={ckpt}", "repeats=2", "warmup=1"]  # files next to the checkpoint
    result = main([*args, "--json", str(tmp_path / "exports.json")], report=tables.append)
    entries = result["exports"]
    assert list(entries) == ["checkpoint", "onnx", "onnx_int8", "torchscript"]
    reference = _eval(ckpt)["accuracy"]
    for name, entry in entries.items():
        assert set(entry["latency_ms"]) == {"1", "32"} and all(v > 0 for v in entry["latency_ms"].values())
        assert Path(entry["file"]).stat().st_size == pytest.approx(entry["size_mib"] * 2**20)
        if name != "onnx_int8":
            assert entry["val_acc"] == reference and entry["delta_vs_checkpoint"] == 0
    assert json.loads((tmp_path / "exports.json").read_text())["exports"]["onnx"]["val_acc"] == reference
    assert tables and tables[0].row_count == 4
    with pytest.raises(SystemExit):
        main(["--exports", "checkpoint=x"], report=tables.append)
