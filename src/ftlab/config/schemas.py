"""Schemas of ftlab's own config groups, and the check that merges a group onto its schema before
anything heavy starts: unknown keys and wrong types become one clear error."""

from __future__ import annotations

import dataclasses
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


@dataclass
class FinetuneSchema:
    """`finetune=`: which stages train when, at which learning rate, with which BatchNorm policy."""

    strategy: str = "freeze_unfreeze"
    unfreeze_at_epoch: int | None = 1
    every: int = 1
    milestones: list[int] | None = None
    min_stage: str | None = None
    top_k: int = 1
    phases: list[Any] | None = None
    backbone_lr_mult: float = 0.1
    lr_decay: float = 1.0
    warmup_epochs: float = 0.0
    bn: str = "frozen"
    no_decay_norm_bias: bool = True
    lr_find: bool = False


@dataclass
class CacheConfig:
    """`features=`: where and how frozen-prefix activations are kept."""

    cache: str = "auto"
    dtype: str = "auto"
    views: int | None = None
    max_memory_gb: float = 4.0
    dir: str | None = None


SCHEMAS: dict[str, type] = {"model": ModelSchema, "finetune": FinetuneSchema, "features": CacheConfig}


def _resolved(cfg: DictConfig, key: str) -> Any:
    """`cfg[key]` with interpolations resolved in the context of the whole config."""
    node = cfg[key]
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def checked(cfg: DictConfig, key: str) -> Any:
    """`cfg[key]` merged onto its schema: unknown keys and wrong types become one clear error."""
    schema = SCHEMAS[key]
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), _resolved(cfg, key)))
    except ConfigKeyError as err:
        bad = str(getattr(err, "key", "") or "")
        fields = [f.name for f in dataclasses.fields(schema)]
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
