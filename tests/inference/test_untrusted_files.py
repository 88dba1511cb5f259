"""Files that are not ftlab's are refused by the one loader (io.checkpoints.load_checkpoint) before any
code in them runs: checkpoint records, resume (the checkpoint plugin) and the exported-model loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ftlab.errors import FtlabError
from ftlab.inference.checkpoint import read_record
from ftlab.inference.exported import load_model, read_any_record
from ftlab.io.checkpoints import AtomicCheckpointIO, load_checkpoint


class _RunsCodeWhenUnpickled:
    """Unpickling this calls open(marker, "w"): the file appearing proves the pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code_ran"


def test_a_zip_checkpoint_with_a_code_running_pickle_is_refused_by_every_reader(tmp_path, marker):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "ftlab": _RunsCodeWhenUnpickled(marker)}, evil)
    readers = [
        load_checkpoint,
        read_record,
        read_any_record,
        load_model,
        lambda path: AtomicCheckpointIO().load_checkpoint(path),  # resume from ckpt_path=
    ]
    for reader in readers:
        with pytest.raises(FtlabError) as caught:
            reader(evil)
        message = str(caught.value)
        assert message.startswith(f"ckpt_path={str(evil)!r} is not ftlab's: loading it would call `io.open`")
        assert "unpickling can run any code" in message and "weights_only" not in message
        assert caught.value.__cause__ is None  # torch's advice is not chained into a traceback either
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # control: the file does run code when fully unpickled
    assert marker.exists()


def test_a_plain_pickle_is_refused_without_being_opened_by_pickle(tmp_path, marker):
    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps({"ftlab": _RunsCodeWhenUnpickled(marker)}))
    for reader in (load_checkpoint, read_any_record, load_model):
        with pytest.raises(FtlabError, match="is not ftlab's: it is a plain Python pickle"):
            reader(plain)
    assert not marker.exists()
    pickle.loads(plain.read_bytes())  # control
    assert marker.exists()


def test_other_files_get_one_sentence(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(FtlabError, match=r"is not a PyTorch checkpoint \(not a zip archive\)"):
        load_checkpoint(text)
    with pytest.raises(FtlabError, match="no such file"):
        read_any_record(tmp_path / "missing.ckpt")
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, plain)  # a checkpoint, but not ftlab's
    assert torch.equal(load_checkpoint(plain)["state_dict"]["w"], torch.zeros(2))
    with pytest.raises(FtlabError, match="has no ftlab record"):
        load_model(plain)
