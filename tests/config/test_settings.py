"""Settings checked once, then typed: every shipped YAML extends its settings type and composes; a mistake
anywhere (command line or file) is one paragraph naming the key, before anything heavy starts."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ftlab.config.check import check_command_line, check_overrides
from ftlab.config.moved import MOVED
from ftlab.config.reference import field_comments
from ftlab.config.registry import SCHEMA_ROOT, groups, registered
from ftlab.data.settings import DataSettings
from ftlab.errors import FtlabError
from ftlab.finetune.strategies import FinetuneSettings, Gradual
from ftlab.training.settings import TrainSettings, load_settings
from tests.helpers.cli import CONF

SRC = Path(__file__).resolve().parents[2] / "src" / "ftlab"
TYPED_GROUPS = [
    "data",
    "model",
    "finetune",
    "features",
    "scheduler",
    "loss",
    "ema",
    "early_stopping",
    "paths",
]
OPTIONS = [(g, f.stem) for g in TYPED_GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(f.stem for f in (CONF / "experiment").glob("*.yaml"))
UNTYPED = ["trainer", "logger", "callbacks", "optimizer", "hparams_search", "debug"]  # Lightning/Hydra nodes


def _defaults_target(path: Path) -> str | None:
    """The `/ftlab_schema/<group>/<name>` a YAML file extends (its first defaults entry), if any."""
    raw = yaml.safe_load(path.read_text()) or {}
    for entry in raw.get("defaults", []):
        if isinstance(entry, str) and entry.startswith(f"/{SCHEMA_ROOT}/"):
            return entry.split("@")[0][len(SCHEMA_ROOT) + 2 :]
    return None


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_into_typed_settings(compose_cfg, experiment):
    settings = load_settings(compose_cfg([f"+experiment={experiment}"]))
    assert isinstance(settings, TrainSettings) and settings.task_name == experiment
    assert isinstance(settings.data, DataSettings) and isinstance(settings.finetune, FinetuneSettings)


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_group_option_is_its_registered_settings_type(compose_cfg, group, option):
    extra = (
        ["data.root=/nonexistent"]
        if (group, option) in (("data", "imagefolder"), ("data", "litdata"))
        else ["data.csv=/nonexistent.csv"]
        if (group, option) == ("data", "csv")
        else []
    )
    settings = load_settings(compose_cfg([f"{group}={option}", *extra]))
    target = _defaults_target(CONF / group / f"{option}.yaml")
    assert target is not None, f"conf/{group}/{option}.yaml does not extend a settings type"
    schema_group, name = target.split("/")
    assert schema_group == group
    assert type(getattr(settings, group)) is registered(group)[name]


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_a_yaml_writes_no_default_twice(group, option):
    """A group YAML sets only what differs from its settings' defaults, so the two cannot disagree."""
    path = CONF / group / f"{option}.yaml"
    schema_group, name = (_defaults_target(path) or "/").split("/")
    cls = registered(schema_group)[name]
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    raw = yaml.safe_load(path.read_text()) or {}
    repeated = [k for k, v in raw.items() if k != "defaults" and k in defaults and defaults[k] == v]
    assert not repeated, f"conf/{group}/{option}.yaml repeats the defaults of {cls.__name__}: {repeated}"


def test_every_settings_field_has_a_one_line_comment():
    missing = [
        f"{group}/{name}: {cls.__name__}.{f.name}"
        for group in groups()
        for name, cls in registered(group).items()
        for f in dataclasses.fields(cls)
        if not field_comments(cls).get(f.name)
    ]
    assert not missing, missing


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


def test_main_job_is_the_documented_one(compose_cfg):
    settings = load_settings(compose_cfg(["+experiment=cats_dogs_cars"]))
    assert (settings.model.backbone, settings.model.weights) == ("resnet18", "IMAGENET1K_V1")
    assert settings.data.classes == ["cat", "dog", "automobile"]  # type: ignore[attr-defined]
    assert (settings.data.train_size, settings.data.val_size, settings.data.image_size) == (1000, 600, 224)  # type: ignore[attr-defined]
    assert settings.trainer["max_epochs"] == 10 and settings.finetune.strategy == "last_stages"
    assert settings.data.build_source(settings.seed).classes == ["cat", "dog", "automobile"]


def test_defaults_come_from_the_settings_type(compose_cfg):
    settings = load_settings(compose_cfg(["finetune=gradual", "finetune.every=2"]))
    assert settings.finetune == Gradual(every=2)  # every other key: the dataclass default
    assert settings.param_groups.backbone_lr_mult == 0.1 and settings.runtime.channels_last == "auto"


def test_trainer_presets_instantiate(compose_cfg):
    for preset in ("default", "cpu", "ddp_cpu", "auto"):
        settings = load_settings(compose_cfg([f"trainer={preset}"]))
        options = settings.trainer_options
        options["precision"] = "32-true"
        trainer = instantiate(options, logger=False, enable_checkpointing=False)
        assert trainer.max_epochs == settings.trainer["max_epochs"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.weight=DEFAULT"], r"Unknown key model.weight\b.*Did you mean: weights"),
        (["+model.weight=DEFAULT"], r"Unknown key model.weight\b.*Did you mean: weights"),
        (
            ["param_groups.backbone_lr_mul=0.5"],
            r"Unknown key param_groups.backbone_lr_mul\b.*backbone_lr_mult",
        ),
        (
            ["finetune.unfreeze_at_epoch=soon"],
            r"finetune.unfreeze_at_epoch='soon' has the wrong type: expected int",
        ),
        (["data=synthetic", "+data.trian_size=5"], r"Unknown key data.trian_size.*Did you mean: train_size"),
        (["data.batch_size=abc"], r"data.batch_size='abc' has the wrong type: expected int"),
        (["data.train_size=1.5"], r"data.train_size='1.5' has the wrong type: expected int or null"),
        (["data.download=maybe"], r"data.download='maybe' has the wrong type: expected bool"),
        (["data=cifar100"], r"data=cifar100 is not an option of `data`. Did you mean: cifar10"),
        (["sed=1"], r"Unknown key sed. Did you mean: seed"),
        (["+sed=1"], r"Unknown key sed. Did you mean: seed"),
        (["loss.label_smothing=0.1"], r"Unknown key loss.label_smothing. Did you mean: label_smoothing"),
        (["++ema.decy=0.99"], r"Unknown key ema.decy. Did you mean: decay"),
        (["early_stopping.patience=soon"], r"early_stopping.patience='soon' has the wrong type"),
        (["scheduler=plateau", "scheduler.monitr=val/acc"], r"Unknown key scheduler.monitr\b.*monitor"),
        # nodes without a settings type (Lightning's): close matches from the keys the node has
        (
            ["trainer.max_epoch=3"],
            r"Unknown key trainer.max_epoch. Did you mean: max_epochs\?.*\+trainer.max_epoch=",
        ),
        (
            ["callbacks.model_checkpont.monitor=a"],
            r"Unknown key callbacks.model_checkpont. Did you mean: model_checkpoint",
        ),
    ],
)
def test_command_line_mistakes_are_one_paragraph(overrides, message):
    with pytest.raises(FtlabError, match=message):
        check_command_line("train", overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["finetune.bn=froze"], r"finetune.bn='froze' is not a BatchNorm policy. Did you mean: frozen"),
        (["data.sampler=balance"], r"data.sampler='balance' is not one of random, balanced"),
        (["data.batch_size=0"], r"data.batch_size=0 must be a positive number"),
        (["loss.label_smoothing=1.5"], r"loss.label_smoothing=1.5 must be in \[0, 1\)"),
        (["ema.decay=2"], r"ema.decay=2.0 must be between 0 and 1"),
        (["scheduler.interval=batch"], r"scheduler.interval='batch'.*epoch.*step"),
        (["runtime.compile={backnd: eager}"], r"runtime.compile=.*backend"),
        (["features.cache=ram"], r"features.cache='ram' is not one of"),
        (["trainer.max_epochs=abc"], r"trainer.max_epochs='abc' has the wrong type"),
        (["trainer.precision=bf17"], r"trainer.precision"),
        (
            ["finetune=full", "finetune.strategy=gradual"],
            r"does not match the chosen finetune=full.*finetune=gradual",
        ),
        (["resume=first"], r"resume='first': the only value is `last`"),
    ],
)
def test_values_out_of_range_are_one_paragraph(compose_cfg, overrides, message):
    cfg = compose_cfg(overrides)  # composes: the types fit; the settings' own check rejects the value
    with pytest.raises(FtlabError, match=message):
        load_settings(cfg)


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
        ("last_stages", "every=2", "gradual"),
    ],
)
def test_a_key_the_chosen_strategy_ignores_is_rejected(finetune, key, owner):
    name = key.split("=")[0]
    for override in (f"finetune.{key}", f"+finetune.{key}"):
        with pytest.raises(
            FtlabError, match=rf"finetune.{name} does nothing with finetune={finetune}.*pick finetune={owner}"
        ):
            check_command_line("train", [f"finetune={finetune}", override])


OLD_SCHEDULER_KEYS = ["scheduler.T_max", "scheduler.eta_min", "scheduler._target_"]


@pytest.mark.parametrize("old", [*MOVED, *OLD_SCHEDULER_KEYS])
def test_every_moved_key_names_its_new_home_in_a_file_and_on_the_command_line(compose_cfg, old):
    new = MOVED.get(old) or old.replace("scheduler.", "scheduler.factory.")
    for override in (f"{old}=1", f"+{old}=1", f"++{old}=1"):
        with pytest.raises(FtlabError, match=rf"{old} has moved to {new}\b"):
            check_overrides([override])
        with pytest.raises(FtlabError, match=rf"{old} has moved to {new}\b"):
            check_command_line("train", [override])
    if old.startswith("trainer."):  # an old experiment file: `trainer` is Lightning's (untyped) node
        with pytest.raises(FtlabError, match=rf"{old} has moved to {new}\b"):
            load_settings(compose_cfg([f"+{old}=1"]))


def test_new_keys_sweeps_and_hydra_overrides_pass_the_command_line_check():
    check_command_line("train", ["-m", "runtime.compile=true", "scheduler.factory.T_max=3", "seed=1,2"])
    check_command_line(
        "train", ["scheduler=none", "finetune=gradual", "hydra.run.dir=x", "trainer.max_epochs=2"]
    )
    check_command_line("train", ["-m", "data.batch_size=8,16", "hydra/launcher=joblib"])
    with pytest.raises(FtlabError, match=r"data.batch_size='big' has the wrong type"):
        check_command_line("train", ["-m", "data.batch_size=big,16"])


def test_ftlab_keys_may_interpolate_other_parts_of_the_config(compose_cfg):
    cfg = compose_cfg(["+experiment=smoke", "param_groups.backbone_lr_mult=${optimizer.lr}"])
    assert load_settings(cfg).param_groups.backbone_lr_mult == cfg.optimizer.lr


def test_gpu_presets_turn_channels_last_on_in_runtime(compose_cfg):
    for preset in ("gpu", "bf16", "fp16"):
        settings = load_settings(compose_cfg([f"trainer={preset}"]))
        assert settings.runtime.channels_last is True and settings.trainer["accelerator"] == "gpu"
        assert "compile" not in settings.trainer
    settings = load_settings(compose_cfg(["trainer=bf16", "runtime.channels_last=false"]))
    assert settings.runtime.channels_last is False
    assert load_settings(compose_cfg(["trainer=cpu"])).runtime.channels_last == "auto"


def test_runtime_compile_options(compose_cfg):
    assert load_settings(compose_cfg(["runtime.compile=true"])).runtime.compile_options() == {}
    options = load_settings(compose_cfg(["runtime.compile={backend: aot_eager}"])).runtime.compile_options()
    assert options == {"backend": "aot_eager"}


def test_each_strategy_gets_only_its_own_keys(compose_cfg):
    full = load_settings(compose_cfg(["finetune=full"])).finetune
    assert not hasattr(full, "warmup_epochs") and not hasattr(full, "every") and full.warmup == 0.0
    with pytest.raises(FtlabError, match=r"finetune=gradul is not an option.*Did you mean: gradual"):
        check_command_line("train", ["finetune=gradul"])


# Modules that may see the raw Hydra config: the one check, the command entry points, the function that
# builds a run, and Hydra's own plugins and callbacks (Hydra hands them a DictConfig).
RAW_CONFIG_ALLOWED = {
    "ftlab.config.check",
    "ftlab.training.run",
    "ftlab.callbacks.compare_runs",  # a Hydra callback: on_multirun_end(config: DictConfig)
}


def test_no_module_below_the_entry_points_reads_raw_config():
    offenders = []
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        if module.startswith("ftlab.cli.") or module in RAW_CONFIG_ALLOWED:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "omegaconf" or n.startswith("omegaconf.") for n in names):
                offenders.append(f"{module} imports omegaconf")
            if isinstance(node, ast.Name) and node.id == "DictConfig":
                offenders.append(f"{module} reads DictConfig")
    assert not offenders, sorted(set(offenders))


def test_settings_are_plain_dataclasses_that_omegaconf_can_type():
    for group in groups():
        for cls in registered(group).values():
            assert dataclasses.is_dataclass(cls)
            OmegaConf.structured(cls)  # every field type is one OmegaConf supports


def test_error_messages_name_one_key_in_one_paragraph(compose_cfg):
    with pytest.raises(FtlabError) as info:
        check_command_line("train", ["finetune=gradual", "finetune.evry=2"])
    text = str(info.value)
    assert "\n" not in text and re.search(r"finetune.evry.*Did you mean: every", text)


def test_a_composed_config_unpickles_in_a_fresh_process(compose_cfg, tmp_path):
    """Hydra's submitit and joblib launchers pickle the job's config: its typed nodes (a data source's derived
    settings type too) must load in a process that has not imported ftlab yet."""
    import pickle
    import subprocess
    import sys

    cfg = compose_cfg(["data=synthetic", "finetune=gradual", "data.batch_size=4"])
    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(cfg))
    code = (  # unpickle first: nothing of ftlab is imported before pickle resolves the settings types
        "import pickle, sys\n"
        "cfg = pickle.load(open(sys.argv[1], 'rb'))\n"
        "from ftlab.training.settings import load_settings\n"
        "s = load_settings(cfg)\n"
        "print(type(s.data).__name__, type(s.finetune).__name__, s.data.batch_size)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cfg.pkl")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["SyntheticSettings", "Gradual", "4"]


def test_a_config_composed_outside_a_hydra_run_loads_with_no_run_folder(compose_cfg):
    """`train(cfg)` / `evaluate(cfg)` in a notebook: Hydra's compose API gives no run, so the run folder that
    `paths.output_dir` takes from Hydra's runtime is null instead of an interpolation error."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_cfg(["+experiment=smoke"])
    OmegaConf.update(cfg, "paths.output_dir", "${hydra:runtime.output_dir}")
    saved, HydraConfig.instance().cfg = HydraConfig.instance().cfg, None
    try:
        settings = load_settings(cfg)
    finally:
        HydraConfig.instance().cfg = saved
    assert settings.paths.output_dir is None and settings.paths.log_dir == cfg.paths.log_dir
    assert OmegaConf.to_container(cfg.paths, resolve=False)["output_dir"] == "${hydra:runtime.output_dir}"
