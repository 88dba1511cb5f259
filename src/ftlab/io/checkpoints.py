"""Atomic checkpoint files: a failed write (disk full, I/O error, a kill) never leaves a truncated file.

A checkpoint is written to a temporary file in the destination folder, flushed to disk (fsync), and renamed
over the destination in one step (`os.replace`). Until the rename, the previous file (the previous best or
last checkpoint) is untouched; after it, the new file is complete.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ftlab.errors import FtlabError


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _RecordingFile:
    """A binary file that remembers the first OSError of its writes.

    torch.save's zip writer reports a failed write (disk full, file too large) as a RuntimeError without the
    reason; the recorded OSError gives it back.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write `path` with `write(file)` through a temporary file in the same folder, fsync, then rename.

    A failed write raises OSError (with the operating system's reason) and leaves `path` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            recorder = _RecordingFile(f)
            try:
                write(recorder)  # type: ignore[arg-type]
            except Exception as err:
                if recorder.error is not None and not isinstance(err, OSError):
                    raise recorder.error from err
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save checkpoints, written atomically to local folders.

    A write error stops the run with one clear message; the file being replaced is left intact. Remote
    destinations (`s3://...`) are written by Lightning's own code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r}).")
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except OSError as err:
            name = Path(path).name
            raise FtlabError(
                f"Could not write the checkpoint {path}: {err}. Nothing was replaced: the previous {name} "
                "(if any) is intact and no partial file is left. Free disk space or fix the folder's "
                "permissions, then continue with resume=last."
            ) from err
