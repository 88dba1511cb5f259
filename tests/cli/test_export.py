"""`python -m ftlab.export`: ONNX (run by onnxruntime) and TorchScript files equal the checkpoint."""

from __future__ import annotations

import json

import onnx
import onnxruntime
import pytest
import torch

from ftlab.cli.export import ExportOptions, export
from ftlab.errors import FtlabError
from ftlab.models.module import Classifier
from tests.helpers.cli import run_clis


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")  # TorchScript is deprecated upstream
def test_export_onnx_and_torchscript_match_the_checkpoint(smoke_run, tmp_path):
    ckpt = smoke_run / "checkpoints" / "best.ckpt"
    record = torch.load(ckpt, map_location="cpu", weights_only=False)["ftlab"]
    onnx_run, script_run = run_clis(
        [
            ("ftlab.export", [f"ckpt_path={ckpt}", "format=onnx", f"output={tmp_path / 'model.onnx'}"]),
            ("ftlab.export", [f"ckpt_path={ckpt}", "format=torchscript"]),  # default: next to the checkpoint
        ],
        cwd=tmp_path,
    )
    assert onnx_run.returncode == 0, onnx_run.stderr[-3000:]
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    assert "checked against the checkpoint" in onnx_run.stdout and "checked" in script_run.stdout
    with pytest.raises(FtlabError, match="format='tflite': use one of onnx, torchscript"):
        export(ExportOptions(ckpt_path=str(ckpt), format="tflite"))

    crop = record["preprocessing"]["crop_size"]
    model = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights=None).eval()
    images = torch.randn(5, 3, crop, crop, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(images)

    # ONNX: onnxruntime's output for any batch size; class names and preprocessing in metadata_props.
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (images, images[:1]):
        (logits,) = session.run(["logits"], {"images": batch.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), expected[: len(batch)], atol=1e-4, rtol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(meta["class_names"]) == record["class_names"]
    assert json.loads(meta["preprocessing"]) == record["preprocessing"]
    assert meta["backbone"] == record["backbone"] and "logits" in meta["output"]

    # TorchScript: the same logits; the record in _extra_files.
    extra = {"ftlab.json": ""}
    scripted = torch.jit.load(str(ckpt.with_name("best.torchscript.pt")), _extra_files=extra)
    with torch.no_grad():
        torch.testing.assert_close(scripted(images), expected, atol=1e-5, rtol=1e-5)
    saved = json.loads(extra["ftlab.json"])
    assert saved["class_names"] == record["class_names"] and saved["preprocessing"] == record["preprocessing"]
