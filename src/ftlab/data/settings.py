"""`data=<source>`: the keys every source shares (how images are loaded and served) and, per source, the
settings type derived from the source's own dataclass, so a source's keys and defaults are written once."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from ftlab.config.registry import register, registered, registered_name
from ftlab.config.types import check_types
from ftlab.data.augment import parse_augment
from ftlab.errors import FtlabError, did_you_mean

PREPROCESS_ON = ("device", "cpu")
SAMPLERS = ("random", "balanced")


@dataclass
class DataSettings:
    """The keys of every data source: what the model sees and how the loaders serve it."""

    source: str = "???"  # data source name (set by the source; data=<name> picks one with its keys)
    image_size: int | None = None  # side the model sees; null = the weights' crop size (224 for most)
    batch_size: int = 32  # images per step
    num_workers: int = 0  # loader worker processes (files benefit from 2+; in-memory tensors from 0)
    pin_memory: Any = "auto"  # auto = on when CUDA is available | true | false
    persistent_workers: bool = True  # keep workers alive across epochs (when num_workers > 0)
    # train-time augmentation: none | hflip | randaugment | trivialaugment | random_resized_crop |
    # color_jitter, or a list
    augment: Any = "hflip"
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) on the device batch, soft targets (0 = off; e.g. 0.2)
    cutmix_alpha: float = 0.0  # CutMix Beta(alpha, alpha) (0 = off; with MixUp, one of the two per batch)
    sampler: str = "random"  # random | balanced (classes drawn equally often, with replacement; DDP-aware)
    # device: resize+normalise after transfer (uint8 travels); cpu: in the loader
    preprocess_on: str = "device"
    # file of image ids to leave out (one per line; ftlab.audit suspects_out= writes one)
    exclude: str | None = None
    folds: int | None = None  # k-fold cross-validation: K stratified folds of train ∪ val (null = off)
    fold: int | None = None  # with data.folds=K: the fold 0..K-1 that validates (sweep: data.fold='range(K)')

    source_class: ClassVar[type]  # the source this settings type builds (set by `source_settings`)

    def __post_init__(self) -> None:
        own = registered_name(type(self))
        if own is not None and self.source != own[1]:
            sources = registered("data")
            raise FtlabError(
                f"data.source={self.source!r} does not match the chosen data={own[1]}: a source comes with "
                "its "
                f"own keys, so pick it as a group, e.g. data=<name>.{did_you_mean(self.source, sources)} "
                f"Sources: {', '.join(sources)}."
            )
        parse_augment(self.augment)
        if isinstance(self.augment, list | tuple):
            self.augment = [str(a) for a in self.augment]
        if self.pin_memory not in ("auto", True, False):
            raise FtlabError(f"data.pin_memory={self.pin_memory!r}: give auto, true or false.")
        for key, value, options in (
            ("sampler", self.sampler, SAMPLERS),
            ("preprocess_on", self.preprocess_on, PREPROCESS_ON),
        ):
            if value not in options:
                raise FtlabError(
                    f"data.{key}={value!r} is not one of {', '.join(options)}.{did_you_mean(value, options)}"
                )
        for key in ("batch_size", "image_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise FtlabError(f"data.{key}={value} must be a positive number.")
        if self.num_workers < 0 or self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise FtlabError(
                "data.num_workers, data.mixup_alpha and data.cutmix_alpha must be >= 0 "
                f"(got {self.num_workers}, {self.mixup_alpha}, {self.cutmix_alpha})."
            )
        folds, fold = self.folds, self.fold
        if (folds is not None or fold is not None) and (
            folds is None or fold is None or folds < 2 or not 0 <= fold < folds
        ):
            raise FtlabError(
                f"data.folds={folds} data.fold={fold}: k-fold cross-validation needs both, with "
                "data.folds >= 2 and 0 <= data.fold < data.folds, e.g. data.folds=5 data.fold=0 (or a sweep "
                "over every fold: -m data.folds=5 data.fold='range(5)')."
            )
        if hasattr(type(self), "source_class"):
            values = {f: getattr(self, f) for f in self.source_fields()}
            check_types(values, typing.get_type_hints(self.source_class), prefix="data")

    @classmethod
    def source_fields(cls) -> list[str]:
        """The keys that belong to the source itself (passed to its constructor)."""
        shared = {f.name for f in dataclasses.fields(DataSettings)}
        return [f.name for f in dataclasses.fields(cls) if f.name not in shared]

    def loader_options(self) -> dict[str, Any]:
        """The DataModule's keyword arguments (every shared key but `source` and `image_size`)."""
        skip = ("source", "image_size")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DataSettings) if f.name not in skip}

    def build_source(self, seed: int) -> Any:
        """The source these settings describe; `seed` fixes its train/val split."""
        kwargs = {name: getattr(self, name) for name in self.source_fields()}
        return self.source_class(**kwargs, seed=seed)


def source_settings(name: str, source_class: type, module: str) -> type[DataSettings]:
    """Register `data=<name>`: a `DataSettings` subclass with the source dataclass's own init fields (all but
    `seed`, which is the run's) and their defaults; a field without a default is required (`???`). The type is
    named `<Source>Settings` in `module`, which must bind it under that name so a pickled config (Hydra's
    submitit and joblib launchers send the job's config that way) unpickles in a fresh process."""
    hints = typing.get_type_hints(source_class)
    fields: list[tuple[str, Any, Any]] = [("source", str, dataclasses.field(default=name))]
    for f in dataclasses.fields(source_class):
        if not f.init or f.name == "seed":
            continue
        if f.default is not dataclasses.MISSING:
            default = dataclasses.field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = dataclasses.field(default_factory=f.default_factory)
        else:
            default = dataclasses.field(default="???")
        fields.append((f.name, hints[f.name], default))
    cls = dataclasses.make_dataclass(
        source_class.__name__.removesuffix("Source") + "Settings", fields, bases=(DataSettings,)
    )
    cls.source_class = source_class  # type: ignore[attr-defined]
    cls.__doc__ = source_class.__doc__
    cls.__module__ = module
    return register("data", name)(cls)
