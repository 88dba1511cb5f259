"""The Optuna sweeper, resumable: with a `storage`, `n_trials` counts the study's trials, not this run's.

hydra-optuna-sweeper runs `n_trials` more trials on every invocation, restarts its seeded sampler (so a
rerun suggests the first run's parameters again) and leaves a killed trial RUNNING forever. Running the
same command again after an interruption should instead finish the study: this sweeper counts the
finished trials, re-runs the interrupted ones with their parameters, reseeds the sampler past the trials
already drawn and numbers the new jobs after the old ones. It assumes no other sweep works on the same
study at the same time (their RUNNING trials would be taken as interrupted).
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

from ftlab.errors import FtlabError, report_errors

log = logging.getLogger(__name__)

FINISHED = ("COMPLETE", "PRUNED")


def _existing_trials(storage: Any, study_name: str | None) -> list[Any]:
    """The trials already stored for `study_name` (none when the storage or study does not exist yet)."""
    if not storage or not study_name:
        return []
    import optuna

    names = {s.study_name for s in optuna.get_all_study_summaries(storage=storage)}
    if study_name not in names:
        return []
    return list(optuna.load_study(study_name=study_name, storage=storage).trials)


def _reseed(sampler: Any, seed: int) -> None:
    """Seed the sampler's random state (and its start-up random sampler's): Optuna has no public setter."""
    import numpy as np

    parts: list[Any] = [sampler, getattr(sampler, "_random_sampler", None)]
    for part in parts:
        if isinstance(getattr(part, "_rng", None), np.random.RandomState):
            part._rng = np.random.RandomState(seed)


_ABSENT = object()


def _absent_keys(config: DictConfig, overrides: list[str]) -> list[str]:
    """Searched keys that the composed config does not have (a `+key` adds one and is not checked)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default=None) or {})
    absent = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if override.is_add() or override.is_force_add() or override.package is not None or key in groups:
            continue
        if OmegaConf.select(config, key, default=_ABSENT) is _ABSENT:
            absent.append(key)
    return absent


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper whose study continues where an interrupted run of the same command stopped."""

    def __init__(self, storage: Any, study_name: str | None, n_trials: int, **kwargs: Any) -> None:
        super().__init__(storage=storage, study_name=study_name, n_trials=n_trials, **kwargs)
        self.trials = _existing_trials(storage, study_name)
        self.total_trials = n_trials

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if not self.trials:
            return
        import optuna

        impl = self.sweeper
        seed = OmegaConf.select(config, "hydra.sweeper.sampler.seed")
        if seed is not None:  # the first run's seed would suggest the first run's parameters again
            _reseed(impl.sampler, int(seed) + len(self.trials))
        study = optuna.load_study(study_name=str(impl.study_name), storage=str(impl.storage))
        finished = [t for t in self.trials if t.state.name in FINISHED]
        interrupted = [t for t in self.trials if t.state.name == "RUNNING"]
        for trial in interrupted:  # killed mid-trial: mark failed, run again with the same parameters
            study._storage.set_trial_state(trial._trial_id, optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)
        impl.n_trials = max(0, self.total_trials - len(finished))
        impl.job_idx = len(self.trials)
        log.info(
            "Study %r has %d finished trials of %d (%d interrupted, run again): running %d more.",
            impl.study_name,
            len(finished),
            self.total_trials,
            len(interrupted),
            impl.n_trials,
        )

    def sweep(self, arguments: list[str]) -> None:
        report_errors(self._check_search_space)(arguments)  # one paragraph and exit status 2, as ftlab's own
        super().sweep(arguments)

    def _check_search_space(self, arguments: list[str]) -> None:
        """Every searched key must exist before the first trial: Hydra would only say "not in struct"."""
        impl = self.sweeper
        assert impl.config is not None
        searched = impl._parse_sweeper_params_config() + list(arguments)
        absent = _absent_keys(impl.config, searched)
        if absent:
            strategy = OmegaConf.select(impl.config, "finetune.strategy", default=None)
            raise FtlabError(
                f"The Optuna search space (hydra.sweeper.params or the command line) sets "
                f"{', '.join(absent)}, which the composed config has no key for"
                + (f" (finetune.strategy={strategy} does not use it)" if strategy else "")
                + ". Choose a config where every searched key exists (e.g. finetune=freeze_unfreeze for "
                "finetune.unfreeze_at_epoch), or give the sweep your own search space without that key "
                "(a copy of conf/hparams_search/optuna.yaml)."
            )
