"""ImageFolder layouts with problems: every error names the folder, the class or the file."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from ftlab.data.images import load_rgb
from ftlab.data.sources.imagefolder import ImageFolderSource
from ftlab.errors import FtlabError
from tests.helpers.images import write_images

STEPS_PER_EPOCH = 3  # 24 training images in batches of 8


def test_empty_class_folder_and_folder_without_images_name_the_folder(tmp_path):
    write_images(tmp_path / "imgs", {"a": 3, "b": 3})
    (tmp_path / "imgs" / "c").mkdir()
    with pytest.raises(FtlabError, match=str(tmp_path / "imgs" / "c")):
        ImageFolderSource(root=str(tmp_path / "imgs"))
    (tmp_path / "loose").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "loose" / f"{i}.png")
    with pytest.raises(FtlabError, match=r"loose'? has no class folders\. It holds 3 images directly"):
        ImageFolderSource(root=str(tmp_path / "loose"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FtlabError, match=r"nothing'? has no class folders"):
        ImageFolderSource(root=str(tmp_path / "nothing"))
    write_images(tmp_path / "train", {"a": 2, "b": 2})
    write_images(tmp_path / "val", {"a": 1, "b": 0})
    with pytest.raises(FtlabError, match=r"data\.val_root.*" + str(tmp_path / "val" / "b")):
        ImageFolderSource(root=str(tmp_path / "train"), val_root=str(tmp_path / "val")).load()


def test_too_few_images_name_the_class_and_counts(tmp_path):
    write_images(tmp_path / "few", {"ants": 5, "bees": 1})
    with pytest.raises(FtlabError, match=r"bees \(1\)"):
        ImageFolderSource(root=str(tmp_path / "few")).load()
    write_images(tmp_path / "three", {"a": 3, "b": 3, "c": 3})
    with pytest.raises(FtlabError, match=r"a=3, b=3, c=3"):  # 10% of 9 images cannot hold 3 classes
        ImageFolderSource(root=str(tmp_path / "three"), val_fraction=0.1).load()


def test_unreadable_file_names_the_path(tmp_path):
    write_images(tmp_path / "imgs", {"a": 3, "b": 3})
    locked = tmp_path / "imgs" / "b" / "0.png"
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # running as root: permissions do not stop reads
        locked.unlink()
        locked.symlink_to(tmp_path / "gone.png")
    with pytest.raises(FtlabError) as err:
        ImageFolderSource(root=str(tmp_path / "imgs")).load()
    assert str(locked) in str(err.value) and (
        "Permission denied" in str(err.value) or "No such file" in str(err.value)
    )
    with pytest.raises(FtlabError, match=str(locked)):
        load_rgb(locked)
