"""Where the Hydra configs live, and the schema check of ftlab's own keys before anything heavy starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ftlab.errors import FtlabError, did_you_mean
from ftlab.features.cache import CacheConfig


def config_dir() -> Path:
    """The `conf/` folder: shipped inside the wheel as `ftlab/conf`, else the checkout's `conf/`."""
    packaged = Path(str(resources.files("ftlab") / "conf"))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if checkout.is_dir():
        return checkout
    raise FtlabError(
        f"ftlab's Hydra configs are missing: neither {packaged} nor {checkout} exists. Reinstall ftlab."
    )


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
    phases: list[Any] | None = None
    backbone_lr_mult: float = 0.1
    lr_decay: float = 1.0
    warmup_epochs: float = 0.0
    bn: str = "frozen"
    no_decay_norm_bias: bool = True


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
