"""The sweeper's config (`hydra/sweeper=ftlab_optuna`): hydra-optuna-sweeper's keys plus `pruner`, and one
option of `hydra/sweeper/pruner` per Optuna pruner with its options and Optuna's defaults."""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import MISSING


@dataclass
class FtlabOptunaSweeperConf(OptunaSweeperConf):
    """hydra-optuna-sweeper's settings, resumable, with a pruner."""

    _target_: str = "hydra_plugins.ftlab_optuna.resumable.ResumableOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    # hydra/sweeper/pruner=none|median|successive_halving|hyperband (options: hydra.sweeper.pruner.<key>)
    pruner: Any = MISSING


@dataclass
class MedianPrunerConf:
    """Prune a trial whose best value so far is worse than the median of earlier trials at the same epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # trials that run in full before any pruning
    n_warmup_steps: int = 0  # epochs of each trial before it can be pruned
    interval_steps: int = 1  # epochs between pruning checks
    n_min_trials: int = 1  # trials that must have reached an epoch before it is judged


@dataclass
class SuccessiveHalvingPrunerConf:
    """Asynchronous successive halving: keep the top 1/reduction_factor of trials at each rung."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # epochs before the first rung (auto: from the first finished trial)
    reduction_factor: int = 4  # keep 1 in this many at each rung
    min_early_stopping_rate: int = 0  # rungs skipped before pruning starts
    bootstrap_count: int = 0  # trials that must reach a rung before it judges


@dataclass
class HyperbandPrunerConf:
    """Hyperband: several successive-halving brackets with different first rungs."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # epochs of the earliest rung
    max_resource: Any = "auto"  # epochs of a full trial (auto: from the first finished trial)
    reduction_factor: int = 3  # keep 1 in this many at each rung
    bootstrap_count: int = 0  # trials that must reach a rung before it judges


cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="ftlab_optuna", node=FtlabOptunaSweeperConf, provider="ftlab")
cs.store(group="hydra/sweeper/pruner", name="none", node={}, provider="ftlab")  # no pruning
for name, node in (
    ("median", MedianPrunerConf),
    ("successive_halving", SuccessiveHalvingPrunerConf),
    ("hyperband", HyperbandPrunerConf),
):
    cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="ftlab")
