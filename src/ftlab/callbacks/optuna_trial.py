"""A training job of a pruned Optuna sweep reports to its trial: the sweep's metric after every validation
epoch (`trial.report(value, step=epoch)`), and stops when the study's pruner says so.

ftlab's sweeper (`hydra_plugins/ftlab_optuna`) keeps the study in an RDB storage (SQLite by default) and
hands each job its trial through the job's environment (`hydra.job.env_set`: `FTLAB_OPTUNA_STORAGE`,
`FTLAB_OPTUNA_STUDY`, `FTLAB_OPTUNA_TRIAL`), so a job reaches its trial from any process a launcher runs it
in. A pruned job stops at the end of that epoch and marks its trial (system attribute `ftlab:pruned_at`);
the sweeper then records the trial as PRUNED instead of COMPLETE. The job itself never finishes the trial.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ftlab.errors import FtlabError, did_you_mean

log = logging.getLogger(__name__)

STORAGE_ENV, STUDY_ENV, TRIAL_ENV = "FTLAB_OPTUNA_STORAGE", "FTLAB_OPTUNA_STUDY", "FTLAB_OPTUNA_TRIAL"
PRUNED_ATTR = "ftlab:pruned_at"  # the epoch after which the job stopped its trial
PRUNERS = {  # hydra.sweeper.pruner: name -> Optuna pruner class
    "median": "MedianPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}


def build_pruner(spec: Any) -> Any:
    """An Optuna pruner from `hydra.sweeper.pruner`: null (none), a name (`median`, `successive_halving`,
    `hyperband`, with Optuna's defaults) or a mapping with `_target_` (an `optuna.pruners` class) and its
    options, as the `hydra/sweeper/pruner=<name>` configs write it (`none`: an empty mapping); a pruner
    object (Hydra instantiates the sweeper's nodes) is returned as it is."""
    import optuna

    if spec is None or (isinstance(spec, dict) and not spec):
        return None
    if isinstance(spec, optuna.pruners.BasePruner):
        return spec

    if isinstance(spec, str):
        spec = {"_target_": f"optuna.pruners.{PRUNERS[spec]}"} if spec in PRUNERS else {"_target_": spec}
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise FtlabError(
            f"hydra.sweeper.pruner={spec!r}: give one of {', '.join(PRUNERS)} (or null: no pruning), "
            "e.g. hydra/sweeper/pruner=median, whose options follow as hydra.sweeper.pruner.<option>=<value>."
        )
    options = {k: v for k, v in spec.items() if k != "_target_"}
    target = str(spec["_target_"])
    name = target.rsplit(".", 1)[-1]
    cls = getattr(optuna.pruners, name, None)
    if not target.startswith("optuna.pruners.") or cls is None:
        names = list(PRUNERS)
        raise FtlabError(
            f"hydra.sweeper.pruner={target!r} is not a pruner.{did_you_mean(target, names)} Choose one of "
            f"{', '.join(names)} (or null: no pruning)."
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise FtlabError(f"hydra.sweeper.pruner ({name}) options {options}: {err}.") from err


class OptunaTrialReport(Callback):
    """Reports `monitor` after each validation epoch to trial `trial` of the study and stops the fit when
    the study's pruner prunes it (rank 0 asks; every rank stops)."""

    def __init__(self, storage: str, study_name: str, trial: int, monitor: str, pruner: Any = None) -> None:
        self.storage, self.study_name, self.number, self.monitor = storage, study_name, int(trial), monitor
        self.pruner_spec = pruner
        self.trial: Any = None
        self.pruned_at: int | None = None

    @classmethod
    def from_environment(cls, monitor: str | None, pruner: Any) -> OptunaTrialReport | None:
        """The report of the trial this job runs, when ftlab's sweeper launched it with a pruner."""
        number = os.environ.get(TRIAL_ENV)
        if number is None or not monitor or pruner is None:
            return None
        return cls(os.environ[STORAGE_ENV], os.environ[STUDY_ENV], int(number), monitor, pruner)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        import optuna

        study = optuna.load_study(
            study_name=self.study_name, storage=self.storage, pruner=build_pruner(self.pruner_spec)
        )
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)
        self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero and self.trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                epoch = trainer.current_epoch
                self.trial.report(float(value), step=epoch)
                prune = bool(self.trial.should_prune())
                if prune:
                    self.pruned_at = epoch
                    self.trial.study._storage.set_trial_system_attr(self.trial._trial_id, PRUNED_ATTR, epoch)
                    log.info(
                        "optuna: trial %d pruned after epoch %d (%s %.4f)",
                        self.number,
                        epoch,
                        self.monitor,
                        float(value),
                    )
        if trainer.world_size > 1:
            prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            trainer.should_stop = True
