"""The data sources by name (`data=<name>`): one entry per source, which also registers its settings type
(`ftlab.data.settings.source_settings`), so `conf/data/<name>.yaml` can extend it."""

from __future__ import annotations

from ftlab.data.settings import DataSettings, source_settings
from ftlab.data.sources.cifar10 import Cifar10Source
from ftlab.data.sources.csv import CsvSource
from ftlab.data.sources.fashion_mnist import FashionMnistSource
from ftlab.data.sources.imagefolder import ImageFolderSource
from ftlab.data.sources.litdata import LitdataSource
from ftlab.data.sources.synthetic import SyntheticSource

SOURCES: dict[str, type] = {
    "cifar10": Cifar10Source,
    "imagefolder": ImageFolderSource,
    "synthetic": SyntheticSource,
    "fashion_mnist": FashionMnistSource,
    "litdata": LitdataSource,
    "csv": CsvSource,
}

SETTINGS: dict[str, type[DataSettings]] = {
    name: source_settings(name, cls, __name__) for name, cls in SOURCES.items()
}
globals().update({cls.__name__: cls for cls in SETTINGS.values()})  # importable: Cifar10Settings, ...
