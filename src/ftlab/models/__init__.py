"""Backbones (torchvision and ftlab's own), the LightningModule that trains them, and the preflight of
a run's assets (the data source's files and the backbone's weights)."""

from ftlab.models.registry import get_model, get_model_weights, list_models

__all__ = ["get_model", "get_model_weights", "list_models"]
