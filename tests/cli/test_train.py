"""The commands users type, run in real subprocesses with the network blocked."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ftlab.models.module import Classifier
from tests.helpers.assets import write_fake_cifar, write_fake_hub_weights
from tests.helpers.cli import REPO, TINY, offline_env, run_cli, run_clis


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's TensorBoard event files, read with tensorboard's own reader (a sweep job
    writes them one folder deeper, named by its swept overrides)."""
    (events,) = {p.parent for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _only_run(logs: Path, task: str) -> Path:
    runs = [p for p in (logs / task).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_train_on_synthetic_logs_per_epoch_metrics_and_checkpoint(tmp_path):
    logs = tmp_path / "logs"
    result = run_cli("ftlab.train", ["+experiment=smoke", *TINY, f"paths.log_dir={logs}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run(logs, "smoke")
    scalars = _scalars(run_dir)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert len(scalars[tag]) == 2, (tag, scalars.get(tag))  # one value per epoch
    assert {
        "lr/head",
        "lr/stem",
        "lr/layer4",
        "finetune/phase",
        "finetune/trainable_params",
    } <= scalars.keys()
    assert "epoch" in result.stdout and "val/acc" in result.stdout
    assert str(run_dir / "checkpoints" / "best.ckpt") in result.stdout.replace("\n", "")
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    meta = ckpt["ftlab"]
    assert meta["class_names"] == ["class_0", "class_1", "class_2"]
    assert meta["backbone"] == "resnet18" and meta["weights_id"] is None
    assert meta["preprocessing"]["crop_size"] == 32
    best_epoch_acc = max(v for _, v in scalars["val/acc"])
    assert ckpt["callbacks"][next(k for k in ckpt["callbacks"] if "ModelCheckpoint" in k)][
        "best_model_score"
    ] == pytest.approx(best_epoch_acc)


def test_hydra_run_dir_moves_logs_and_checkpoints(tmp_path):
    target = tmp_path / "elsewhere"
    result = run_cli(
        "ftlab.train",
        ["+experiment=smoke", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={target}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (target / "checkpoints" / "last.ckpt").is_file()
    assert list((target / "tensorboard").glob("events.out.tfevents.*"))


def test_offline_main_job_stops_in_seconds_with_what_to_do(tmp_path):
    env = offline_env(TORCH_HOME=str(tmp_path / "torch_home"))
    start = time.monotonic()
    result = run_cli(
        "ftlab.train",
        [
            "+experiment=cats_dogs_cars",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        env=env,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    assert elapsed < 60  # interpreter start-up included; the preflight itself takes well under a second
    message = result.stderr
    assert "Traceback" not in message
    assert str(tmp_path / "data" / "cifar-10-python.tar.gz") in message.replace("\n", "")
    assert "resnet18-f37072fd.pth" in message.replace("\n", "")
    assert "data=imagefolder" in message.replace("\n", "")
    assert "ftlab.prepare" in message.replace("\n", "")


def test_main_job_runs_offline_with_staged_files(tmp_path):
    """With the CIFAR archive and the hub weights file copied in, the main job trains offline."""
    write_fake_cifar(tmp_path / "data", per_class_train=12, per_class_test=6)
    torch_home = tmp_path / "torch_home"
    write_fake_hub_weights(torch_home)
    env = offline_env(TORCH_HOME=str(torch_home))
    args = [
        "+experiment=cats_dogs_cars",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "trainer.accelerator=cpu",  # the experiment's own preset (precision=auto), on the CPU
        "data.train_size=30",
        "data.val_size=9",
        "data.image_size=32",
        "trainer.max_epochs=3",
        "callbacks.rich_progress_bar=null",
    ]
    result = run_cli("ftlab.train", args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run(tmp_path / "logs", "cats_dogs_cars")
    assert len(_scalars(run_dir)["val/acc"]) == 3
    # the shipped recipe: stem..layer3 computed once per image for the whole run, never rebuilt
    log = result.stdout + result.stderr
    builds = [line for line in log.splitlines() if "feature cache built:" in line]
    assert len(builds) == 2, log[-3000:]
    assert any("train after stage layer3 (epochs 0-2)" in b for b in builds), builds
    assert any("val after stage layer3 (epochs 0-2)" in b for b in builds), builds
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert f"Precision: {'bf16-mixed' if native_bf16 else '32-true'} (auto: this CPU" in log
    meta = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["ftlab"]
    assert meta["class_names"] == ["cat", "dog", "automobile"]
    assert meta["weights_id"] == "ResNet18_Weights.IMAGENET1K_V1"

    prepared = run_cli("ftlab.prepare", args[:3], cwd=tmp_path, env=env)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert "ready: CIFAR-10 archive" in prepared.stdout and "resnet18-f37072fd.pth" in prepared.stdout


def test_prepare_offline_says_download_failed(tmp_path):
    env = offline_env(TORCH_HOME=str(tmp_path / "torch_home"))
    result = run_cli(
        "ftlab.prepare",
        [
            "+experiment=cats_dogs_cars",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Downloading CIFAR-10 archive" in result.stderr.replace("\n", " ")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.backbone=resnet181", "Did you mean: resnet18"),
        ("model.weights=IMAGENET1K_V9", "IMAGENET1K_V1"),
        ("data=imagefolder", "data.root"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc' has the wrong type"),
    ],
)
def test_bad_config_is_one_paragraph(tmp_path, override, expected):
    args = ["+experiment=smoke", override, f"paths.log_dir={tmp_path / 'logs'}"]
    if override == "data=imagefolder":
        args.append(f"data.root={tmp_path / 'no_such_folder'}")
    result = run_cli("ftlab.train", args, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr


def test_ddp_cpu_stage_unfrozen_mid_run_trains_identically_on_both_ranks(tmp_path):
    """2 gloo processes; the backbone unfreezes in epoch 2: it must train, and stay identical across ranks."""
    logs, dumps = tmp_path / "logs", tmp_path / "dumps"
    env = offline_env(PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = run_cli(
        "ftlab.train",
        [
            "+experiment=smoke",
            *TINY,
            "trainer=ddp_cpu",
            f"paths.log_dir={logs}",
            "finetune=freeze_unfreeze",
            "finetune.unfreeze_at_epoch=1",
            "+callbacks.rank_dump._target_=tests.helpers.rank_dump.SaveRankWeights",
            f"+callbacks.rank_dump.out_dir={dumps}",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run(logs, "smoke")  # both ranks wrote into the same Hydra run folder
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    start, rank0, rank1 = (
        torch.load(dumps / f, weights_only=True) for f in ("rank0_start.pt", "rank0_end.pt", "rank1_end.pt")
    )
    assert not torch.equal(start["conv1.weight"], rank0["conv1.weight"])  # the unfrozen stem trained
    assert not torch.equal(start["layer3.0.conv1.weight"], rank0["layer3.0.conv1.weight"])
    different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert different == []


def test_tensorboard_shows_phases_trainable_params_and_stage_lrs(tmp_path):
    logs = tmp_path / "logs"
    result = run_cli(
        "ftlab.train",
        [
            "+experiment=smoke",
            *TINY,
            "trainer.max_epochs=3",
            "finetune=gradual",
            "finetune.milestones=[1,2]",
            "finetune.warmup_epochs=0",
            f"paths.log_dir={logs}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scalars = {tag: [v for _, v in values] for tag, values in _scalars(_only_run(logs, "smoke")).items()}
    assert scalars["finetune/phase"] == [0.0, 1.0, 2.0]
    params = scalars["finetune/trainable_params"]
    assert params[0] < params[1] < params[2]
    assert scalars["lr/layer4"][0] == 0.0 and scalars["lr/layer4"][1] > 0 and scalars["lr/layer4"][2] > 0
    assert scalars["lr/layer3"][:2] == [0.0, 0.0] and scalars["lr/layer3"][2] > 0
    assert all(v == 0.0 for v in scalars["lr/stem"]) and all(v > 0 for v in scalars["lr/head"])


def test_resume_last_continues_the_newest_run(tmp_path):
    logs = tmp_path / "logs"
    base = ["+experiment=smoke", *TINY, f"paths.log_dir={logs}"]
    first = run_cli("ftlab.train", [*base, "trainer.max_epochs=1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli("ftlab.train", [*base, "trainer.max_epochs=2", "resume=last"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    newest = max((logs / "smoke").iterdir(), key=lambda p: p.name)
    scalars = _scalars(newest)
    assert [step for step, _ in scalars["val/acc"]] == [
        1
    ]  # only epoch 2 ran (epoch-level scalars: step = epoch, 0-based)
    missing = run_cli(
        "ftlab.train",
        ["+experiment=smoke", f"paths.log_dir={tmp_path / 'empty'}", "resume=last"],
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and "nothing to resume" in missing.stderr


NOISE = (  # known-harmless library lines hidden by default (see ftlab.training.run.known_noise_filtered)
    "module(s) in eval mode",
    "Tip: For seamless cloud",
    "`isinstance(treespec, LeafSpec)` is deprecated",
    "is not supported by the model summary",  # bf16-mixed: Lightning's size estimate (fp32 weights anyway)
)


def test_known_library_noise_is_hidden_unless_verbose(tmp_path):
    """freeze_unfreeze puts frozen stages in eval mode (Lightning warns): hidden, as the other known lines."""
    args = ["+experiment=smoke", *TINY, "trainer.max_epochs=1", "finetune=freeze_unfreeze", "debug=fast"]
    args.append("trainer.precision=bf16-mixed")
    calls = [("ftlab.train", [*args, f"paths.log_dir={tmp_path / name}"]) for name in ("quiet", "verbose")]
    quiet, verbose = run_clis(calls, tmp_path, [None, offline_env(FTLAB_VERBOSE="1")])
    assert quiet.returncode == 0 and verbose.returncode == 0, (quiet.stderr[-2000:], verbose.stderr[-2000:])
    for line in NOISE:
        assert line not in quiet.stdout + quiet.stderr, line
        assert line in verbose.stdout + verbose.stderr, line
    assert "val/acc" in quiet.stdout  # what the user needs still prints
    for run in (quiet, verbose):  # fixed where they arise, so not even the verbose run prints them
        output = " ".join((run.stdout + run.stderr).split())
        assert "Total FLOPs" not in output  # nothing counts FLOPs without an example input: no "0"
        assert "smaller than the logging interval" not in output  # 2 batches: logging every 2 steps
        assert (
            "Trainable params" in output and "Skipping setting a default" not in output
        )  # the summary stays


def _job_runs(logs: Path) -> dict[str, Path]:
    """Sweep job folders by their swept choice (e.g. `finetune=gradual`), from Hydra's overrides.yaml."""
    jobs = {}
    for job in sorted(p for p in (logs / "smoke" / "multirun").glob("*/*") if p.is_dir()):
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        (choice,) = [o for o in overrides if str(o).startswith(("finetune=", "scheduler="))]
        jobs[str(choice).split("=")[1]] = job
    return jobs


def _stage_sizes() -> dict[str, int]:
    module = Classifier("resnet18", ["a", "b", "c"], weights=None)
    sizes = {
        name: sum(p.numel() for p in module.stages[name].parameters())
        for name in module.trainable_stage_names
    }
    return sizes | {"head": sum(p.numel() for p in module.head.parameters())}


@pytest.mark.parametrize(
    "sweep",
    [
        "finetune=linear_probe,full,freeze_unfreeze,gradual,custom",
        "scheduler=cosine,cosine_warmup,onecycle,plateau,none",
    ],
)
def test_every_strategy_and_scheduler_runs_from_the_cli(tmp_path, sweep):
    """One Hydra multirun over all options of a group, 3 short epochs: each arm shows its shape
    (trainable parameters per epoch for strategies; the head's LR per epoch and the checkpointed scheduler
    state for schedulers)."""
    logs = tmp_path / "logs"
    shrink = [
        f"+trainer.limit_train_batches={1 if sweep.startswith('finetune') else 2}",  # steps per epoch
        "+trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
    ]
    args = ["-m", "+experiment=smoke", *TINY, "trainer.max_epochs=3", *shrink, f"paths.log_dir={logs}", sweep]
    result = run_cli("ftlab.train", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_runs(logs)
    assert len(jobs) == 5
    scalars = {
        arm: {t: [v for _, v in vals] for t, vals in _scalars(job).items()} for arm, job in jobs.items()
    }
    if sweep.startswith("finetune"):
        size = _stage_sizes()
        head, every = size["head"], sum(size.values())
        top1, top2 = head + size["layer4"], head + size["layer4"] + size["layer3"]
        expected = {  # epochs 0, 1, 2
            "linear_probe": [head, head, head],
            "full": [every] * 3,
            "freeze_unfreeze": [head, every, every],  # unfreeze_at_epoch 1
            "gradual": [head, top1, top2],  # one more stage from the top every epoch
            "custom": [head, top2, top2],  # top-2 at epoch 1, all at epoch 3
        }
        for arm, params in expected.items():
            assert scalars[arm]["finetune/trainable_params"] == params, arm
        return
    lr = 1e-3  # optimizer.lr: the head's configured LR
    states = {
        arm: torch.load(job / "checkpoints" / "last.ckpt", weights_only=False)["lr_schedulers"]
        for arm, job in jobs.items()
    }
    head = {arm: values["lr/head"] for arm, values in scalars.items()}
    assert head["none"] == pytest.approx([lr] * 3) and states["none"] == []
    assert head["cosine"] == pytest.approx([lr, 0.75 * lr, 0.25 * lr])  # T_max 3 epochs, stepped per epoch
    assert states["cosine"][0]["last_epoch"] == 3
    for arm in ("cosine_warmup", "onecycle"):  # stepped every optimizer step: 6 steps
        assert states[arm][0]["last_epoch"] == 6, arm
        assert len(set(head[arm])) == 3, arm
    assert head["onecycle"][0] == pytest.approx(lr / 25)  # OneCycle starts at peak / div_factor
    assert head["plateau"] == pytest.approx([lr] * 3)  # patience 1: no plateau within 3 epochs
    plateau = states["plateau"][0]
    losses = scalars["plateau"]["val/loss"]  # last.ckpt may be written before the last epoch's plateau step
    assert any(plateau["best"] == pytest.approx(min(losses[:k]), rel=1e-5) for k in (2, 3)), plateau


FAMILIES = [
    "mobilenet_v3_small",
    "efficientnet_b0",
    "convnext_tiny",
    "densenet121",
    "vgg11_bn",
    "alexnet",
    "squeezenet1_1",
    "shufflenet_v2_x0_5",
    "googlenet",
    "inception_v3",
    "regnet_x_400mf",
    "mnasnet0_5",
    "swin_t",
    "vit_b_16",
    "maxvit_t",
    "efficientnet_lite0",
]


@pytest.mark.slow
def test_gradual_schedule_runs_on_every_family_from_the_cli(tmp_path):
    logs = tmp_path / "logs"
    jobs = [(name, 224 if name.startswith(("vit", "maxvit")) else 80) for name in FAMILIES]
    for size in sorted({s for _, s in jobs}):
        names = ",".join(n for n, s in jobs if s == size)
        result = run_cli(
            "ftlab.train",
            [
                "-m",
                "+experiment=smoke",
                *TINY,
                "debug=fast",
                f"paths.log_dir={logs}",
                "model.weights=null",
                f"model.backbone={names}",
                "finetune=gradual",
                f"data.image_size={size}",
                "data.batch_size=2",
            ],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((logs / "smoke" / "multirun").glob("*/*/checkpoints/last.ckpt"))) == len(FAMILIES)


def test_a_phase_that_never_runs_is_named_on_the_command_line(tmp_path):
    """finetune=last_stages (one head-only epoch) with trainer.max_epochs=1: layer4 would never train."""
    args = ["+experiment=smoke", *TINY, "finetune=last_stages", "trainer.max_epochs=1", "debug=fast"]
    result = run_cli("ftlab.train", [*args, f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = " ".join((result.stdout + result.stderr).split())
    assert "the phase from epoch 1 never runs with trainer.max_epochs=1, so layer4 never trains" in log


def test_an_unknown_precision_stops_before_data_loads_with_one_paragraph(tmp_path):
    args = ["+experiment=smoke", *TINY, "trainer.precision=bf17", f"paths.log_dir={tmp_path}"]
    result = run_cli("ftlab.train", args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "trainer.precision='bf17' is not a precision: give `auto`" in message
    assert "BatchNorm policy" not in result.stdout + result.stderr  # stopped before the model was built
