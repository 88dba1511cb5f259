"""`python -m ftlab.predict`: probabilities checked against the checkpoint run on torchvision input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ftlab.cli.predict import PredictOptions, collect_images
from ftlab.config.check import check_command_line, command_options
from ftlab.errors import FtlabError
from ftlab.inference.checkpoint import TrainedModel
from ftlab.models.module import Classifier
from tests.helpers.cli import CONF, run_clis


def _reference(ckpt: Path, paths: list[Path]) -> dict[str, dict[str, float]]:
    """Class probabilities from the checkpoint's network on input made by torchvision's own transforms."""
    record = torch.load(ckpt, map_location="cpu", weights_only=False)["ftlab"]
    prep = record["preprocessing"]
    crop, interpolation = prep["crop_size"], InterpolationMode(prep["interpolation"])
    model = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights=None).eval()
    out = {}
    for path in paths:
        image = Image.open(path).convert("RGB")
        # ftlab's recipe: an image at the crop size passes as is; a smaller one is resized whole to the crop
        # (not upscaled and cropped); a larger one gets the weights' resize, then a centre crop.
        steps = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        resize = v2.Resize(prep["resize_size"], interpolation=interpolation, antialias=True)
        if min(image.size) < crop:
            steps.append(v2.Resize([crop, crop], interpolation=interpolation, antialias=True))
        elif image.size != (crop, crop):
            steps += [resize, v2.CenterCrop(crop)]
        steps.append(v2.Normalize(prep["mean"], prep["std"]))
        with torch.no_grad():
            probs = torch.softmax(model(v2.Compose(steps)(image)[None]), dim=1)[0]
        out[str(path)] = dict(zip(record["class_names"], probs.tolist(), strict=True))
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Images of several sizes and modes: a file given alone and a folder with a sub-folder."""
    root = tmp_path_factory.mktemp("predict_images")
    rng = np.random.default_rng(1)
    (root / "folder" / "sub").mkdir(parents=True)
    files = {
        "single": root / "single.png",
        "large": root / "folder" / "large.jpg",
        "wide": root / "folder" / "sub" / "wide.png",
        "small": root / "folder" / "small.png",
        "gray": root / "folder" / "gray.png",
    }
    sizes = {"single": (32, 32), "large": (64, 48), "wide": (90, 40), "small": (20, 24)}
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[name], quality=95)
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), "L").save(files["gray"])
    (root / "folder" / "notes.txt").write_text("not an image: ignored in folders")
    return files


def test_predict_json_text_and_errors(smoke_run, images, tmp_path):
    ckpt = smoke_run / "checkpoints" / "best.ckpt"
    folder = images["large"].parent
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ok.png").write_bytes(images["single"].read_bytes())
    (broken / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    json_run, text_run, broken_run = run_clis(
        [
            ("ftlab.predict", [f"ckpt_path={ckpt}", f"inputs=[{images['single']},{folder}]", "format=json"]),
            (
                "ftlab.predict",
                [f"ckpt_path={ckpt}", f"inputs={folder}", "top_k=2", "batch_size=2", "device=cpu"],
            ),
            ("ftlab.predict", [f"ckpt_path={ckpt}", f"inputs={broken}"]),
        ],
        cwd=tmp_path,
    )
    expected_paths = [images[n] for n in ("single", "gray", "large", "small", "wide")]  # folder: sorted
    reference = _reference(ckpt, expected_paths)

    # format=json: one object per image, every class, most probable first, equal to the reference.
    assert json_run.returncode == 0, json_run.stderr[-3000:]
    rows = [json.loads(line) for line in json_run.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(p) for p in expected_paths]
    for row in rows:
        probs, ref = row["probs"], reference[row["path"]]
        assert set(probs) == set(ref) and list(probs.values()) == sorted(probs.values(), reverse=True)
        for name, p in probs.items():
            assert p == pytest.approx(ref[name], abs=1e-4), (row["path"], name)
        assert row["top1"] == max(ref, key=ref.__getitem__)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)

    # text: `path  class p  class p`, top_k classes, batched.
    assert text_run.returncode == 0, text_run.stderr[-3000:]
    lines = text_run.stdout.splitlines()
    assert len(lines) == 4
    for line, path in zip(lines, expected_paths[1:], strict=True):
        fields = line.split("  ")
        assert fields[0] == str(path) and len(fields) == 3
        ranked = sorted(reference[str(path)].items(), key=lambda kv: -kv[1])[:2]
        assert fields[1:] == [f"{name} {p:.2f}" for name, p in ranked]

    # An unreadable file: the others are classified, the file is named on stderr, exit status 2.
    assert broken_run.returncode == 2
    assert broken_run.stdout.startswith(str(broken / "ok.png"))
    assert f"skipped {broken / 'corrupt.jpg'}" in broken_run.stderr and "1 of 2 images" in broken_run.stderr
    assert "Traceback" not in broken_run.stderr


def _compose_predict(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="predict", overrides=overrides)


def test_predict_options_and_inputs_are_checked(tmp_path):
    cfg = _compose_predict(["ckpt_path=x.ckpt", "inputs=[a.png]"])
    options = command_options(cfg, PredictOptions, "predict")
    assert (options.top_k, options.format, options.device, options.inputs) == (
        None,
        "text",
        "auto",
        ["a.png"],
    )
    with pytest.raises(FtlabError, match=r"top_k='abc' has the wrong type: expected int or null"):
        check_command_line("predict", ["ckpt_path=x", "inputs=[a]", "top_k=abc"])
    with pytest.raises(FtlabError, match=r"Unknown key topk. Did you mean: top_k"):
        check_command_line("predict", ["ckpt_path=x", "inputs=[a]", "topk=2"])
    with pytest.raises(FtlabError, match=r"ckpt_path is required: python -m ftlab.predict ckpt_path=<value>"):
        command_options(_compose_predict(["inputs=[a.png]"]), PredictOptions, "predict")
    GlobalHydra.instance().clear()
    with pytest.raises(FtlabError, match=f"no such file or folder: {tmp_path / 'nope.jpg'}"):
        collect_images([str(tmp_path / "nope.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FtlabError, match="holds no images"):
        collect_images([str(tmp_path / "empty")])
    with pytest.raises(FtlabError, match="no such file"):
        TrainedModel.load(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(FtlabError, match="is not a PyTorch checkpoint"):
        TrainedModel.load(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(FtlabError, match="has no ftlab record"):
        TrainedModel.load(tmp_path / "foreign.ckpt")


@pytest.mark.gpu
def test_predict_on_gpu_matches_cpu(smoke_run, images, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ckpt = smoke_run / "checkpoints" / "best.ckpt"
    args = [f"ckpt_path={ckpt}", f"inputs={images['large'].parent}", "format=json"]
    cpu, gpu = run_clis(
        [("ftlab.predict", [*args, "device=cpu"]), ("ftlab.predict", [*args, "device=cuda"])], tmp_path
    )
    assert cpu.returncode == 0 and gpu.returncode == 0, gpu.stderr[-3000:]
    for a, b in zip(cpu.stdout.splitlines(), gpu.stdout.splitlines(), strict=True):
        pa, pb = json.loads(a)["probs"], json.loads(b)["probs"]
        assert pa.keys() == pb.keys() and all(pa[k] == pytest.approx(pb[k], abs=1e-3) for k in pa)
