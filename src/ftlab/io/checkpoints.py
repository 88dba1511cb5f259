"""Checkpoint files: written atomically, read without running code.

Writing: a checkpoint is written to a temporary file in the destination folder, flushed to disk (fsync), and
renamed over the destination in one step (`os.replace`). Until the rename, the previous file (the previous
best or last checkpoint) is untouched; after it, the new file is complete, so a failed write (disk full, I/O
error, a kill) never leaves a truncated file.

Reading: `load_checkpoint` is the one way ftlab opens a checkpoint a user names (predict, eval, export,
resume, the server). It reads only PyTorch's zip format with `weights_only=True`: tensors and plain values.
A file that needs anything else (a pickle that would call a function or build an object while loading) is
refused in one sentence; ftlab never unpickles it, because unpickling can run whatever code the file's
author put in.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ftlab.errors import FtlabError

FROM_TRAIN = "a checkpoint written by `python -m ftlab.train` (a run's checkpoints/best.ckpt or last.ckpt)"
PICKLE_PROTOCOL = 0x80  # first byte of a pickle of protocol 2 or later


def _unpickling_refusal(key: str, path: Path, why: str, instead: str) -> FtlabError:
    return FtlabError(
        f"{key}={str(path)!r} is not ftlab's: {why}, and ftlab will not unpickle it because unpickling can "
        f"run any code its author put in the file; give {instead} instead."
    )


def is_torchscript(path: str | Path) -> bool:
    """Whether `path` is a TorchScript archive (`torch.jit.save`: a zip holding `<name>/constants.pkl`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_checkpoint(
    path: str | Path, key: str = "ckpt_path", instead: str = FROM_TRAIN, mmap: bool = True
) -> Any:
    """The contents of a PyTorch checkpoint, loaded with `weights_only=True` (tensors and plain values only).

    Every failure is one `FtlabError` naming `key` and the file: no such file, not a PyTorch zip archive (a
    plain pickle, say), or contents that only full unpickling could rebuild (a function call or an object of
    some class). torch's own advice to retry with `weights_only=False` is never passed on: for a file the
    user did not write, following it would run the file's code. `instead` says what to give.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FtlabError(f"{key}={str(path)!r}: no such file; give {instead}.")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(1)
        if head and head[0] == PICKLE_PROTOCOL:
            raise _unpickling_refusal(
                key, path, "it is a plain Python pickle, not a PyTorch zip checkpoint", instead
            )
        raise FtlabError(
            f"{key}={str(path)!r} is not a PyTorch checkpoint (not a zip archive); give {instead}."
        )
    if is_torchscript(path):
        raise FtlabError(f"{key}={str(path)!r} is a TorchScript file, not a checkpoint; give {instead}.")
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"`{found.group(1)}`" if found else "Python objects"
        raise _unpickling_refusal(
            key,
            path,
            f"loading it would call {what}, which a checkpoint of tensors and plain values never needs",
            instead,
        ) from None
    except Exception as err:  # torch raises many types for damaged archives
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FtlabError(
            f"{key}={str(path)!r} is not a readable PyTorch checkpoint ({reason}); give {instead}."
        ) from None


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

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Resume reads local checkpoints through `load_checkpoint`: tensors and plain values only."""
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        checkpoint: dict[str, Any] = load_checkpoint(path, key="ckpt_path", mmap=False)
        return checkpoint
