"""The main job end to end: `python -m ftlab.train +experiment=cats_dogs_cars` in a subprocess on stand-in
assets staged in a temporary folder, its wall time split into phases, against the whole-network schedule
run the same way, both also expressed in ResNet-18 forward-image equivalents measured in the same run."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftlab.benchmark.assets import write_cifar_archive, write_hub_weights
from ftlab.benchmark.settings import LR, WEIGHT_DECAY, sync
from ftlab.errors import FtlabError

EXPERIMENT = "cats_dogs_cars"
CLASSES = ["cat", "dog", "automobile"]  # the experiment's classes, label order
WHOLE_NETWORK = ["finetune=freeze_unfreeze", "finetune.unfreeze_at_epoch=2"]  # the baseline schedule


@dataclass
class MainJobOptions:
    """Sizes of the main-job benchmark; the defaults are the real job (1,000 / 600 images, 10 epochs)."""

    epochs: int | None = None  # None: the experiment's own trainer.max_epochs
    train_size: int = 1000
    val_size: int = 600
    baseline_epochs: int | None = None  # whole-network arm: None = same as the main job
    baseline: bool = True
    plain_loop: bool | None = None  # None: on CUDA only
    extra: list[str] = field(default_factory=list)  # more overrides for both arms (e.g. trainer=cpu)
    variants: dict[str, list[str]] = field(default_factory=dict)  # more main-job arms: name -> overrides


def stage(folder: Path, train_size: int, val_size: int) -> tuple[Path, Path]:
    """Write the stand-in CIFAR-10 archive and ResNet-18 hub weights into `folder`: (data dir, TORCH_HOME)."""
    data, torch_home = folder / "data", folder / "torch_home"
    write_cifar_archive(data, train_size, val_size)
    write_hub_weights(torch_home)
    return data, torch_home


def run_arm(folder: Path, data: Path, torch_home: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    """Run the real training command once; wall time and its phases from the PhaseTimer callback."""
    timing = folder / f"{name}_timing.json"
    args = [
        f"+experiment={EXPERIMENT}",
        f"paths.data_dir={data}",
        f"paths.log_dir={folder / 'logs'}",
        f"task_name=bench_{name}",
        "+callbacks.bench_timer._target_=ftlab.benchmark.timing.PhaseTimer",
        f"+callbacks.bench_timer.path={timing}",
        *overrides,
    ]
    command = [sys.executable, "-m", "ftlab.train", *args]
    env = dict(os.environ, TORCH_HOME=str(torch_home))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launch = time.time()
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or not timing.is_file():
        raise FtlabError(
            f"ftlab.bench --main-job: `python -m ftlab.train {' '.join(args)}` failed (exit "
            f"{proc.returncode}); its last output:\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    phases = json.loads(timing.read_text())
    wall = end - launch
    startup = phases["fit_start"] - launch
    result = {
        "command": "python -m ftlab.train " + " ".join(args[:1] + list(overrides)),
        "wall_s": wall,
        "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "startup_s": startup,
        "cache_build_s": phases["cache_build_s"],
        "train_epochs_s": phases["train_epochs_s"],
        "val_epochs_s": phases["val_epochs_s"],
        "epochs": phases["epochs"],
        "val_acc": phases.get("val_acc"),
        "precision": phases.get("precision"),
        "flops": phases.get("flops", {}),
        "cache_log": [line for line in (proc.stdout + proc.stderr).splitlines() if "feature cache" in line],
    }
    known = startup + phases["cache_build_s"] + phases["train_epochs_s"] + phases["val_epochs_s"]
    result["other_s"] = wall - known  # checkpoints, logging, teardown
    return result


def inference_img_s(
    device: torch.device,
    seconds: float = 8.0,
    channels_last: bool = False,
    bf16: bool = False,
    per_cpu_second: bool = False,
) -> float:
    """This machine's ResNet-18 inference images/s at 224 px, batch 32, fp32 (the unit of the goal);
    `channels_last=True` measures the same in that memory format and `bf16=True` under bf16 autocast (both
    reported beside the unit, not instead). `per_cpu_second`: images per second of this process's CPU time
    (a CPU's figure that other processes' load changes much less than wall time)."""
    import torchvision

    model = torchvision.models.resnet18(weights=None).to(device).eval()
    x = torch.randn(32, 3, 224, 224, device=device)
    if channels_last:
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        for _ in range(2):
            model(x)
        sync(device)
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds or count < 3:
            model(x)
            count += 1
            if device.type == "cuda" and count % 10:
                continue
            sync(device)
        sync(device)
        if per_cpu_second:
            return count * 32 / (time.process_time() - cpu)
        return count * 32 / (time.perf_counter() - start)


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 3.0, size: int = 2048) -> float:
    """This device's matrix-multiply FLOP/s in `dtype`: `size` x `size` products for `seconds`, the fastest
    of 0.25 s windows (the least disturbed by other processes on a shared machine)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.matmul(a, b)
    sync(device)
    flops_each, best = 2.0 * size**3, 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        count, start = 0, time.perf_counter()
        while count < 2 or time.perf_counter() - start < 0.25:
            torch.matmul(a, b)
            count += 1
            if device.type == "cuda" and count % 10:
                continue
            sync(device)
        sync(device)
        best = max(best, count * flops_each / (time.perf_counter() - start))
    return best


def flop_rates(result: dict[str, Any], device: torch.device) -> None:
    """The main job's FLOPs (counted in its run) per second of wall time and of its compute phases (cache
    build, training, validation), against this device's matmul peaks in fp32 and bf16 measured now."""
    main = result["main_job"]
    flops = main.get("flops") or {}
    total = sum(flops.values())
    compute_s = main["cache_build_s"] + main["train_epochs_s"] + main["val_epochs_s"]
    peaks = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    result["matmul_peak_flop_s"] = peaks
    result["main_job_flops"] = flops | {"total": total}
    result["main_job_flop_s"] = {"wall": total / main["wall_s"], "compute": total / compute_s}
    dtype = "bf16" if str(main.get("precision")).startswith("bf16") else "fp32"
    result["main_job_flop_s_vs_peak"] = {
        "dtype": dtype,
        "wall": total / main["wall_s"] / peaks[dtype],
        "compute": total / compute_s / peaks[dtype],
    }


def plain_loop(
    device: torch.device, data: Path, torch_home: Path, opts: MainJobOptions, epochs: int, unfreeze_at: int
) -> float:
    """Seconds of a plain PyTorch loop doing the whole-network schedule's work on the device: same images,
    head only (backbone in eval, no grad) until `unfreeze_at`, then everything; hflip, resize to 224 and
    normalise on the device; AdamW as ftlab's groups; a validation pass every epoch."""
    import torchvision

    from ftlab.data.sources.cifar10 import Cifar10Source

    train_set, val_set = Cifar10Source(
        str(data), CLASSES, opts.train_size, opts.val_size, download=False, seed=42
    ).load()
    xs = {k: s.images.to(device) for k, s in (("train", train_set), ("val", val_set))}  # type: ignore[attr-defined]
    ys = {k: torch.as_tensor(s.labels, device=device) for k, s in (("train", train_set), ("val", val_set))}
    os.environ["TORCH_HOME"] = str(torch_home)
    model = torchvision.models.resnet18(weights="IMAGENET1K_V1")
    model.fc = nn.Linear(model.fc.in_features, len(CLASSES))
    model = model.to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    head = list(model.fc.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    groups = [
        {"params": [p for p in ps if p.ndim > 1], "lr": lr, "weight_decay": WEIGHT_DECAY}
        for ps, lr in ((head, LR), (body, LR * 0.1))
    ] + [
        {"params": [p for p in ps if p.ndim <= 1], "lr": lr, "weight_decay": 0.0}
        for ps, lr in ((head, LR), (body, LR * 0.1))
    ]
    optimizer = torch.optim.AdamW(groups)

    def prep(images: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(images.float() / 255, size=(224, 224), mode="bilinear", antialias=True)
        return (x - mean) / std

    sync(device)
    start = time.perf_counter()
    for epoch in range(epochs):
        frozen = epoch < unfreeze_at
        model.train()
        if frozen:
            for m in model.modules():
                if m is not model.fc:
                    m.eval()
        order = torch.randperm(len(ys["train"]), device=device)
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            images = xs["train"][idx]
            flip = torch.rand(len(idx), device=device) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
            x = prep(images)
            if frozen:
                with torch.no_grad():
                    feats = torch.flatten(model.avgpool(_trunk(model, x)), 1)
                logits = model.fc(feats)
            else:
                logits = model(x)
            loss = nn.functional.cross_entropy(logits, ys["train"][idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(ys["val"]), 32):
                model(prep(xs["val"][i : i + 32])).argmax(1)
    sync(device)
    return time.perf_counter() - start


def _trunk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    m: Any = model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def main_job_benchmark(opts: MainJobOptions, device: torch.device) -> dict[str, Any]:
    """Both arms in one run, the forward-image unit, and (on CUDA) the plain-PyTorch loop."""
    with tempfile.TemporaryDirectory(prefix="ftlab-bench-") as tmp:
        folder = Path(tmp)
        data, torch_home = stage(folder, opts.train_size, opts.val_size)
        sizes = [f"data.train_size={opts.train_size}", f"data.val_size={opts.val_size}", *opts.extra]
        epochs = [f"trainer.max_epochs={opts.epochs}"] if opts.epochs is not None else []
        main = run_arm(folder, data, torch_home, "main", sizes + epochs)
        result: dict[str, Any] = {"options": asdict(opts), "main_job": main, "main_job_s": main["wall_s"]}
        img_s = inference_img_s(device)
        result["resnet18_infer_img_s"] = img_s
        result["resnet18_infer_img_s_channels_last"] = inference_img_s(device, channels_last=True)
        if str(main.get("precision")).startswith("bf16"):  # the unit in the job's own arithmetic, beside it
            result["resnet18_infer_img_s_bf16_channels_last"] = inference_img_s(
                device, channels_last=True, bf16=True
            )
        result["main_job_forward_equivalents"] = main["wall_s"] * img_s
        if device.type == "cpu":  # the same count in CPU time: robust to other processes sharing the cores
            cpu_img_s = inference_img_s(device, per_cpu_second=True)
            result["resnet18_infer_img_per_cpu_s"] = cpu_img_s
            result["main_job_forward_equivalents_cpu_time"] = main["cpu_s"] * cpu_img_s
        flop_rates(result, device)
        for name, overrides in opts.variants.items():  # after the main arm, same staged assets and unit
            try:
                variant = run_arm(folder, data, torch_home, f"variant_{name}", sizes + epochs + overrides)
            except FtlabError as failed:  # one failing arm leaves the others' figures
                result.setdefault("variants", {})[name] = {"overrides": overrides, "error": str(failed)}
                continue
            variant["forward_equivalents"] = variant["wall_s"] * img_s
            per_cpu_s = result.get("resnet18_infer_img_per_cpu_s")
            if per_cpu_s is not None:
                variant["forward_equivalents_cpu_time"] = variant["cpu_s"] * per_cpu_s
            result.setdefault("variants", {})[name] = variant
        if opts.baseline:
            base_epochs = opts.baseline_epochs if opts.baseline_epochs is not None else opts.epochs
            more = [f"trainer.max_epochs={base_epochs}"] if base_epochs is not None else []
            base = run_arm(folder, data, torch_home, "whole_network", sizes + WHOLE_NETWORK + more)
            result["whole_network"] = base
            result["whole_network_s"] = base["wall_s"]
            result["whole_network_forward_equivalents"] = base["wall_s"] * img_s
            result["whole_network_vs_main"] = base["wall_s"] / main["wall_s"]
            result["same_epochs"] = base["epochs"] == main["epochs"]
        if opts.plain_loop if opts.plain_loop is not None else device.type == "cuda":
            n = opts.baseline_epochs or opts.epochs or 10
            plain = plain_loop(device, data, torch_home, opts, n, 2)
            result["plain_loop_s"] = plain
            for arm in ("main_job", "whole_network"):
                if arm in result:
                    entry = result[arm]
                    work = entry["cache_build_s"] + entry["train_epochs_s"] + entry["val_epochs_s"]
                    result[f"{arm}_training_vs_plain"] = work / plain
    return result
