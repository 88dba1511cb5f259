"""`python -m ftlab.serve` as users start it: a subprocess on a free loopback port, spoken to over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers.cli import free_port, offline_env

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
START_SECONDS = 240  # a loaded 2-core CI machine needs this long for the worker to load the model


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    log: Path

    def request(
        self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, bytes]:
        """(status, body) of one request; 4xx/5xx answers are returned, not raised."""
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with NO_PROXY.open(req, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def predict(self, image: bytes, explain: bool = False, **headers: str) -> tuple[int, Any]:
        path = "/predict?explain=true" if explain else "/predict"
        status, body = self.request(path, image, {"Content-Type": "image/jpeg", **headers}, "POST")
        return status, json.loads(body)

    def healthy(self) -> bool:
        try:
            return self.request("/health") == (200, b"ok")
        except OSError:
            return False


def start(ckpt: Path, overrides: list[str], workdir: Path) -> Server:
    """Start the server and wait until /health answers ok."""
    port = free_port()
    log = workdir / f"serve_{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "ftlab.serve", f"ckpt_path={ckpt}", f"port={port}", *overrides],
        cwd=workdir,
        env=offline_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + START_SECONDS
    while not server.healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"ftlab.serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    return server


def stop(server: Server) -> int:
    """SIGTERM, and the exit status (killed after 60 s)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()


@contextmanager
def running(ckpt: Path, overrides: list[str], workdir: Path) -> Iterator[Server]:
    server = start(ckpt, overrides, workdir)
    try:
        yield server
    finally:
        stop(server)


MAX_BYTES = 300_000  # serve.max_bytes of the shared server: the 413 test sends more


@pytest.fixture(scope="session")
def ckpt(smoke_run: Path) -> Path:
    """The tiny smoke run's checkpoint (tests/conftest.py, shared with the predict/eval/export tests)."""
    return smoke_run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="session")
def server(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the API, error and page tests (batches of up to 8, 20 ms to fill them); stopped with
    SIGTERM at the end of the session, which must exit 0."""
    workdir = tmp_path_factory.mktemp("serve")
    overrides = ["serve.max_batch_size=8", "serve.batch_timeout=0.02", f"serve.max_bytes={MAX_BYTES}"]
    running_server = start(ckpt, overrides, workdir)
    yield running_server
    assert stop(running_server) == 0, running_server.log.read_text()[-3000:]  # SIGTERM: a clean exit


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Images of several sizes, formats and modes."""
    root = tmp_path_factory.mktemp("serve_images")
    rng = np.random.default_rng(7)
    files = {}
    for name, (w, h) in {"big.jpg": (96, 64), "small.png": (20, 24), "wide.png": (90, 40)}.items():
        files[name] = root / name
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[name], quality=95)
    files["gray.png"] = root / "gray.png"
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), "L").save(files["gray.png"])
    return files
