"""The TensorBoard logger of the `logger` group: in a sweep, runs named by their swept overrides
(`optimizer.lr=0.001,finetune=gradual`), not `0/tensorboard`. The layout TensorBoard opens on is the
callback `callbacks/tensorboard_layout.py`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import TensorBoardLogger


def _key(override: Any) -> str:
    return str(override.get_key_element()).lstrip("+~")


def swept_overrides() -> str:
    """In a Hydra multirun, this job's values of the swept keys (`optimizer.lr=0.001,finetune=gradual`);
    "" outside a sweep. Swept keys: sweep syntax on the sweep's command line (its `multirun.yaml`) and the
    sweeper's `params` (Optuna's search space)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    parser = OverridesParser.create()
    swept = {str(k).lstrip("+~") for k in (hydra_cfg.sweeper.get("params") or {})}
    multirun = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
    if multirun.is_file():
        sweep_args = list(yaml.safe_load(multirun.read_text())["hydra"]["overrides"]["task"])
        swept |= {_key(o) for o in parser.parse_overrides(sweep_args) if o.is_sweep_override()}
    job = parser.parse_overrides(list(hydra_cfg.overrides.task))
    parts = [f"{_key(o)}={o.get_value_element_as_str()}" for o in job if _key(o) in swept]
    return re.sub(r"[/\\]", "_", ",".join(parts))


class RunNamedTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger whose `version` folder, in a sweep, is named by the swept overrides.

    TensorBoard names a run by its folder below `--logdir`, so a sweep shows `0/tensorboard/lr=0.001,...`
    rather than `0/tensorboard`; a single run keeps its events in `tensorboard/` itself.
    """

    def __init__(self, save_dir: str, name: str = "tensorboard", version: str | None = None, **kwargs: Any):
        super().__init__(
            save_dir, name=name, version=swept_overrides() if version is None else version, **kwargs
        )
