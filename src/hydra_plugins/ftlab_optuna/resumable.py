"""The Optuna sweeper, resumable: with a `storage`, `n_trials` counts the study's trials, not this run's.

hydra-optuna-sweeper runs `n_trials` more trials on every invocation, restarts its seeded sampler (so a
rerun suggests the first run's parameters again) and leaves a killed trial RUNNING forever. Running the
same command again after an interruption should instead finish the study: this sweeper counts the
finished trials, re-runs the interrupted ones with their parameters, reseeds the sampler past the trials
already drawn and numbers the new jobs after the old ones. It assumes no other sweep works on the same
study at the same time (their RUNNING trials would be taken as interrupted).

Pruning (`hydra.sweeper.pruner`: median, successive_halving, hyperband): each job reports the sweep's
metric per epoch to its trial and stops when the pruner says so (`ftlab.callbacks.optuna_trial`). The jobs
reach the study through an RDB storage (the given `storage`, or `<sweep dir>/optuna.db` when it is null)
and learn their trial number from their environment (`hydra.job.env_set`, added to each job's overrides),
so any launcher works. A job that stopped early is told to the study as PRUNED.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

from ftlab.callbacks.optuna_trial import PRUNED_ATTR, STORAGE_ENV, STUDY_ENV, TRIAL_ENV, build_pruner
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


def tell_pruned(study: Any) -> Any:
    """`study`, whose `tell` records a trial as PRUNED (its value: the last one its job reported) when its job
    marked it pruned (`ftlab.callbacks.optuna_trial`), instead of the COMPLETE the Optuna sweeper tells.
    The mark and the reports are read from the database itself: Optuna's cache in front of it holds the
    sweeper's own copy of the trials it asked for, which never sees what the jobs wrote."""
    import optuna

    tell, complete = study.tell, optuna.trial.TrialState.COMPLETE

    def tell_or_prune(trial: Any, values: Any = None, state: Any = complete) -> None:
        number = trial if isinstance(trial, int) else trial.number
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        stored = getattr(study._storage, "_backend", study._storage).get_trial(trial_id)
        pruned_at = stored.system_attrs.get(PRUNED_ATTR)
        if pruned_at is not None and state == complete:
            if stored.last_step is not None:  # what Optuna itself records for a pruned trial
                study._storage.set_trial_values(trial_id, [stored.intermediate_values[stored.last_step]])
            tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info("Trial %d pruned after epoch %d", number, pruned_at)
            return
        tell(trial, values, state)

    study.tell = tell_or_prune
    return study


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper whose study continues where an interrupted run of the same command stopped."""

    def __init__(
        self, storage: Any, study_name: str | None, n_trials: int, pruner: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(storage=storage, study_name=study_name, n_trials=n_trials, **kwargs)
        spec = OmegaConf.to_container(pruner, resolve=True) if OmegaConf.is_config(pruner) else pruner
        self.pruner = report_errors(build_pruner)(spec)  # a bad name: one paragraph, exit 2
        self.trials = _existing_trials(storage, study_name)
        self.total_trials = n_trials

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if self.pruner is not None:
            self._report_to_trials(config)
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

    def _report_to_trials(self, config: DictConfig) -> None:
        """Jobs report to their trials: an RDB storage they can open, and each job's trial in its
        environment (appended to the overrides the Optuna sweeper makes for each trial)."""
        impl = self.sweeper
        if impl.storage is None:  # an in-memory study is out of the jobs' reach
            folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
            folder.mkdir(parents=True, exist_ok=True)
            impl.storage = f"sqlite:///{folder.resolve() / 'optuna.db'}"
            log.info("Pruning: the study is kept in %s so that the jobs can report to it", impl.storage)
        impl.study_name = impl.study_name or "ftlab"
        configure = impl._configure_trials
        env = "hydra.job.env_set"

        def with_trial(trials: list[Any], *args: Any) -> Sequence[Sequence[str]]:
            overrides = configure(trials, *args)
            return [
                (
                    *job,
                    f"+{env}.{STORAGE_ENV}='{impl.storage}'",
                    f"+{env}.{STUDY_ENV}='{impl.study_name}'",
                    f"+{env}.{TRIAL_ENV}={trial.number}",
                )
                for job, trial in zip(overrides, trials, strict=True)
            ]

        impl._configure_trials = with_trial

    @contextlib.contextmanager
    def _pruned_study(self) -> Iterator[None]:
        """While the Optuna sweeper runs, the study it creates gets the pruner (Hyperband's brackets also
        steer the sampler) and `tell_pruned`."""
        import optuna

        create = optuna.create_study
        pruner = self.pruner

        def create_with_pruner(*args: Any, **kwargs: Any) -> Any:
            return tell_pruned(create(*args, **{**kwargs, "pruner": pruner}))

        optuna.create_study = create_with_pruner
        try:
            yield
        finally:
            optuna.create_study = create

    def sweep(self, arguments: list[str]) -> None:
        report_errors(self._check_search_space)(arguments)  # one paragraph and exit status 2, as ftlab's own
        if self.pruner is None:
            super().sweep(arguments)
            return
        with self._pruned_study():
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
