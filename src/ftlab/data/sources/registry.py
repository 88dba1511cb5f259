"""The data sources by name (`data.source=<name>`)."""

from __future__ import annotations

from ftlab.data.sources.cifar10 import Cifar10Source
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
}
