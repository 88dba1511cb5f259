"""`ftlab.serve`'s server: the LitServe app (`POST /predict`, `GET /health`, `GET /info`, OpenAPI at `/docs`)
plus the page `GET /`, and a SIGTERM that lets in-flight requests finish before the process exits 0."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import socket
import sys
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute

from ftlab.data.preprocessing import Preprocessing
from ftlab.errors import FtlabError
from ftlab.inference.exported import file_kind, read_any_record
from ftlab.inference.gradcam import unsupported_reason
from ftlab.serving.settings import ServeSettings
from ftlab.serving.uploads import UploadRules

PAGE = Path(__file__).with_name("page.html")
HOSTS = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "0.0.0.0": "0.0.0.0", "::": "::"}
DRAIN_SECONDS = 30.0  # longest a SIGTERM waits for in-flight requests
HTTP_PROCESS_PREFIX = "LitServer-"  # LitServe's name for its Uvicorn server processes

IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "description": "the image file (JPEG, PNG, WebP, BMP, TIFF, GIF, ...) as the raw body, or as the "
        "first file field of a multipart form",
        "content": {
            "image/*": IMAGE_BODY,
            "application/octet-stream": IMAGE_BODY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    },
    "responses": {
        "400": {"description": "no body, not an image, a truncated image or a decompression bomb"},
        "413": {"description": "the body is larger than serve.max_bytes"},
    },
}


EXPORTED_NO_EXPLAIN = (
    "explain=true needs the checkpoint: Grad-CAM reads the network's layers, which an exported file does not "
    "expose; serve the checkpoint (ckpt_path=<run>/checkpoints/best.ckpt) to get overlays."
)


def explain_refusal(info: dict[str, Any]) -> str | None:
    """Why `explain=true` cannot be answered for this model file, or None."""
    if info["format"] != "checkpoint":
        return EXPORTED_NO_EXPLAIN
    return unsupported_reason(str(info["backbone"]))


def checkpoint_info(ckpt_path: str | Path) -> dict[str, Any]:
    """What `GET /info` reports about the model: the record of the checkpoint (or the metadata of a file
    written by ftlab.export), the file's format and its sha256."""
    record = read_any_record(ckpt_path)
    kind = file_kind(Path(ckpt_path).expanduser())
    fmt = "checkpoint" if kind == "checkpoint" else str(record.get("format", kind))
    digest = hashlib.sha256()
    with Path(ckpt_path).expanduser().open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return {
        "ckpt_path": str(Path(ckpt_path).expanduser().resolve()),
        "format": fmt,  # checkpoint | onnx | onnx_int8 | torchscript
        "sha256": digest.hexdigest(),
        "classes": list(record["class_names"]),
        "backbone": record.get("backbone"),
        "weights_id": record.get("weights_id"),
        "preprocessing": record["preprocessing"],
        "temperature": record.get("temperature"),
        "multi_label": bool(record.get("multi_label", False)),
        "thresholds": record.get("thresholds"),
        "explainable": fmt == "checkpoint" and unsupported_reason(str(record.get("backbone"))) is None,
    }


def check_address(host: str, port: int) -> str:
    """The host LitServe binds for `host` (it accepts only wildcard or loopback addresses), checked free."""
    if host not in HOSTS:
        raise FtlabError(
            f"host={host!r}: ftlab.serve listens on 127.0.0.1 (or localhost: this machine only), 0.0.0.0 "
            "(every IPv4 interface) or :: (every IPv6 interface)."
        )
    if not 1024 <= port <= 65535:
        raise FtlabError(f"port={port}: give a port from 1024 to 65535 (e.g. port=8000).")
    bound = HOSTS[host]
    family = socket.AF_INET6 if ":" in bound else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bound, port))
        except OSError as err:
            raise FtlabError(
                f"port={port} on {host} is in use ({err.strerror}): stop what listens there or pick another "
                "port, e.g. port=8001."
            ) from err
    return bound


def _add_page(app: FastAPI) -> None:
    """`GET /` is the page (LitServe's own `/` only says it runs); `/predict` gets its OpenAPI body."""

    def litserve_index(route: Any) -> bool:
        return isinstance(route, APIRoute) and route.path == "/" and "GET" in (route.methods or ())

    app.router.routes[:] = [route for route in app.router.routes if not litserve_index(route)]

    @app.get("/", response_class=HTMLResponse, summary="The page: try the model on an image")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == "/predict":
            route.summary = "Classify one image"
            route.description = (
                "Send the image as the raw body (or a multipart form file). The answer lists every class "
                "with its probability, most probable first, and the top class; `explain=true` adds a "
                "Grad-CAM overlay as a base64 PNG. Multi-label checkpoints also list the labels at or "
                "above their thresholds."
            )
            route.openapi_extra = PREDICT_DOC
    app.title = "ftlab.serve"
    app.description = "A checkpoint trained with ftlab, served by LitServe."


def build(ckpt_path: str, settings: ServeSettings) -> Any:
    """The LitServer for `ckpt_path` (not started)."""
    import litserve as ls

    from ftlab.serving.api import ClassifierAPI

    info = checkpoint_info(ckpt_path)
    api = ClassifierAPI(
        str(Path(ckpt_path).expanduser()), settings.top_k, settings.max_batch_size, settings.batch_timeout
    )
    server = ls.LitServer(
        api,
        accelerator=settings.accelerator,
        workers_per_device=settings.workers_per_device,
        timeout=settings.timeout,
        model_metadata=info | {"serve": asdict(settings)},
    )
    server.app.state.upload_rules = UploadRules(
        Preprocessing.from_dict(info["preprocessing"]),
        settings.max_bytes,
        settings.max_pixels,
        explain_refusal(info),
    )
    _add_page(server.app)
    return server


def _drain_on_sigterm() -> None:
    """SIGTERM: the HTTP processes stop accepting, answer what they hold (LitServe's workers still run) and
    exit; then LitServe's own Ctrl-C shutdown stops the workers and the process exits 0."""
    owner = os.getpid()

    def handle(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked helper process inherited this handler: the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM does not interrupt the drain
        children = multiprocessing.active_children()
        http = [p for p in children if p.name.startswith(HTTP_PROCESS_PREFIX)]
        if not http:  # still starting: nothing is in flight; stop the workers LitServe started so far
            for child in children:
                child.terminate()
                child.join(5)
            os._exit(0)
        print(
            f"ftlab.serve: SIGTERM, finishing in-flight requests ({len(http)} HTTP processes)",
            file=sys.stderr,
        )
        for process in http:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # Uvicorn's graceful shutdown
        for process in http:
            process.join(DRAIN_SECONDS)
        raise KeyboardInterrupt  # LitServe.run's graceful shutdown of the workers

    signal.signal(signal.SIGTERM, handle)


def serve(ckpt_path: str, host: str, port: int, settings: ServeSettings, log_level: str = "warning") -> None:
    """Run the server until SIGTERM or Ctrl-C (blocks)."""
    bound = check_address(host, port)
    server = build(ckpt_path, settings)
    shown = "127.0.0.1" if bound in ("0.0.0.0", "::") else bound
    print(
        f"ftlab.serve: {ckpt_path} on http://{shown}:{port}/ (page), /predict, /health, /info, /docs "
        "(OpenAPI); ready once /health answers ok",
        file=sys.stderr,
        flush=True,
    )
    _drain_on_sigterm()
    server.run(
        host=bound,
        port=port,
        num_api_servers=settings.api_servers,
        log_level=log_level,
        generate_client_file=False,
    )
