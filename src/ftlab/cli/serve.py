"""`python -m ftlab.serve ckpt_path=<ckpt> [host=127.0.0.1 port=8000 serve.max_batch_size=16 ...]`: the model
behind HTTP, on LitServe.

`POST /predict` takes an image (the raw body, or a multipart form's file) and answers JSON: every class with
its probability, most probable first, and the top class (a multi-label checkpoint: also the label set);
`?explain=true` adds a Grad-CAM overlay as a base64 PNG. `GET /health`, `GET /info` (classes, backbone,
weights, preprocessing, temperature, the checkpoint's sha256), `GET /docs` (OpenAPI) and `GET /` (a page to
try it in a browser). The inference is ftlab.predict's: the checkpoint's preprocessing, its calibrated
temperature. Requests are batched dynamically (`serve.max_batch_size`, `serve.batch_timeout`); bad uploads
get a 400/413 with a one-line reason. SIGTERM lets in-flight requests finish, then exits 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hydra
from omegaconf import DictConfig

from ftlab.config.check import check_command_line, command_options
from ftlab.config.location import config_dir
from ftlab.config.registry import register
from ftlab.errors import FtlabError, report_errors
from ftlab.serving.settings import ServeSettings

__all__ = ["ServeOptions", "main"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@register("command", "serve")
@dataclass
class ServeOptions:
    """`python -m ftlab.serve ckpt_path=<ckpt> [host=127.0.0.1 port=8000]`: the model behind HTTP."""

    ckpt_path: str = "???"  # checkpoint written by ftlab.train (a run's checkpoints/best.ckpt or last.ckpt)
    host: str = "127.0.0.1"  # 127.0.0.1 / localhost: this machine only; 0.0.0.0 or :: every interface
    port: int = 8000  # TCP port (1024-65535)
    log_level: str = "warning"  # Uvicorn/LitServe log level: info also logs every request
    # serve.max_batch_size, serve.batch_timeout, workers, limits on uploads
    serve: ServeSettings = field(default_factory=ServeSettings)

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise FtlabError(f"log_level={self.log_level!r}: use one of {', '.join(LOG_LEVELS)}.")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="serve")
@report_errors
def _hydra_main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from ftlab.serving.server import serve  # FastAPI, LitServe: only when serving, not at Hydra start

    options: Any = command_options(cfg, ServeOptions, "serve")
    serve(options.ckpt_path, options.host, options.port, options.serve, options.log_level)


@report_errors
def main() -> None:
    """The command line is checked (unknown keys, wrong types) before Hydra runs the command."""
    check_command_line("serve")
    _hydra_main()


if __name__ == "__main__":
    main()
