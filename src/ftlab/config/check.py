"""The one check: a composed config (or a command line) becomes typed settings, or one `FtlabError`
paragraph that names the key: an unknown key with its close matches, a wrong type, a value out of range (the
settings' own `__post_init__`), a key that moved, an unknown group option."""

from __future__ import annotations

import copy
import dataclasses
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from ftlab.config.location import config_dir
from ftlab.config.moved import check_moved, moved_error, moved_key
from ftlab.config.registry import registered, registered_name, settings_type
from ftlab.errors import FtlabError, did_you_mean

T = TypeVar("T")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _type_name(hint: Any) -> str:
    options = (
        typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
    )
    names = [getattr(h, "__name__", str(h)).replace("NoneType", "null") for h in options]
    return " or ".join(names)


def _owners(group: str, key: str) -> list[str]:
    """The options of `group` whose settings have `key` (e.g. the strategies with `every`)."""
    return [name for name, cls in registered(group).items() if key in _field_names(cls)]


def _unknown_key(full_key: str, key: str, owner: type | None) -> FtlabError:
    """One paragraph for a key that the settings type `owner` does not have."""
    new = moved_key(full_key)
    if new is not None:
        return moved_error(full_key, new)
    group = full_key.rpartition(".")[0]
    fields = _field_names(owner) if owner is not None and dataclasses.is_dataclass(owner) else []
    where = registered_name(owner) if owner is not None else None
    if where is not None and group == where[0]:
        chosen, owners = where[1], _owners(where[0], key)
        if owners:
            return FtlabError(
                f"{full_key} does nothing with {group}={chosen}: it is a key of {' and '.join(owners)}. "
                f"Remove it, or pick {group}={owners[0]}. Keys of {group}={chosen}: {', '.join(fields)}."
            )
    where_text = f"Keys of {group}" if group else "Top-level keys"
    listing = f" {where_text}: {', '.join(fields)}." if fields else ""
    return FtlabError(f"Unknown key {full_key}.{did_you_mean(key, fields)}{listing}")


def _omegaconf_error(err: OmegaConfBaseException, value: Any = None) -> FtlabError:
    """An OmegaConf error (from Hydra's composition or from building settings) as one paragraph."""
    full_key = str(getattr(err, "full_key", "") or getattr(err, "key", "") or "")
    key = str(getattr(err, "key", "") or full_key.rpartition(".")[2])
    owner = getattr(err, "object_type", None)
    if isinstance(err, ConfigKeyError | ConfigAttributeError) and "not in" in str(err):
        return _unknown_key(full_key, key, owner if isinstance(owner, type) else None)
    if isinstance(err, MissingMandatoryValue):
        return FtlabError(f"{full_key} is required: give {full_key}=<value> on the command line.")
    if isinstance(err, ValidationError) and isinstance(owner, type) and dataclasses.is_dataclass(owner):
        hints = typing.get_type_hints(owner)
        if key in hints:
            shown = f"={value!r}" if value is not None else ""
            first = str(err).splitlines()[0]
            return FtlabError(
                f"{full_key}{shown} has the wrong type: expected {_type_name(hints[key])} ({first})."
            )
    first = str(err).splitlines()[0]
    return FtlabError(f"Invalid value for {full_key or 'the config'}: {first}")


def translate(err: BaseException) -> FtlabError | None:
    """The ftlab paragraph for a Hydra/OmegaConf error about the config; None for anything else."""
    if isinstance(err, FtlabError):
        return err
    if isinstance(err, MissingConfigException):
        return _missing_option(err)
    for item in _causes(err):
        if isinstance(item, FtlabError):
            return item
        if isinstance(item, OmegaConfBaseException):
            return _omegaconf_error(item, _override_value(err))
    if isinstance(err, HydraException):
        return FtlabError(str(err).splitlines()[0] + " " + " ".join(str(err).splitlines()[1:]))
    return None


def _override_value(err: BaseException) -> Any:
    """The value of the override Hydra names in "Error merging override key=value" (for the message)."""
    text = str(err)
    marker = "Error merging override "
    if marker in text:
        return text.split(marker, 1)[1].split("=", 1)[-1].strip()
    return None


def _missing_option(err: MissingConfigException) -> FtlabError:
    """`data=cifar100`: the group's options, with close matches."""
    text = str(err)
    name = str(getattr(err, "missing_cfg_file", "") or "")
    group, _, option = name.rpartition("/")
    options = list(getattr(err, "options", None) or [])
    if group and options:
        return FtlabError(
            f"{group}={option} is not an option of `{group}`.{did_you_mean(option, options)} "
            f"Options: {', '.join(options)} (conf/{group}/*.yaml)."
        )
    return FtlabError(" ".join(line.strip() for line in text.splitlines() if line.strip()))


def _check_known_keys(node: DictConfig, prefix: str) -> None:
    """Every key of a typed node is a field of its settings type (a `+key=` override can add others)."""
    owner = node._metadata.object_type
    fields = set(_field_names(owner)) if owner is not None and dataclasses.is_dataclass(owner) else None
    for key in node:
        full_key = f"{prefix}{key!s}"
        if fields is not None and key not in fields:
            raise _unknown_key(full_key, str(key), owner)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _check_known_keys(child, f"{full_key}.")


def _hydra_interpolations(raw: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value interpolates Hydra's runtime (`${hydra:runtime.output_dir}`)."""
    if isinstance(raw, dict):
        return [k for key, v in raw.items() for k in _hydra_interpolations(v, f"{prefix}{key}.")]
    return [prefix[:-1]] if isinstance(raw, str) and "${hydra:" in raw else []


def _outside_hydra(node: DictConfig) -> DictConfig:
    """A config composed with Hydra's compose API (tests, notebooks, `train(cfg)` in-process) has no Hydra
    run: values taken from Hydra's runtime (the run folder) become null instead of failing to resolve."""
    keys = _hydra_interpolations(OmegaConf.to_container(node, resolve=False))
    if not keys:
        return node
    node = copy.deepcopy(node)
    for key in keys:
        OmegaConf.update(node, key, None, force_add=True)
    return node


def to_settings(node: Any, cls: type[T]) -> T:
    """`node` (a composed DictConfig or a plain mapping) merged onto the settings type `cls` and built:
    interpolations resolved, every field typed and every `__post_init__` check run."""
    if isinstance(node, DictConfig) and not HydraConfig.initialized():
        node = _outside_hydra(node)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), node if node is not None else {})
        assert isinstance(merged, DictConfig)
        _check_known_keys(merged, "")
        settings = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, HydraException) as err:
        translated = translate(err)
        if translated is None:
            raise
        raise translated from err
    assert isinstance(settings, cls)
    return settings


def plain(node: Any) -> Any:
    """A config node (or anything) as plain Python containers, interpolations resolved."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def group_settings(group: str, values: Mapping[str, Any], name_key: str) -> Any:
    """Settings of `group` from a plain mapping (e.g. a run's saved `data` config), its option named by
    `values[name_key]` (e.g. `source`)."""
    cls = settings_type(group, str(values.get(name_key)), f"{group}.{name_key}")
    return to_settings(OmegaConf.create(dict(values)), cls)


# --- the command line, checked before Hydra runs the job -------------------------------------------------

HYDRA_FLAGS_WITH_VALUE = (
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--package",
    "-p",
)
NO_JOB_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")


def check_overrides(args: Iterable[str]) -> None:
    """The "moved to" error for command-line overrides of old keys, before Hydra rejects them tersely."""
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg and not arg.startswith("~"):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except HydraException:
            continue  # Hydra reports its own syntax errors
        check_moved([override.key_or_group])


def _first_job_overrides(args: Sequence[str]) -> list[str] | None:
    """The overrides of a command line's first job (a sweep `a=1,2` as `a=1`); None when it cannot be told
    (an interval or tag sweep, or Hydra flags that change which config is composed)."""
    parser = OverridesParser.create()
    out: list[str] = []
    for arg in args:
        if arg in ("-m", "--multirun") or arg.startswith("--"):
            if arg.split("=")[0] in HYDRA_FLAGS_WITH_VALUE + NO_JOB_FLAGS:
                return None
            continue
        if arg.startswith("-"):
            return None
        try:
            (override,) = parser.parse_overrides([arg])
        except HydraException:
            return None  # Hydra reports its own syntax errors
        if override.is_sweep_override():
            try:
                first = next(iter(override.sweep_string_iterator()))
            except Exception:
                return None
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(arg)
    return out


def check_command_line(config_name: str, args: Sequence[str] | None = None) -> None:
    """Compose `config_name` with the command line's overrides as the first job would, and raise the ftlab
    paragraph when Hydra or the settings would reject it. Hydra then composes for real."""
    args = list(sys.argv[1:] if args is None else args)
    check_overrides(args)
    overrides = _first_job_overrides(args)
    if overrides is None:
        return
    try:
        _check_known_keys(_compose(config_name, overrides), "")  # `+key=` can add keys no settings type has
    except (HydraException, OmegaConfBaseException) as err:
        translated = translate(err)
        if translated is not None:
            raise _with_neighbours(translated, err, config_name, overrides) from err


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _with_neighbours(
    error: FtlabError, err: BaseException, config_name: str, overrides: list[str]
) -> FtlabError:
    """An unknown key of a node without a settings type (`trainer`, `callbacks`: Lightning's and Hydra's
    `_target_` nodes) gets its close matches from the keys the node has without the mistaken override."""
    cause = next((c for c in _causes(err) if isinstance(c, ConfigAttributeError | ConfigKeyError)), None)
    if cause is None or not str(error).startswith("Unknown key ") or "Did you mean" in str(error):
        return error
    full_key = str(getattr(cause, "full_key", "") or "")
    parent, _, key = full_key.rpartition(".")
    rest = [o for o in overrides if not f"{o.lstrip('+~').split('=')[0]}.".startswith(f"{full_key}.")]
    try:
        node = OmegaConf.select(_compose(config_name, rest), parent) if parent else None
    except (HydraException, OmegaConfBaseException):
        return error
    if not isinstance(node, DictConfig):
        return error
    keys = [str(k) for k in node]
    return FtlabError(
        f"Unknown key {full_key}.{did_you_mean(key, keys)} Keys of {parent}: {', '.join(keys)}. To add a "
        f"key that is not there, write +{full_key}=<value>."
    )


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def run_config_values(path: Path, *keys: str) -> dict[str, Any]:
    """Top-level entries of a run's saved config (`<run>/.hydra/config.yaml`), each resolved on its own (a
    run folder's `paths.output_dir` names Hydra, which is not running now); absent keys are left out."""
    saved = OmegaConf.load(path)
    if not isinstance(saved, DictConfig):
        return {}
    return {key: plain(saved[key]) for key in keys if key in saved}


def command_options(cfg: DictConfig, cls: type[T], command: str) -> T:
    """A command's top-level options (`python -m ftlab.<command> key=value ...`) as the settings `cls`."""
    try:
        return to_settings(cfg, cls)
    except FtlabError as err:
        if "is required" in str(err):
            key = str(err).split(" ", 1)[0]
            raise FtlabError(f"{key} is required: python -m ftlab.{command} {key}=<value> ...") from err
        raise FtlabError(str(err).replace("Unknown key ", "Unknown option ", 1)) from err
