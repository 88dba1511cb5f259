"""Data: image sources, the preprocessing pipelines, and the DataModule that joins them."""

from ftlab.data.datamodule import ImageDataModule, build_datamodule, build_source

__all__ = ["ImageDataModule", "build_datamodule", "build_source"]
