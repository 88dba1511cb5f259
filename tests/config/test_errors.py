"""Config mistakes are one paragraph naming the key, with close matches, never a traceback."""

from __future__ import annotations

import pytest

from ftlab.config.check import check_command_line
from ftlab.errors import FtlabError
from ftlab.models.backbones import resolve_weights
from tests.helpers.cli import offline_env, run_clis
from tests.helpers.images import write_images
from tests.helpers.runs import one_paragraph

STEPS_PER_EPOCH = 3  # 24 training images in batches of 8


def test_config_errors_are_one_paragraph_with_close_matches(tmp_path, smoke_run):
    base = ["+experiment=smoke", f"paths.log_dir={tmp_path / 'logs'}"]
    missing = tmp_path / "no_such_folder"
    ckpt = smoke_run / "checkpoints" / "best.ckpt"  # trained on class_0, class_1, class_2
    cases = [  # (overrides, exit status, expected text)
        (  # resuming from a checkpoint whose classes differ from the data's
            [f"ckpt_path={ckpt}", "+data.classes=[cat,dog,bird]"],
            2,
            "trained on the classes ['class_0', 'class_1', 'class_2']; the data has ['cat', 'dog', 'bird']",
        ),
        (
            ["model.backbone=resnet181"],
            2,
            "Unknown backbone model.backbone='resnet181'. Did you mean: resnet18",
        ),
        (["data=cifar100"], 2, "data=cifar100 is not an option of `data`. Did you mean: cifar10?"),
        (["sed=1"], 2, "Unknown key sed. Did you mean: seed"),  # an unknown key, with its close matches
        (["+sed=1"], 2, "Unknown key sed. Did you mean: seed"),  # also when added with +
        (  # an old key on the command line: where it lives now, before Hydra rejects it
            ["trainer.channels_last=true"],
            2,
            "trainer.channels_last has moved to runtime.channels_last",
        ),
    ]
    calls = [("ftlab.train", [*base, *overrides]) for overrides, _, _ in cases]
    missing_root = ("ftlab.train", [*base, "data=imagefolder", f"data.root={missing}"])
    envs = [None] * len(cases) + [None, offline_env(HYDRA_FULL_ERROR="1")]
    *results, missing_result, full_result = run_clis([*calls, missing_root, missing_root], tmp_path, envs)
    for (overrides, status, text), result in zip(cases, results, strict=True):
        assert result.returncode == status, (overrides, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (overrides, result.stderr[-2000:])
        assert text in " ".join(result.stderr.split()), (overrides, result.stderr)
        assert len(result.stderr.strip().splitlines()) <= 15, result.stderr
    assert all(name in results[2].stderr for name in ("cifar10", "imagefolder", "synthetic"))
    assert missing_result.returncode == 2
    assert f"data.root='{missing}' is not a folder" in one_paragraph(missing_result.stderr)
    full = full_result.stderr  # HYDRA_FULL_ERROR=1: the traceback, ending in the same message
    assert "Traceback" in full and "FtlabError" in full and str(missing) in full


def test_close_matches_and_wrong_types_in_process(tmp_path):
    with pytest.raises(FtlabError, match=r"Did you mean: IMAGENET1K_V1"):
        resolve_weights("resnet18", "IMAGENET1K_V9")
    with pytest.raises(FtlabError, match=r"data.trian_size.*Did you mean: train_size"):
        check_command_line("train", ["data=synthetic", "+data.trian_size=5"])
    write_images(tmp_path / "imgs", {"a": 3, "b": 3})
    root = f"data.root={tmp_path / 'imgs'}"
    with pytest.raises(FtlabError, match=r"data.val_fraction='abc' has the wrong type: expected float"):
        check_command_line("train", ["data=imagefolder", root, "data.val_fraction=abc"])
    with pytest.raises(
        FtlabError, match=r"data.skip_bad_images='sometimes' has the wrong type: expected bool"
    ):
        check_command_line("train", ["data=imagefolder", root, "data.skip_bad_images=sometimes"])
