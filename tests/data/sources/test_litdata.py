"""data=litdata: chunks written from another source read back as the same images, labels and samples;
the feature-cache fingerprint follows the chunks' content; two gloo ranks read disjoint shares."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

from ftlab.data.datamodule import build_datamodule
from ftlab.data.images import load_rgb
from ftlab.data.preprocessing import Preprocessing
from ftlab.data.sources.imagefolder import ImageFolderSource
from ftlab.data.sources.litdata import LitdataSource, write_chunks
from ftlab.data.sources.registry import SETTINGS
from ftlab.data.sources.synthetic import SyntheticSource
from ftlab.errors import FtlabError
from tests.helpers.cli import run_cli
from tests.helpers.images import write_images

COUNTS = {"ant": 12, "bee": 9, "cat": 6}


@pytest.fixture(scope="module")
def folder_chunks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ImageFolderSource]:
    """An ImageFolder of 27 PNGs (3 classes, uneven) and its train/val split written as litdata chunks."""
    root = tmp_path_factory.mktemp("litdata")
    write_images(root / "imgs", COUNTS, size=12)
    source = ImageFolderSource(root=str(root / "imgs"), val_fraction=1 / 3)
    train, val = source.load()
    write_chunks(train, val, source.classes, str(root / "chunks"), chunk_bytes="2KB")  # several chunks
    return root / "chunks", source


def test_chunks_read_back_as_the_folder_images_and_labels(folder_chunks) -> None:
    chunks, folder = folder_chunks
    assert len(list((chunks / "train").glob("*.bin"))) > 1
    source = LitdataSource(root=str(chunks))
    train, val = source.load()
    ref_train, ref_val = ImageFolderSource(root=folder.root, val_fraction=1 / 3).load()
    assert source.classes == ["ant", "bee", "cat"] and not source.fixed_size
    for got, ref in ((train, ref_train), (val, ref_val)):
        assert len(got) == len(ref)
        for i in range(len(ref)):
            image, label = got[i]
            assert torch.equal(image, load_rgb(ref.paths[i])) and label == ref.labels[i]


def test_class_subset_and_stratified_sizes(folder_chunks) -> None:
    chunks, _ = folder_chunks
    source = LitdataSource(root=str(chunks), classes=["cat", "ant"], train_size=6, val_size=4, seed=1)
    train, val = source.load()
    assert source.classes == ["cat", "ant"]
    full, full_val = LitdataSource(root=str(chunks)).load()
    for got, whole, size in ((train, full, 6), (val, full_val, 4)):  # class shares kept within one image
        stored = np.bincount(whole.labels, minlength=3)[[2, 0]]  # cat, ant
        assert len(got) == size
        assert np.all(np.abs(np.bincount(got.labels, minlength=2) - stored * size / stored.sum()) < 1)
    for i in range(len(train)):  # relabelled: cat -> 0, ant -> 1, same pixels as the stored item
        stored = int(train.indices[i])
        assert ["cat", "ant"][int(train.labels[i])] == ["ant", "bee", "cat"][int(full.labels[stored])]
        assert torch.equal(train[i][0], full[stored][0])
    with pytest.raises(FtlabError, match=r"'dog' is not a class of the chunks.*ant, bee, cat"):
        LitdataSource(root=str(chunks), classes=["ant", "dog"])
    with pytest.raises(FtlabError, match=r"holds no ftlab.json.*\+to_litdata"):
        LitdataSource(root=str(chunks / "train"))


def test_tensor_source_round_trips_exactly_and_fingerprint_follows_chunk_content(tmp_path) -> None:
    synthetic = SyntheticSource(num_classes=3, train_size=12, val_size=6, size=16)
    train, val = synthetic.load()
    write_chunks(train, val, synthetic.classes, str(tmp_path / "chunks"))
    source = LitdataSource(root=str(tmp_path / "chunks"))
    got_train, _ = source.load()
    assert source.fixed_size and source.classes == synthetic.classes
    assert torch.equal(torch.stack([got_train[i][0] for i in range(12)]), train.images)

    prep = Preprocessing(crop_size=16, resize_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    module = build_datamodule(SETTINGS["litdata"](root=source.root, batch_size=4), source, prep)
    module.setup()
    before = module.fingerprint("train")
    assert module.raw_images("train")[0:12].shape == (12, 3, 16, 16)
    chunk = next((tmp_path / "chunks" / "train").glob("*.bin"))
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last image's PNG changes
    chunk.write_bytes(bytes(data))
    module = build_datamodule(
        SETTINGS["litdata"](root=source.root, batch_size=4),
        LitdataSource(root=str(tmp_path / "chunks")),
        prep,
    )
    module.setup()
    assert module.fingerprint("train") != before


def _rank_reads(rank: int, port: int, root: str, out: str) -> None:
    """One gloo rank: the train split through the sampler Lightning puts under DDP; saves what it read."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        train, _ = LitdataSource(root=root).load()
        loader = DataLoader(train, batch_size=4, sampler=DistributedSampler(train, shuffle=True, seed=0))
        images = torch.cat([batch for batch, _ in loader])
        torch.save(images, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_read_disjoint_shares_covering_the_split(tmp_path) -> None:
    synthetic = SyntheticSource(num_classes=2, train_size=16, val_size=4, size=8, noise=0.5)
    train, val = synthetic.load()
    write_chunks(train, val, synthetic.classes, str(tmp_path / "chunks"), chunk_bytes="1KB")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = (port, str(tmp_path / "chunks"), str(tmp_path))
    mp.start_processes(_rank_reads, args=args, nprocs=2, join=True, start_method="fork")  # no re-imports
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [len(r) for r in ranks] == [8, 8]
    seen = [bytes(image.numpy()) for r in ranks for image in r]
    assert sorted(seen) == sorted(bytes(image.numpy()) for image in train.images)  # disjoint, complete


@pytest.mark.slow  # litdata.optimize with worker processes, then a training run
def test_prepare_writes_chunks_with_optimize_and_train_reads_them(tmp_path) -> None:
    write_images(tmp_path / "imgs", {"a": 10, "b": 10}, size=16)
    prep = run_cli(
        "ftlab.prepare",
        [f"+to_litdata={tmp_path / 'chunks'}", "+litdata_workers=2", "data=imagefolder"]
        + [f"data.root={tmp_path / 'imgs'}", f"hydra.run.dir={tmp_path / 'prep'}"],
        cwd=tmp_path,
    )
    assert prep.returncode == 0, prep.stderr[-3000:]
    assert "train with: data=litdata" in " ".join(prep.stdout.split())
    args = ["data=litdata", f"data.root={tmp_path / 'chunks'}", "data.image_size=32", "model.weights=null"]
    args += ["trainer=cpu", "trainer.max_epochs=1", "data.batch_size=8", "callbacks.rich_progress_bar=null"]
    train = run_cli("ftlab.train", [*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
