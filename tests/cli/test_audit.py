"""`python -m ftlab.audit`: planted duplicates, leakage and label flips among generated pictures are found
with EfficientNet-Lite0's real pretrained features (offline); a clean set shows no duplicates."""

from __future__ import annotations

import colorsys
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ftlab.cli.audit import run_audit
from tests.helpers.cli import run_cli

HUES = {"blue": 0.62, "green": 0.33, "red": 0.0}  # classes told apart by colour


def picture(rng: np.random.Generator, hue: float, size: int = 96) -> Image.Image:
    """A smooth random scene (upsampled 6x6 noise) tinted towards the class hue."""
    low = Image.fromarray((rng.uniform(0, 1, (6, 6, 3)) * 255).astype(np.uint8))
    base = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC), dtype=float) / 255
    tint = np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0)) * rng.uniform(0.6, 1.0)
    return Image.fromarray(((0.55 * base + 0.45 * tint).clip(0, 1) * 255).astype(np.uint8))


def write_set(root: Path, train: int = 12, val: int = 4, seed: int = 0) -> None:
    """root/train/<class>/<i>.png and root/val/<class>/<i>.png, every picture distinct."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for name, hue in HUES.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                picture(rng, hue).save(root / split / name / f"{i}.png")


def plant(root: Path) -> dict[str, object]:
    """Add a re-encoded JPEG, a resized copy, a byte copy, a train image in val, and three label flips."""
    train, val = root / "train", root / "val"
    Image.open(train / "red/3.png").save(train / "red/3_reencoded.jpg", quality=90)
    Image.open(train / "green/5.png").resize((64, 64), Image.Resampling.BICUBIC).save(
        train / "green/5_small.png"
    )
    shutil.copy(train / "blue/2.png", train / "blue/2_copy.png")
    shutil.copy(train / "red/7.png", val / "red/leak.png")
    rng = np.random.default_rng(99)
    flips = []
    for i in range(3):  # red pictures filed under green
        picture(rng, HUES["red"]).save(train / "green" / f"flip{i}.png")
        flips.append(str(train / "green" / f"flip{i}.png"))
    return {
        "near": {
            frozenset({str(train / "red/3.png"), str(train / "red/3_reencoded.jpg")}),
            frozenset({str(train / "green/5.png"), str(train / "green/5_small.png")}),
        },
        "file": {
            (str(train / "blue/2.png"), str(train / "blue/2_copy.png"), "train"),
            (str(train / "red/7.png"), str(val / "red/leak.png"), "train/val"),
        },
        "flips": set(flips),
    }


def _overrides(root: Path, tmp_path: Path) -> list[str]:
    return [
        "data=imagefolder",
        f"data.root={root / 'train'}",
        f"data.val_root={root / 'val'}",
        "data.image_size=96",  # small input: a few seconds on the CPU
        "near_threshold=0.94",  # planted copies score >= 0.96, distinct pictures <= 0.91
        "device=cpu",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]


def test_audit_finds_planted_duplicates_leakage_and_label_flips(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_set(root)
    planted = plant(root)
    suspects_file = tmp_path / "suspects.txt"
    args = [*_overrides(root, tmp_path), "format=json", f"suspects_out={suspects_file}"]
    result = run_cli("ftlab.audit", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    exact = {(p["a"], p["b"], p["where"]) for p in found["pairs"] if p["kind"] in ("file", "pixels")}
    assert exact == planted["file"]
    near = {frozenset({p["a"], p["b"]}) for p in found["pairs"] if p["kind"] == "near"}
    assert near == planted["near"], found["pairs"]
    flagged = {s["id"] for s in found["label_suspects"]}
    assert planted["flips"] <= flagged, found["label_suspects"]
    assert all(s["predicted"] == "red" for s in found["label_suspects"] if s["id"] in planted["flips"])
    assert len(flagged) <= 2 * len(planted["flips"]), found["label_suspects"]  # few false alarms
    assert found["counts"]["green"] == {"train": 16, "val": 4}
    assert found["sizes"] == {"96x96": 54, "64x64": 1} and found["modes"] == {"RGB": 55}
    ids = [line for line in suspects_file.read_text().splitlines() if not line.startswith("#")]
    assert str(root / "val/red/leak.png") not in ids  # leakage drops the train copy, val stays fixed
    assert str(root / "train/red/7.png") in ids and planted["flips"] <= set(ids)
    assert len(ids) == len(set(ids)) and all(Path(i).exists() for i in ids)  # nothing deleted
    (run_dir,) = (tmp_path / "logs" / "audit").iterdir()
    report = (run_dir / "report.md").read_text()
    assert "## Leakage: the same image in train and val (1)" in report
    thumbs = sorted((run_dir / "thumbs").glob("*.png"))
    assert thumbs and all(f'src="thumbs/{t.name}"' in report for t in thumbs)


def test_audit_of_a_clean_set_reports_no_duplicates(tmp_path: Path, compose_cfg) -> None:
    root = tmp_path / "images"
    write_set(root, train=8, val=4, seed=1)
    cfg = compose_cfg(_overrides(root, tmp_path), config_name="audit")
    found, thumbs, _ = run_audit(cfg)
    assert found.pairs == []
    assert found.probe_accuracy is not None and found.probe_accuracy > 0.9
    assert sum(c["train"] for c in found.counts.values()) == 24 and len(thumbs) == 36
