"""Plans the feature cache once for a whole schedule: which stage boundary to cache, for which epochs.

Everything a schedule does is known before epoch 0, so the frozen boundary of every epoch is known too
(`frozen_boundaries`). `plan` cuts the run into stretches: each caches its stages[:boundary] once (from
images) at the deepest boundary that stays frozen for the whole stretch, and the frozen stages above that
boundary run on the cached tensors. Inside a stretch, a deeper boundary that holds long enough is derived
from the stretch's own cache (running only the stages in between), never recomputed from images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ftlab.finetune.phases import Schedule


@dataclass(frozen=True)
class Segment:
    """Epochs [start, stop) of one split served from a cache of stages[:boundary].

    `parent` is None for a cache built from images, or the segment whose cache this one is derived from.
    """

    start: int
    stop: int
    boundary: int
    parent: Segment | None = None

    def covers(self, epoch: int) -> bool:
        return self.start <= epoch < self.stop


@dataclass
class Plan:
    """The segments of one split (derived ones after their parents) and the stretches left uncached."""

    views: int
    segments: list[Segment] = field(default_factory=list)
    skipped: list[Segment] = field(default_factory=list)  # would cost more than they save (auto)

    def segment(self, epoch: int) -> Segment | None:
        """The deepest segment serving `epoch`, or None (train on images)."""
        serving = [s for s in self.segments if s.covers(epoch)]
        return max(serving, key=lambda s: s.boundary) if serving else None

    def needed(self, epoch: int) -> set[Segment]:
        """The segments serving `epoch` or a later one, and every segment they derive from."""
        out: set[Segment] = set()
        for seg in self.segments:
            if seg.stop > epoch:
                node: Segment | None = seg
                while node is not None:
                    out.add(node)
                    node = node.parent
        return out


def frozen_boundaries(
    schedule: Schedule, stage_has_params: Sequence[bool], stage_names: Sequence[str], epochs: int
) -> list[int]:
    """Per epoch: how many leading stages are frozen and in eval mode (0 = nothing can be cached)."""
    if schedule.bn == "train":
        return [0] * epochs
    out = []
    for epoch in range(epochs):
        trainable = schedule.trainable(epoch)
        count = 0
        for name, has_params in zip(stage_names, stage_has_params, strict=True):
            if has_params and name in trainable:
                break
            count += 1
        out.append(count)
    return out


def _cumulative(costs: Sequence[float]) -> list[float]:
    """Cost of running stages[:b] for every b (index b), strictly increasing so deeper always costs more."""
    out = [0.0]
    for cost in costs:
        out.append(out[-1] + max(float(cost), 0.0) + 1e-9)
    return out


def plan(
    boundaries: Sequence[int],
    views: int,
    stage_costs: Sequence[float],
    forced: bool,
    free_from: Sequence[int] = (),
) -> Plan:
    """Segments for one split (`views` per image) given each epoch's frozen boundary.

    A cache of boundary b built for n epochs saves (n - views) x cost(stages[:b]); `auto` (forced=False)
    caches only stretches that save something, a forced mode (memory/disk) caches every epoch it can.
    `free_from` lists boundaries whose cache already exists (on disk), so building them costs nothing while
    their prefix still holds its initial weights.
    """
    cost = _cumulative(stage_costs)
    epochs = len(boundaries)
    result = Plan(views)
    start = 0
    while start < epochs:
        if boundaries[start] == 0:
            start += 1
            continue
        best: tuple[float, int, int] | None = None  # (saving, stop, boundary)
        lowest = boundaries[start]
        for stop in range(start + 1, epochs + 1):
            lowest = min(lowest, boundaries[stop - 1])
            if lowest == 0:
                break
            untouched = min(boundaries[: start + 1]) >= lowest
            build = 0 if (lowest in free_from and untouched) else views
            saving = (stop - start - build) * cost[lowest]
            if best is None or saving >= best[0]:  # ties: the longer stretch (fewer builds)
                best = (saving, stop, lowest)
        assert best is not None
        saving, stop, boundary = best
        segment = Segment(start, stop, boundary)
        if saving <= 0 and not forced:
            result.skipped.append(segment)
            start = stop
            continue
        result.segments.append(segment)
        result.segments.extend(_derived(segment, boundaries, views, cost))
        start = stop
    return result


def _derived(parent: Segment, boundaries: Sequence[int], views: int, cost: Sequence[float]) -> list[Segment]:
    """Deeper caches inside `parent` computed from its tensors, where that saves work (greedy, nested)."""
    out: list[Segment] = []
    start = parent.start
    while start < parent.stop:
        if boundaries[start] <= parent.boundary:
            start += 1
            continue
        best: tuple[float, int, int] | None = None
        lowest = boundaries[start]
        for stop in range(start + 1, parent.stop + 1):
            lowest = min(lowest, boundaries[stop - 1])
            if lowest <= parent.boundary:
                break
            saving = (stop - start - views) * (cost[lowest] - cost[parent.boundary])
            if best is None or saving >= best[0]:
                best = (saving, stop, lowest)
        if best is None or best[0] <= 0:
            start += 1
            continue
        _, stop, boundary = best
        child = Segment(start, stop, boundary, parent)
        out.append(child)
        out.extend(_derived(child, boundaries, views, cost))
        start = stop
    return out
