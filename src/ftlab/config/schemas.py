"""Schemas of ftlab's own config groups, and the check that merges a group onto its schema before
anything heavy starts: unknown keys, keys the chosen strategy ignores, moved keys and wrong types become
one clear error."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from ftlab.errors import FtlabError, did_you_mean


@dataclass
class ModelSchema:
    """`model=`: which backbone, with which weights."""

    backbone: str = MISSING
    weights: str | None = "DEFAULT"
    bn_momentum: float | None = None  # None: each BatchNorm keeps the momentum the backbone was built with


@dataclass
class FinetuneSchema:
    """`finetune=`: the keys every strategy has (which stages train when; BatchNorm of frozen stages)."""

    strategy: str = "freeze_unfreeze"
    bn: str = "auto"
    lr_find: bool = False  # recipes: LR range test at each phase boundary (callbacks/lr_finder.py)


@dataclass
class LinearProbeSchema(FinetuneSchema):
    """`finetune=linear_probe`: the backbone never trains."""


@dataclass
class FullSchema(FinetuneSchema):
    """`finetune=full`: every stage trains from epoch 0."""


@dataclass
class FreezeUnfreezeSchema(FinetuneSchema):
    """`finetune=freeze_unfreeze`: head only, then the whole backbone at `unfreeze_at_epoch`."""

    unfreeze_at_epoch: int | None = 1
    warmup_epochs: float = 0.0


@dataclass
class GradualSchema(FinetuneSchema):
    """`finetune=gradual`: one more stage from the top every `every` epochs (or at `milestones`)."""

    every: int = 1
    milestones: list[int] | None = None
    min_stage: str | None = None
    warmup_epochs: float = 0.0


@dataclass
class CustomSchema(FinetuneSchema):
    """`finetune=custom`: the user's own phases."""

    phases: list[Any] | None = None
    warmup_epochs: float = 0.0


@dataclass
class TopKSchema(FinetuneSchema):
    """`finetune=last_stages` (strategy top_k): the `top_k` stages nearest the head train, the rest never."""

    top_k: int = 1
    unfreeze_at_epoch: int = 1
    warmup_epochs: float = 0.0


FINETUNE_SCHEMAS: dict[str, type[FinetuneSchema]] = {
    "linear_probe": LinearProbeSchema,
    "full": FullSchema,
    "freeze_unfreeze": FreezeUnfreezeSchema,
    "gradual": GradualSchema,
    "custom": CustomSchema,
    "top_k": TopKSchema,
}


@dataclass
class ParamGroupsSchema:
    """`param_groups`: the optimizer's per-stage LR and weight-decay policy (the same for every strategy)."""

    backbone_lr_mult: float = 0.1
    lr_decay: float = 1.0
    no_decay_norm_bias: bool = True


@dataclass
class SchedulerSchema:
    """`scheduler=`: the torch LR scheduler (`factory`) and how Lightning steps it."""

    factory: Any = None
    interval: str = "epoch"
    monitor: str | None = None


@dataclass
class RuntimeSchema:
    """`runtime`: ftlab's options for how the network runs (not Lightning Trainer arguments)."""

    compile: Any = False  # false | true | {backend: ..., mode: ...}
    channels_last: bool = False


@dataclass
class CacheConfig:
    """`features=`: where and how frozen-prefix activations are kept."""

    cache: str = "auto"
    dtype: str = "auto"
    views: int | None = None
    max_memory_gb: float = 4.0
    dir: str | None = None


@dataclass
class LossSchema:
    """`loss`: cross-entropy options (off by default)."""

    label_smoothing: float = 0.0
    class_weights: Any = None  # null | auto | [w0, w1, ...]


@dataclass
class EmaSchema:
    """`ema`: exponential moving average of the weights (off while `decay` is null)."""

    decay: float | None = None
    warmup: bool = True


@dataclass
class EarlyStoppingSchema:
    """`early_stopping`: schedule-aware early stopping (off while `patience` is null)."""

    patience: int | None = None
    monitor: str = "val/acc"
    mode: str = "max"
    min_delta: float = 0.0


SCHEMAS: dict[str, type] = {
    "model": ModelSchema,
    "finetune": FinetuneSchema,
    "param_groups": ParamGroupsSchema,
    "scheduler": SchedulerSchema,
    "runtime": RuntimeSchema,
    "features": CacheConfig,
    "loss": LossSchema,
    "ema": EmaSchema,
    "early_stopping": EarlyStoppingSchema,
}

# Keys that moved when each config group got to own its keys: old key -> new key.
MOVED: dict[str, str] = {
    "trainer.compile": "runtime.compile",
    "trainer.channels_last": "runtime.channels_last",
    "finetune.backbone_lr_mult": "param_groups.backbone_lr_mult",
    "finetune.lr_decay": "param_groups.lr_decay",
    "finetune.no_decay_norm_bias": "param_groups.no_decay_norm_bias",
}
# Groups whose other keys moved one level down: scheduler.<argument> -> scheduler.factory.<argument>.
MOVED_INTO: dict[str, str] = {"scheduler": "factory"}


def moved_key(key: str) -> str | None:
    """The new name of an old config key such as `trainer.compile`, or None when `key` did not move."""
    if key in MOVED:
        return MOVED[key]
    group, _, rest = key.partition(".")
    if group in MOVED_INTO and rest:
        name, fields = rest.split(".")[0], [f.name for f in dataclasses.fields(SCHEMAS[group])]
        if name not in fields and not difflib.get_close_matches(name, fields, cutoff=0.75):  # not a typo
            return f"{group}.{MOVED_INTO[group]}.{rest}"
    return None


def moved_error(key: str, new: str) -> FtlabError:
    """One paragraph saying that `key` moved to `new`."""
    group = key.split(".")[0]
    why = {
        "trainer": "`trainer` holds only Lightning Trainer arguments; ftlab's own options live in `runtime`",
        "finetune": "the LR policy is the same for every strategy and lives in `param_groups`",
        "scheduler": "the torch scheduler's own arguments live in `scheduler.factory`, beside "
        "`scheduler.interval` and `scheduler.monitor`",
    }[group]
    return FtlabError(f"{key} has moved to {new} ({why}). Write {new}=<value> instead of {key}=<value>.")


def check_moved(keys: Iterable[str]) -> None:
    """Raise the "moved to" error for the first old key among `keys` (full dotted names)."""
    for key in keys:
        new = moved_key(key)
        if new is not None:
            raise moved_error(key, new)


def check_overrides(args: Iterable[str]) -> None:
    """The "moved to" error for command-line overrides of old keys, before Hydra rejects them tersely."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg and not arg.startswith("~"):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except HydraException:
            continue  # Hydra reports its own syntax errors
        check_moved([override.key_or_group])


def _resolved(cfg: DictConfig, key: str) -> Any:
    """`cfg[key]` with interpolations resolved in the context of the whole config ({} when absent)."""
    node = cfg.get(key)
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _schema_for(key: str, values: Any) -> type:
    """The schema of group `key`; for `finetune`, the chosen strategy's own schema."""
    if key != "finetune" or not isinstance(values, dict):
        return SCHEMAS[key]
    strategy = values.get("strategy", FinetuneSchema.strategy)
    if strategy not in FINETUNE_SCHEMAS:
        raise FtlabError(
            f"finetune.strategy={strategy!r} is not a strategy."
            f"{did_you_mean(str(strategy), FINETUNE_SCHEMAS)} "
            f"Strategies: {', '.join(FINETUNE_SCHEMAS)} (finetune=<name> picks one with its keys)."
        )
    return FINETUNE_SCHEMAS[strategy]


def _field_names(schema: type) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)}


def _ignored_key_error(bad: str, strategy: str, fields: list[str]) -> FtlabError:
    """One paragraph for a finetune key that the chosen strategy does not use."""
    owners = [s for s, schema in FINETUNE_SCHEMAS.items() if bad in _field_names(schema)]
    if not owners:
        return FtlabError(
            f"Unknown key finetune.{bad}.{did_you_mean(bad, fields)} Keys of finetune.strategy={strategy}: "
            f"{', '.join(fields)}."
        )
    return FtlabError(
        f"finetune.{bad} does nothing with finetune.strategy={strategy}: it is a key of "
        f"{' and '.join(owners)}. Remove it, or pick finetune={owners[0]}. Keys of {strategy}: "
        f"{', '.join(fields)}."
    )


def checked(cfg: DictConfig, key: str) -> Any:
    """`cfg[key]` merged onto its schema: moved keys, unknown keys and wrong types become one clear error."""
    values = _resolved(cfg, key)
    if isinstance(values, dict):
        check_moved(f"{key}.{k}" for k in values)
    schema = _schema_for(key, values)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except ConfigKeyError as err:
        bad = str(getattr(err, "key", "") or "")
        fields = [f.name for f in dataclasses.fields(schema)]
        if key == "finetune":
            raise _ignored_key_error(bad, values.get("strategy", FinetuneSchema.strategy), fields) from err
        raise FtlabError(
            f"Unknown key {key}.{bad}.{did_you_mean(bad, fields)} Valid keys: {', '.join(fields)}."
        ) from err
    except OmegaConfBaseException as err:
        msg = str(err).splitlines()[0]
        raise FtlabError(
            f"Invalid value in `{key}`: {msg} (full key: {key}.{getattr(err, 'full_key', '')})."
        ) from err


def checked_options(cfg: DictConfig, schema: type, command: str) -> Any:
    """The command's top-level options merged onto the dataclass `schema`: one clear error when wrong."""
    names = [f.name for f in dataclasses.fields(schema)]
    try:
        options = OmegaConf.masked_copy(cfg, [n for n in names if n in cfg])
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), options))
    except MissingMandatoryValue as err:
        key = str(getattr(err, "full_key", "") or "")
        raise FtlabError(f"{key} is required: python -m ftlab.{command} {key}=<value> ...") from err
    except ConfigKeyError as err:
        bad = str(getattr(err, "key", "") or "")
        raise FtlabError(
            f"Unknown option {bad}.{did_you_mean(bad, names)} Options: {', '.join(names)}."
        ) from err
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        raise FtlabError(f"Invalid value for {key}: {str(err).splitlines()[0]}") from err
