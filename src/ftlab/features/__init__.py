"""Cache of frozen-prefix activations: compute once per image, train the remaining stages on them."""

from ftlab.features.cache import FeatureCache

__all__ = ["FeatureCache"]
