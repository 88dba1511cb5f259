"""Deriving a deeper cache from a shallower one: only the stages between the two boundaries run, on the
parent's cached tensors, never the whole prefix again from images. A derived cache depends on this run's
parent cache, so it lives in memory (or, under `features.cache=auto`, is not kept when it does not fit)."""

from __future__ import annotations

import torch

from ftlab.features.build import EvalModes, precision_context
from ftlab.features.planner import Segment
from ftlab.features.store import Built, CachedFeatures, FeatureStore, Refused


def derive(store: FeatureStore, split: str, segment: Segment, parent: Built) -> tuple[Built, str] | Refused:
    """The segment's cache computed from its parent's tensors, and how it was made."""
    assert segment.parent is not None
    module, dm = store.module, store.datamodule
    stages = list(module.stages.values())[segment.parent.boundary : segment.boundary]
    source = parent.dataset.own_features()  # k-fold: the split's rows of the pool's cache
    dtype = source.dtype
    out = []
    with EvalModes(stages), torch.no_grad(), precision_context(module):
        for view in range(source.shape[0]):
            chunks = []
            for begin in range(0, source.shape[1], dm.batch_size):
                x = source[view, begin : begin + dm.batch_size].to(module.device).float()
                for stage in stages:
                    x = stage(x)
                chunks.append(x.to(dtype))
            out.append(torch.cat(chunks))
    features = torch.stack(out)
    total = features.numel() * features.element_size()
    if store.config.cache == "auto":
        where = store.placement(total, shareable=False)
        if isinstance(where, Refused):
            return where
    features = features if module.device.type == "cuda" else features.cpu()
    how = f"derived from the {list(module.stages)[segment.parent.boundary - 1]} cache"
    return Built(segment, CachedFeatures(features, parent.dataset.labels, split == "train"), "memory"), how
