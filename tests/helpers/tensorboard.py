"""A real `tensorboard` server on loopback, queried through its HTTP API the way a browser would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.cli import free_port

TENSORBOARD = Path(sys.executable).with_name("tensorboard")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def serve(logdir: Path, paths: list[str], ready: Any, timeout: float = 90) -> dict[str, Any]:
    """Start `tensorboard` on loopback, GET `paths` (JSON) until `ready(answers)`, stop it; the answers."""
    port = free_port()
    server = subprocess.Popen(
        [str(TENSORBOARD), "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    answers: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.poll() is None:
            try:
                for path in paths:
                    with NO_PROXY.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                        answers[path] = json.loads(response.read())
            except OSError:
                answers = {}
            if answers and ready(answers):
                break
            time.sleep(1)
    finally:
        server.terminate()
        try:
            _, err = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    assert answers, err[-2000:]
    return answers
