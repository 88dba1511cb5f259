"""Config groups own their keys: old keys say where they moved, strategies reject keys they ignore."""

from __future__ import annotations

import pytest

from ftlab.config.schemas import MOVED, check_overrides, checked
from ftlab.errors import FtlabError
from ftlab.training.run import check_config, compile_options, trainer_options

OLD_SCHEDULER_KEYS = ["scheduler.T_max", "scheduler.eta_min", "scheduler._target_"]


@pytest.mark.parametrize("old", [*MOVED, *OLD_SCHEDULER_KEYS])
def test_every_moved_key_names_its_new_home_in_a_file_and_on_the_command_line(compose_cfg, old):
    new = MOVED.get(old) or old.replace("scheduler.", "scheduler.factory.")
    value = "${trainer.max_epochs}" if old.endswith("T_max") else "1"
    cfg = compose_cfg([f"+{old}={value}"])  # what an old experiment file or a `+key=` override gives
    with pytest.raises(FtlabError, match=rf"{old} has moved to {new}\b"):
        check_config(cfg)
    for override in (f"{old}={value}", f"+{old}={value}", f"++{old}={value}"):
        with pytest.raises(FtlabError, match=rf"{old} has moved to {new}\b"):
            check_overrides([override])


def test_new_keys_and_other_overrides_pass_the_command_line_check():
    check_overrides(["-m", "runtime.compile=true", "scheduler.factory.T_max=3", "scheduler.interval=step"])
    check_overrides(["scheduler=none", "finetune=gradual", "hydra.run.dir=x", "trainer.max_epochs=2"])


@pytest.mark.parametrize(
    ("finetune", "key", "owner"),
    [
        ("freeze_unfreeze", "every=2", "gradual"),
        ("freeze_unfreeze", "milestones=[1]", "gradual"),
        ("full", "unfreeze_at_epoch=1", "freeze_unfreeze"),
        ("full", "warmup_epochs=0.5", "freeze_unfreeze"),
        ("linear_probe", "phases=[]", "custom"),
        ("gradual", "unfreeze_at_epoch=2", "freeze_unfreeze"),
        ("custom", "min_stage=layer2", "gradual"),
    ],
)
def test_a_key_the_chosen_strategy_ignores_is_rejected(compose_cfg, finetune, key, owner):
    cfg = compose_cfg([f"finetune={finetune}", f"+finetune.{key}"])
    name = key.split("=")[0]
    with pytest.raises(FtlabError, match=rf"finetune.{name} does nothing with finetune.strategy={finetune}"):
        checked(cfg, "finetune")
    with pytest.raises(FtlabError, match=rf"pick finetune={owner}"):
        checked(cfg, "finetune")


def test_each_strategy_gets_only_its_own_keys(compose_cfg):
    gradual = checked(compose_cfg(["finetune=gradual", "finetune.every=2"]), "finetune")
    assert (gradual.every, gradual.milestones) == (2, None) and not hasattr(gradual, "unfreeze_at_epoch")
    full = checked(compose_cfg(["finetune=full"]), "finetune")
    assert not hasattr(full, "warmup_epochs") and not hasattr(full, "every")
    cfg = compose_cfg(["finetune.strategy=gradul"])
    with pytest.raises(FtlabError, match=r"finetune.strategy='gradul'.*Did you mean: gradual"):
        checked(cfg, "finetune")


def test_runtime_and_scheduler_values_are_checked(compose_cfg):
    assert compile_options(checked(compose_cfg(["runtime.compile=true"]), "runtime")) == {}
    options = compile_options(checked(compose_cfg(["runtime.compile={backend: aot_eager}"]), "runtime"))
    assert options == {"backend": "aot_eager"}
    with pytest.raises(FtlabError, match=r"runtime.compile=.*backend"):
        check_config(compose_cfg(["runtime.compile={backnd: eager}"]))
    with pytest.raises(FtlabError, match=r"scheduler.interval='batch'.*epoch.*step"):
        check_config(compose_cfg(["scheduler.interval=batch"]))
    with pytest.raises(FtlabError, match=r"Unknown key scheduler.monitr\b.*monitor"):
        check_config(compose_cfg(["scheduler=plateau", "+scheduler.monitr=val/acc"]))
    assert "compile" not in trainer_options(compose_cfg(["trainer=gpu"]).trainer)


def test_gpu_presets_turn_channels_last_on_in_runtime(compose_cfg):
    for preset in ("gpu", "bf16", "fp16"):
        cfg = compose_cfg([f"trainer={preset}"])
        assert checked(cfg, "runtime").channels_last is True and cfg.trainer.accelerator == "gpu"
    cfg = compose_cfg(["trainer=bf16", "runtime.channels_last=false"])
    assert checked(cfg, "runtime").channels_last is False
    assert checked(compose_cfg(["trainer=cpu"]), "runtime").channels_last is False
