"""`python -m ftlab.serve` refuses what it cannot serve in one ftlab paragraph (exit 2), before any worker
starts: a missing checkpoint, a port in use, a host LitServe cannot bind, a setting out of range."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers.cli import run_clis


def test_bad_options_stop_with_one_paragraph(ckpt: Path, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        results = run_clis(
            [
                ("ftlab.serve", [f"ckpt_path={tmp_path / 'missing.ckpt'}"]),
                ("ftlab.serve", [f"ckpt_path={ckpt}", f"port={port}"]),
                ("ftlab.serve", [f"ckpt_path={ckpt}", "host=example.org"]),
                ("ftlab.serve", [f"ckpt_path={ckpt}", "serve.max_batch_size=0"]),
            ],
            cwd=tmp_path,
        )
    expected = [
        "no such file",
        f"port={port} on 127.0.0.1 is in use",
        "host='example.org'",
        "serve.max_batch_size=0: give a positive number",
    ]
    for result, words in zip(results, expected, strict=True):
        assert result.returncode == 2, result.stderr[-2000:]
        text = " ".join(result.stderr.split())  # the paragraph is wrapped to the terminal
        assert words in text and "Traceback" not in text, result.stderr[-2000:]
