"""`python -m ftlab.bench --serve`: `python -m ftlab.serve` in a subprocess on a free loopback port under a
bounded load (N concurrent keep-alive clients for S seconds), beside `ftlab.predict`'s batched throughput on
the same image files, measured in the same run (predict before and after the load; their mean)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.table import Table

from ftlab.benchmark.settings import device_name
from ftlab.errors import FtlabError
from ftlab.inference.checkpoint import TrainedModel, resolve_device
from ftlab.inference.prediction import predict

TINY_RUN = [  # a 1-epoch resnet18 (random init) on the synthetic source at 64 px: seconds to train
    "+experiment=smoke",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "data.image_size=64",
    "data.train_size=64",
    "data.val_size=32",
    "data.batch_size=16",
    "callbacks.rich_progress_bar=null",
]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class ServeBenchOptions:
    """What `ftlab.bench --serve` measures."""

    ckpt_path: str | None = None  # None: train the tiny run above first
    clients: int = 32  # concurrent clients, each with one keep-alive connection
    seconds: float = 20.0  # length of the load
    images: int = 64  # distinct JPEG files the clients (and ftlab.predict) cycle through
    image_size: int = 96  # side of those files (the checkpoint's preprocessing resizes them)
    predict_batch_size: int = 32  # ftlab.predict's default batch_size
    predict_workers: int = 2  # ftlab.predict's default num_workers
    serve_overrides: list[str] = field(default_factory=list)  # e.g. serve.max_batch_size=32


def tiny_checkpoint(folder: Path) -> Path:
    """Train the tiny run in a subprocess; its best checkpoint."""
    result = subprocess.run(
        [sys.executable, "-m", "ftlab.train", *TINY_RUN, f"paths.log_dir={folder / 'logs'}"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise FtlabError(f"ftlab.bench --serve: the tiny training run failed:\n{result.stderr[-2000:]}")
    (ckpt,) = (folder / "logs").rglob("best.ckpt")
    return ckpt


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    """`count` JPEG files of random colour blocks (quality 90), `size` pixels square."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(blocks).resize((size, size), Image.Resampling.BILINEAR)
        paths.append(folder / f"image_{i:03d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def predict_throughput(
    model: TrainedModel, paths: list[str], opts: ServeBenchOptions, seconds: float
) -> float:
    """Images per second of ftlab.predict's loop (decode, preprocess, batched forward, its DataLoader workers)
    in one call over `paths` repeated to last about `seconds`, sized by an untimed warm-up pass."""
    started = time.perf_counter()
    for _ in predict(model, paths, None, opts.predict_batch_size, opts.predict_workers):
        pass
    rate = len(paths) / (time.perf_counter() - started)
    repeats = max(2, math.ceil(seconds * rate / len(paths)))
    start = time.perf_counter()
    batches = predict(model, paths * repeats, None, opts.predict_batch_size, opts.predict_workers)
    count = sum(1 for _ in batches)
    return count / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(ckpt: Path, port: int, overrides: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m ftlab.serve` on 127.0.0.1:`port`, returned once /health answers ok."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ftlab.serve", f"ckpt_path={ckpt}", f"port={port}", *overrides],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with NO_PROXY.open(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise FtlabError(f"ftlab.bench --serve: the server did not start:\n{log.read_text()[-2000:]}")


async def _client(
    port: int, bodies: list[bytes], first: int, step: int, deadline: float, out: dict[str, list[Any]]
) -> None:
    """One client: POST /predict over one keep-alive connection until `deadline` (reconnects on error)."""
    k = first
    reader = writer = None
    while time.perf_counter() < deadline:
        body = bodies[k % len(bodies)]
        k += step
        head = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(head + body)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as err:
            out["errors"].append(f"{type(err).__name__}: {err}")
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        out["finished"].append(time.perf_counter())
        if status == 200 and b'"top1"' in payload:
            out["latency"].append(time.perf_counter() - started)
        else:
            out["errors"].append(f"HTTP {status}: {payload[:200]!r}")
    if writer is not None:
        writer.close()


async def _load(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    out: dict[str, list[Any]] = {"latency": [], "errors": [], "finished": []}
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(_client(port, bodies, i, clients, deadline, out) for i in range(clients)))
    elapsed = max(out["finished"], default=deadline) - start
    latency = np.array(out["latency"]) * 1000
    pct = np.percentile(latency, [50, 95, 99]) if len(latency) else [float("nan")] * 3
    return {
        "requests": len(out["latency"]),
        "errors": len(out["errors"]),
        "error_examples": sorted(set(out["errors"]))[:5],
        "seconds": elapsed,
        "req_s": len(out["latency"]) / elapsed,
        "p50_ms": float(pct[0]),
        "p95_ms": float(pct[1]),
        "p99_ms": float(pct[2]),
    }


def serve_benchmark(opts: ServeBenchOptions) -> dict[str, Any]:
    """The server under load beside ftlab.predict's batched throughput (ratio: req/s over img/s)."""
    with tempfile.TemporaryDirectory(prefix="ftlab_bench_serve_") as tmp:
        folder = Path(tmp)
        ckpt = Path(opts.ckpt_path).expanduser() if opts.ckpt_path else tiny_checkpoint(folder)
        paths = [str(p) for p in write_images(folder / "images", opts.images, opts.image_size)]
        bodies = [Path(p).read_bytes() for p in paths]
        device = resolve_device("auto")
        model = TrainedModel.load(ckpt, device)
        window = min(opts.seconds, 10.0)
        before = predict_throughput(model, paths, opts, window)
        port = free_port()
        log = folder / "serve.log"
        server = start_server(ckpt, port, opts.serve_overrides, log)
        try:
            asyncio.run(_load(port, bodies[:4], min(opts.clients, 4), 2.0))  # warm-up
            load = asyncio.run(_load(port, bodies, opts.clients, opts.seconds))
        finally:
            server.send_signal(signal.SIGTERM)
            exit_status = server.wait(120)
        after = predict_throughput(model, paths, opts, window)
        served_log = log.read_text()[-2000:]
    batched = (before + after) / 2
    return {
        "device": device_name(device),
        "cpu_count": os.cpu_count(),
        "serve_options": asdict(opts),
        "checkpoint": str(ckpt) if opts.ckpt_path else "tiny run: " + " ".join(TINY_RUN),
        "predict_img_s": batched,
        "predict_img_s_before_after": [before, after],
        "serve": load,
        "serve_vs_predict": load["req_s"] / batched,
        "server_exit_status": exit_status,
        "server_log_tail": served_log if exit_status != 0 or load["errors"] else "",
    }


def render_serve(result: dict[str, Any]) -> Table:
    """The serving table: predict's batched img/s, the server's req/s and latencies, their ratio."""
    opts, load = result["serve_options"], result["serve"]
    table = Table(title=f"ftlab bench --serve on {result['device']}")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    before, after = result["predict_img_s_before_after"]
    table.add_row(
        f"ftlab.predict img/s (batch {opts['predict_batch_size']}, {opts['predict_workers']} loader workers; "
        "before / after the load)",
        f"{result['predict_img_s']:.1f} ({before:.1f} / {after:.1f})",
    )
    table.add_row(
        f"ftlab.serve req/s ({opts['clients']} clients, {load['seconds']:.1f} s)", f"{load['req_s']:.1f}"
    )
    table.add_row(
        "latency p50 / p95 / p99 ms", f"{load['p50_ms']:.0f} / {load['p95_ms']:.0f} / {load['p99_ms']:.0f}"
    )
    table.add_row("requests / errors", f"{load['requests']} / {load['errors']}")
    table.add_row("serve / predict (goal >= 0.7)", f"{result['serve_vs_predict']:.2f}")
    table.add_row("server exit status after SIGTERM", str(result["server_exit_status"]))
    return table
