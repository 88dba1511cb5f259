"""`python -m ftlab.export`: ONNX (run by onnxruntime) and TorchScript files equal the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

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
    with pytest.raises(FtlabError, match="format='tflite': use one of onnx, onnx_int8, torchscript"):
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


class _RunsCodeWhenUnpickled:
    """Unpickling this calls open(marker, "w"): the file appearing proves the pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_would_run_code_is_refused_by_predict_eval_and_export(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "ftlab": _RunsCodeWhenUnpickled(marker)}, evil)
    # Control: the file does run code when unpickled the way torch's message suggests.
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()
    image = tmp_path / "image.png"
    Image.new("RGB", (8, 8), "red").save(image)
    runs = run_clis(
        [
            ("ftlab.predict", [f"ckpt_path={evil}", f"inputs={image}"]),
            ("ftlab.eval", [f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / 'eval'}"]),
            ("ftlab.export", [f"ckpt_path={evil}", "format=onnx"]),
        ],
        cwd=tmp_path,
    )
    for run in runs:
        assert run.returncode == 2, run.stderr[-2000:]
        message = " ".join(run.stderr.split())
        assert f"ckpt_path='{evil}' is not ftlab's: loading it would call `io.open`" in message, message
        assert "will not unpickle it because unpickling can run any code its author put in" in message
        assert "weights_only" not in message and "Traceback" not in message
    assert not marker.exists()
    assert not (tmp_path / "evil.onnx").exists()
