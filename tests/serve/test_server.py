"""`python -m ftlab.serve` over loopback HTTP: the probabilities are ftlab.predict's (and a hand reference's),
/info describes the checkpoint, every bad upload is a 4xx with a one-line reason that leaves the server
healthy, and SIGTERM lets a request in flight finish before the process exits 0."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import signal
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ftlab.inference.checkpoint import TrainedModel, read_record
from ftlab.inference.prediction import Prediction, explain, predict
from tests.cli.test_predict import _reference
from tests.serve.conftest import MAX_BYTES, Server, running, stop


def _png_bomb(width: int, height: int) -> bytes:
    """A complete 1-bit grayscale PNG of zeros: a few kB on disk, width x height pixels once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    squeeze = zlib.compressobj(9)
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_probabilities_equal_ftlab_predict_and_a_hand_reference(server: Server, ckpt: Path, images):
    paths = list(images.values())
    with ThreadPoolExecutor(len(paths)) as pool:  # at once: the worker batches them
        answers = list(pool.map(lambda p: server.predict(p.read_bytes()), paths))
    model = TrainedModel.load(ckpt, "cpu")
    local = {p.path: p for p in predict(model, [str(p) for p in paths], None, batch_size=2)}
    reference = _reference(ckpt, paths)
    for path, (status, answer) in zip(paths, answers, strict=True):
        assert status == 200, answer
        expected = local[str(path)]
        assert isinstance(expected, Prediction)
        assert list(answer["probs"]) == list(expected.probs)  # same classes, same order
        assert answer["top1"] == expected.top1
        np.testing.assert_allclose(list(answer["probs"].values()), list(expected.probs.values()), atol=1e-5)
        hand = [reference[str(path)][name] for name in answer["probs"]]
        np.testing.assert_allclose(list(answer["probs"].values()), hand, atol=1e-5)
        assert answer["labels"] is None


def test_multipart_upload_and_grad_cam_overlay(server: Server, ckpt: Path, images, tmp_path):
    path = images["big.jpg"]
    boundary = "ftlab-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, raw = server.request("/predict?explain=true", body, headers, "POST")
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer == {**server.predict(path.read_bytes())[1], "gradcam_png": answer["gradcam_png"]}
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["gradcam_png"]))))
    (written,) = explain(TrainedModel.load(ckpt, "cpu"), [str(path)], tmp_path)  # ftlab.predict explain=true
    expected = np.asarray(Image.open(written))
    assert drawn.shape == expected.shape == (32, 32, 3)  # the checkpoint's crop
    assert np.abs(drawn.astype(int) - expected.astype(int)).max() <= 1


def test_info_describes_the_checkpoint(server: Server, ckpt: Path):
    status, raw = server.request("/info")
    assert status == 200
    info = json.loads(raw)["model"]
    record = read_record(ckpt)
    assert info["classes"] == record["class_names"]
    assert info["backbone"] == record["backbone"] == "resnet18"
    assert info["weights_id"] == record["weights_id"]
    assert info["preprocessing"] == record["preprocessing"]
    assert info["temperature"] == record.get("temperature")
    assert info["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert info["serve"]["max_batch_size"] == 8 and info["serve"]["max_bytes"] == MAX_BYTES
    assert info["multi_label"] is False and info["explainable"] is True
    spec = json.loads(server.request("/openapi.json")[1])
    assert {"/predict", "/health", "/info", "/"} <= set(spec["paths"])
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"image/*", "multipart/form-data"} <= set(body)
    page_status, page = server.request("/")
    assert page_status == 200 and b'id="file"' in page


def _chunked_post(server: Server, chunks: list[bytes]) -> tuple[int, bytes]:
    """POST without Content-Length (chunked transfer encoding), as a streaming client sends."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/predict", body=iter(chunks), encode_chunked=True)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_bad_uploads_are_4xx_with_one_line_reasons_and_the_server_stays_up(server: Server, images):
    good = images["big.jpg"].read_bytes()
    truncated = good[: len(good) // 2]
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    big = io.BytesIO()
    Image.fromarray(noise).save(big, "PNG")  # about 480 kB of real image, over serve.max_bytes
    assert len(big.getvalue()) > MAX_BYTES
    cases = {
        "not an image": (b"just some text, not an image", 400, "not an image"),
        "no body": (b"", 400, "no body"),
        "truncated JPEG": (truncated, 400, "truncated"),
        "bomb over PIL's own limit": (_png_bomb(20_000, 20_000), 400, "decompression bomb"),
        "bomb over serve.max_pixels": (_png_bomb(7_000, 7_000), 400, "decompression bomb"),
        "too large": (big.getvalue(), 413, "serve.max_bytes"),
    }
    for name, (body, code, words) in cases.items():
        status, answer = server.predict(body)
        assert status == code, (name, answer)
        assert words in answer["detail"] and "\n" not in answer["detail"], (name, answer)
        assert server.healthy(), name
    status, raw = _chunked_post(server, [big.getvalue()[:200_000], big.getvalue()[200_000:]])
    assert status == 413 and b"serve.max_bytes" in raw
    boundary = "b"
    form = f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--{boundary}--\r\n'
    status, raw = server.request(
        "/predict", form.encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}, "POST"
    )
    assert status == 400 and b"no file field" in raw
    assert server.healthy()
    assert server.predict(good)[0] == 200  # the workers still answer


@pytest.mark.slow  # a second server start
def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(ckpt: Path, images, tmp_path):
    """A worker waits up to 3 s for a batch of 4 to fill, so a lone request is in flight at SIGTERM."""
    body = images["small.png"].read_bytes()
    with running(ckpt, ["serve.max_batch_size=4", "serve.batch_timeout=3"], tmp_path) as server:
        answers: list[tuple[int, object]] = []
        client = threading.Thread(target=lambda: answers.append(server.predict(body)))
        started = time.monotonic()
        client.start()
        time.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        client.join(60)
        assert stop(server) == 0, server.log.read_text()[-3000:]
        assert time.monotonic() - started >= 3.0  # it was answered after its batch window, not cut off
        ((status, answer),) = answers
        assert status == 200 and set(answer["probs"]) == set(read_record(ckpt)["class_names"])  # type: ignore[index]
        assert "SIGTERM" in server.log.read_text()
        with pytest.raises(OSError):
            server.request("/health")


def test_scores_are_the_calibrated_softmax(ckpt: Path, tmp_path):
    """The shared function applies a stored temperature: softmax(logits / T)."""
    from ftlab.inference.prediction import scores

    model = TrainedModel.load(ckpt, "cpu")
    images = torch.randn(3, 3, 32, 32)
    model.record["temperature"] = 2.5
    logits = model.module(images).detach()
    torch.testing.assert_close(scores(model, images), torch.softmax(logits / 2.5, dim=1))


@pytest.mark.slow  # an ONNX export and a second server start
def test_an_exported_onnx_model_is_served_like_its_checkpoint(ckpt: Path, images, tmp_path):
    from ftlab.cli.export import ExportOptions
    from ftlab.inference.export import export

    options = ExportOptions(ckpt_path=str(ckpt), format="onnx", output=str(tmp_path / "m.onnx"))
    onnx_file = export(options).path
    paths = list(images.values())
    model = TrainedModel.load(ckpt, "cpu")
    local = {p.path: p for p in predict(model, [str(p) for p in paths], None, batch_size=2)}
    with running(onnx_file, ["serve.max_batch_size=4"], tmp_path) as onnx_server:
        status, info = onnx_server.request("/info")
        assert status == 200
        described = json.loads(info)
        assert described["format"] == "onnx" and described["explainable"] is False
        assert described["classes"] == read_record(ckpt)["class_names"]
        for path in paths:
            status, answer = onnx_server.predict(path.read_bytes())
            assert status == 200, answer
            expected = local[str(path)]
            assert isinstance(expected, Prediction)
            assert answer["top1"] == expected.top1
            got = [answer["probs"][name] for name in expected.probs]
            np.testing.assert_allclose(got, list(expected.probs.values()), atol=1e-4)
        status, refused = onnx_server.predict(paths[0].read_bytes(), explain=True)
        assert status == 400 and "needs the checkpoint" in refused["detail"]
        assert onnx_server.healthy()
