"""Backbones (torchvision and ftlab's own) and the LightningModule that trains them."""

from ftlab.models.registry import get_model, get_model_weights, list_models

__all__ = ["get_model", "get_model_weights", "list_models"]
