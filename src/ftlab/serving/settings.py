"""The `serve.*` keys of `python -m ftlab.serve`: batching, workers, limits on what a request may send."""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.config.registry import register
from ftlab.errors import FtlabError

ACCELERATORS = ("auto", "cpu", "cuda", "mps")


@register("serve", "settings")
@dataclass
class ServeSettings:
    """How `ftlab.serve` batches requests, how many workers run the model, and what a request may send."""

    max_batch_size: int = 16  # requests one forward pass may take (dynamic batching); 1 = no batching
    batch_timeout: float = 0.01  # seconds a worker waits for more requests to fill a batch
    accelerator: str = "auto"  # auto (CUDA when available) | cpu | cuda | mps
    workers_per_device: int = 1  # inference processes per device, each with its own copy of the model
    api_servers: int | None = None  # HTTP server processes; null = one per inference worker
    timeout: float = 30.0  # seconds a request may wait for a worker before it is answered 504
    max_bytes: int = 20_971_520  # largest request body in bytes (20 MiB); larger is refused with 413
    max_pixels: int = 40_000_000  # largest image (width x height); larger is refused as a decompression bomb
    top_k: int | None = None  # classes listed per image, most probable first; null = all

    def __post_init__(self) -> None:
        positive = {
            "max_batch_size": self.max_batch_size,
            "workers_per_device": self.workers_per_device,
            "max_bytes": self.max_bytes,
            "max_pixels": self.max_pixels,
            "timeout": self.timeout,
        }
        for key, value in positive.items():
            if value <= 0:
                raise FtlabError(f"serve.{key}={value}: give a positive number.")
        if self.api_servers is not None and self.api_servers < 1:
            raise FtlabError(
                f"serve.api_servers={self.api_servers}: give a positive number of HTTP server processes, or "
                "null for one per inference worker."
            )
        if not 0 <= self.batch_timeout < self.timeout:
            raise FtlabError(
                f"serve.batch_timeout={self.batch_timeout}: give seconds from 0 up to serve.timeout "
                f"({self.timeout}); a worker waits that long for a batch to fill."
            )
        if self.accelerator not in ACCELERATORS:
            raise FtlabError(f"serve.accelerator={self.accelerator!r}: use one of {', '.join(ACCELERATORS)}.")
        if self.top_k is not None and self.top_k < 1:
            raise FtlabError(f"serve.top_k={self.top_k}: give a positive number of classes, or null for all.")
