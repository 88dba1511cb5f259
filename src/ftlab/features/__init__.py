"""Cache of frozen-prefix activations: compute once per image, train the remaining stages on them."""

from ftlab.features.cache import FeatureCache, attach_feature_cache

__all__ = ["FeatureCache", "attach_feature_cache"]
