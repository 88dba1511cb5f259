"""Running ftlab's commands the way users do: real subprocesses, with the network blocked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ftlab.config.location import config_dir

REPO = Path(__file__).resolve().parents[2]


CONF = config_dir()


# Overrides that shrink any run to seconds on a 2-core CPU.
TINY = [
    "trainer=cpu",
    "data.train_size=24",
    "data.val_size=12",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "callbacks.rich_progress_bar=null",
]


DEAD_PROXY = "http://127.0.0.1:9"  # discard port: connections are refused at once


def offline_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess whose HTTP(S) traffic cannot leave the machine."""
    env = dict(os.environ)
    env.update(
        {
            "HTTP_PROXY": DEAD_PROXY,
            "HTTPS_PROXY": DEAD_PROXY,
            "http_proxy": DEAD_PROXY,
            "https_proxy": DEAD_PROXY,
            "NO_PROXY": "",
            "no_proxy": "",
        }
    )
    env.update(extra)
    return env


def run_cli(
    module: str, args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `python -m <module> <args>` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env or offline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_clis(
    calls: list[tuple[str, list[str]]], cwd: Path, envs: list[dict[str, str] | None] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run several `python -m <module> <args>` subprocesses at once (`envs`: one environment per call)."""
    from concurrent.futures import ThreadPoolExecutor

    envs = envs or [None] * len(calls)
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [
            pool.submit(run_cli, m, args, cwd, env) for (m, args), env in zip(calls, envs, strict=True)
        ]
        return [f.result() for f in futures]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
