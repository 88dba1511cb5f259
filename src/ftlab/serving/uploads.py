"""An image in a request (raw body or multipart form) to the preprocessed tensor the model takes, or a 4xx
with a one-line reason. Runs in the HTTP server processes, so a bad upload never reaches a model worker."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Message

from ftlab.data.images import IMAGE_ERRORS, load_rgb
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.transforms import preprocess, resize_and_crop
from ftlab.errors import FtlabError

HOW = "POST the image file as the request body (or as a multipart/form-data file field)"


@dataclass(frozen=True)
class UploadRules:
    """What a request may send and how its image is preprocessed (the checkpoint's recorded recipe)."""

    preprocessing: Preprocessing
    max_bytes: int
    max_pixels: int
    explain_refusal: str | None  # why Grad-CAM does not apply to this backbone, or None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"the body has {declared} bytes, over serve.max_bytes={max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"the body exceeds serve.max_bytes={max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def file_bytes(request: Request, body: bytes) -> bytes:
    """The image bytes: the body itself, or the first file of a multipart/form-data body."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except Exception as err:  # the multipart parser raises its own types for malformed forms
        raise HTTPException(400, f"the multipart form could not be parsed: {_one_line(str(err))}") from err
    try:
        files = [value for value in form.values() if isinstance(value, UploadFile)]
        if not files:
            raise HTTPException(400, f"the multipart form has no file field: {HOW}")
        return await files[0].read()
    finally:
        await form.close()


def decode(data: bytes, rules: UploadRules, explain: bool) -> dict[str, Any]:
    """Decoded, checked and preprocessed image as the worker's input (numpy arrays pickle cheaply)."""
    if not data:
        raise HTTPException(400, f"the request has no body: {HOW}")
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            width, height = header.size
    except UnidentifiedImageError as err:
        raise HTTPException(
            400, f"the body is not an image: no image format recognises its {len(data)} bytes"
        ) from err
    except Image.DecompressionBombError as err:
        raise HTTPException(400, f"decompression bomb refused: {_one_line(str(err))}") from err
    except IMAGE_ERRORS as err:
        raise HTTPException(
            400, f"the body is not an image ({type(err).__name__}: {_one_line(str(err))})"
        ) from err
    if width * height > rules.max_pixels:
        raise HTTPException(
            400,
            f"decompression bomb refused: {width}x{height} = {width * height} pixels, over "
            f"serve.max_pixels={rules.max_pixels}",
        )
    try:
        raw = load_rgb(data)
    except FtlabError as err:
        cause = err.__cause__ or err
        raise HTTPException(
            400, f"the image does not decode ({type(cause).__name__}: {_one_line(str(cause))})"
        ) from err
    item: dict[str, Any] = {"image": preprocess(raw, rules.preprocessing).numpy(), "shown": None}
    if explain:
        item["shown"] = np.ascontiguousarray(resize_and_crop(raw, rules.preprocessing).numpy())
    return item


async def read_upload(request: Request, explain: bool = False) -> dict[str, Any]:
    """FastAPI dependency of `POST /predict`: the checked, preprocessed image (`explain=true`: also the
    uint8 crop the Grad-CAM overlay is drawn on). The rules are on `app.state.upload_rules`."""
    rules: UploadRules = request.app.state.upload_rules
    if explain and rules.explain_refusal:
        raise HTTPException(400, _one_line(rules.explain_refusal))
    body = await read_body(request, rules.max_bytes)
    data = await file_bytes(request, body)
    item = await run_in_threadpool(decode, data, rules, explain)
    item["explain"] = explain
    return item
