"""Hydra callback: at the end of a multirun, print the sweep's comparison table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ftlab.errors import FtlabError
from ftlab.runs.report import DEFAULT_TARGET, Run, epoch_table, load_runs, render


class CompareRuns(Callback):
    """Hydra callback: at the end of a multirun, print the report and the per-epoch side-by-side table.

    With `reference` (an override such as `model.weights=null`), the target accuracy is the mean final val
    accuracy of the runs having it, so the table answers "when does each run reach what the reference
    ends with?"; otherwise `target` is used.
    """

    def __init__(
        self, group_by: str | None = None, reference: str | None = None, target: float | None = None
    ) -> None:
        self.group_by, self.reference, self.target = group_by, reference, target

    def reference_target(self, runs: Sequence[Run]) -> tuple[float | None, str]:
        """The target accuracy and a sentence saying where it comes from."""
        if self.reference is None:
            return self.target, "" if self.target is None else f"target: {self.target:.4f}"
        key, _, value = self.reference.partition("=")
        members = [r for r in runs if r.overrides.get(key) == value and r.val_acc]
        if not members:
            return self.target, f"no run has {self.reference}"
        finals = [r.val_acc[max(r.val_acc)] for r in members]
        target = sum(finals) / len(finals)
        return target, (
            f"target: {target:.4f} = final val/acc of {self.reference} "
            f"(epoch {max(max(r.val_acc) for r in members)}, mean of {len(members)} runs)"
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            runs = load_runs(sweep_dir)
        except FtlabError as err:
            print(f"ftlab.report: {err}", file=sys.stderr)
            return
        target, source = self.reference_target(runs)
        print(f"\nSweep {sweep_dir}: {len(runs)} runs\n")
        print(render(runs, "markdown", target if target is not None else DEFAULT_TARGET))
        print("\nval/acc per epoch" + (f" ({source})" if source else "") + ":\n")
        print(epoch_table(runs, target, self.group_by))
        print(f"\n(python -m ftlab.report {sweep_dir} --plot curves.png draws the curves)")
