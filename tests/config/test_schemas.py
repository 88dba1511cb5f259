"""Every experiment and every option of every config group composes; ftlab's keys are checked early."""

from __future__ import annotations

import re

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from ftlab.config.schemas import checked
from ftlab.data import build_source
from ftlab.errors import FtlabError
from ftlab.training.run import check_config, compile_options, trainer_options
from tests.helpers.cli import CONF

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("experiment", "hydra"))
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(f.stem for f in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(compose_cfg, experiment):
    cfg = compose_cfg([f"+experiment={experiment}"])
    OmegaConf.resolve(cfg)
    check_config(cfg)
    assert cfg.task_name == experiment


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_group_option_composes(compose_cfg, group, option):
    extra = ["data.root=/nonexistent"] if (group, option) == ("data", "imagefolder") else []
    cfg = compose_cfg([f"{group}={option}", *extra])
    OmegaConf.resolve(cfg)
    if group == "model":
        model = checked(cfg, "model")
        assert model.backbone == option
    if group == "trainer" and option in ("default", "cpu", "ddp_cpu"):
        trainer = instantiate(trainer_options(cfg.trainer), logger=False, enable_checkpointing=False)
        assert compile_options(checked(cfg, "runtime")) is None
        assert trainer.max_epochs == cfg.trainer.max_epochs
    if group in ("trainer", "finetune", "scheduler"):
        check_config(cfg)


def test_main_job_is_the_documented_one(compose_cfg):
    cfg = compose_cfg(["+experiment=cats_dogs_cars"])
    assert cfg.model.backbone == "resnet18" and cfg.model.weights == "IMAGENET1K_V1"
    assert list(cfg.data.classes) == ["cat", "dog", "automobile"]
    assert (cfg.data.train_size, cfg.data.val_size, cfg.data.image_size) == (1000, 600, 224)
    assert cfg.trainer.max_epochs == 10
    source = build_source(cfg.data, cfg.seed)
    assert source.classes == ["cat", "dog", "automobile"]


def test_every_yaml_option_has_a_comment():
    """Each key line in conf/ carries a one-line comment (or is a structural/_target_ line)."""
    missing = []
    for path in CONF.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if (
                not stripped
                or stripped.startswith(("#", "-", "_target_", "_partial_"))
                or stripped.endswith(":")
            ):
                continue
            if "#" not in stripped:
                missing.append(f"{path.relative_to(CONF)}: {stripped}")
    assert not missing, missing


def test_unknown_model_key_is_one_clear_error(compose_cfg):
    cfg = compose_cfg(["+model.weight=DEFAULT"])
    with pytest.raises(FtlabError, match=r"Unknown key model.weight\b.*weights"):
        checked(cfg, "model")
    cfg = compose_cfg(["+param_groups.backbone_lr_mul=0.5"])
    with pytest.raises(FtlabError, match=r"Unknown key param_groups.backbone_lr_mul\b.*backbone_lr_mult"):
        checked(cfg, "param_groups")


def test_wrong_type_names_the_key(compose_cfg):
    cfg = compose_cfg(["finetune.unfreeze_at_epoch=soon"])
    with pytest.raises(FtlabError, match="finetune"):
        checked(cfg, "finetune")


def test_unknown_data_key_and_source(compose_cfg):
    cfg = compose_cfg(["data=synthetic", "+data.trian_size=5"])
    with pytest.raises(FtlabError, match=r"data.trian_size.*train_size"):
        build_source(cfg.data, 0)
    cfg = compose_cfg(["data=synthetic"])
    with open_dict(cfg):
        cfg.data.source = "cifar100"
    with pytest.raises(FtlabError, match=r"cifar100.*cifar10"):
        build_source(cfg.data, 0)


def test_unknown_cifar_class_suggests(compose_cfg):
    cfg = compose_cfg(["data.classes=[cat,dgo]"])
    with pytest.raises(FtlabError, match=r"'dgo'.*dog"):
        build_source(cfg.data, 0)


def test_ftlab_keys_may_interpolate_other_parts_of_the_config(compose_cfg):
    arm = "param_groups.backbone_lr_mult=${arm_lr_mult}"
    cfg = compose_cfg(["+experiment=smoke", "+arm_lr_mult=0.25", arm])
    assert checked(cfg, "param_groups").backbone_lr_mult == 0.25


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=abc", "data.batch_size"),
        ("data.train_size=1.5", "data.train_size"),
        ("data.image_size=big", "data.image_size"),
        ("data.download=maybe", "data.download"),
    ],
)
def test_wrong_type_of_a_data_key_names_it(compose_cfg, override, key):
    cfg = compose_cfg([override])
    with pytest.raises(FtlabError, match=rf"{key}=.*wrong type"):
        build_source(cfg.data, 0)


def test_wrong_type_of_a_trainer_number_names_it(compose_cfg):
    cfg = compose_cfg(["trainer.max_epochs=abc"])
    with pytest.raises(FtlabError, match=r"trainer.max_epochs='abc'.*wrong type"):
        trainer_options(cfg.trainer)
    trainer_cfg = trainer_options(compose_cfg(["+trainer.limit_train_batches=0.5"]).trainer)
    assert trainer_cfg["limit_train_batches"] == 0.5  # int | float keys accept both


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("++loss.label_smothing=0.1", "Unknown key loss.label_smothing. Did you mean: label_smoothing?"),
        ("++ema.decy=0.99", "Unknown key ema.decy. Did you mean: decay?"),
        ("early_stopping.patience=soon", "early_stopping"),
    ],
)
def test_recipe_groups_reject_typos_and_wrong_types(compose_cfg, override, message):

    cfg = compose_cfg(["+experiment=smoke", override])
    with pytest.raises(FtlabError, match=re.escape(message)):
        check_config(cfg)
