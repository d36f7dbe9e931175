"""StudyConfig -> objective -> ``study.optimize``.

:func:`prepare` does every check and every expensive, trial-independent step once per worker
(load the data, move it to the device, build the space, open the store) *before* anything is
written; :func:`run_study` then creates or resumes the study and runs its trials.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
import torch

from optuna_bs.config import StudyConfig
from optuna_bs.data import Data, load_data
from optuna_bs.errors import ConfigError
from optuna_bs.models import build_model
from optuna_bs.space import BatchScalingSpace
from optuna_bs.storage import make_storage
from optuna_bs.trainer import FitResult, evaluate, fit, resolve_device

__all__ = [
    "Prepared",
    "prepare",
    "run_study",
    "make_sampler",
    "make_pruner",
    "evaluate_best_on_test",
]

_logger = logging.getLogger(__name__)

METRIC_NAMES = {"error": "val_error", "loss": "val_loss"}


@dataclass
class Prepared:
    """Everything a worker needs to run trials of one study, checked and ready."""

    config: StudyConfig
    data: Data
    space: BatchScalingSpace
    device: torch.device
    storage: optuna.storages.BaseStorage
    study_name: str
    seed: int

    def objective(self, trial: optuna.trial.BaseTrial) -> float:
        """Train one trial's configuration; its best epoch's validation value."""
        return self.train(trial)[0].best_value

    def train(self, trial: optuna.trial.BaseTrial) -> tuple[FitResult, torch.nn.Module]:
        """Sample the trial's hyperparameters, build a fresh model and fit it."""
        hparams = self.space.suggest(trial)
        train = self.config.train
        # Seeded by the trial number: a trial re-run (resumed or tested) sees the same init.
        seed = self.seed + trial.number
        torch.manual_seed(seed)
        model = build_model(
            self.config.model.name,
            self.data.input_shape,
            self.data.n_outputs,
            **self.config.model.options,
        )
        result = fit(
            model,
            self.data,
            hparams,
            trial=trial,
            max_epochs=train.max_epochs,
            patience=train.patience or None,
            min_delta=train.min_delta,
            device=self.device,
            metric=train.metric,
            optimizer=train.optimizer,
            weight_decay=train.weight_decay,
            seed=seed,
        )
        return result, model


def prepare(
    config: StudyConfig,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> Prepared:
    """Check the configuration against the data and open the store; nothing is written.

    Arguments given here override the study file's.

    Raises:
        ConfigError: If a value does not fit the data (a batch size >= N, say), or the data
            set or model is unknown or gets a bad option.
        StorageError: If the store cannot be opened.
    """
    try:
        data = load_data(
            config.data.name,
            seed=config.data.seed,
            val_fraction=config.data.val_fraction,
            **config.data.options,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[data] {err}") from err
    try:
        space = BatchScalingSpace(
            config.space.parameterisation,
            n_train=data.n_train,
            batch_size=config.space.batch_size,
            noise_scale=config.space.noise_scale,
            momentum=config.space.momentum,
            lr=config.space.lr,
            reference_batch_size=config.space.reference_batch_size,
            alpha=config.space.alpha,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[space] {err} (the data has n_train={data.n_train})") from err
    try:
        build_model(config.model.name, data.input_shape, data.n_outputs, **config.model.options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model] {err}") from err
    if config.train.metric == "error" and data.task != "classification":
        raise ConfigError(
            f"[train] `metric` is 'error', but {data.name!r} is a {data.task} task: use 'loss'."
        )
    try:
        resolved = resolve_device(device or config.train.device)
    except ValueError as err:
        raise ConfigError(f"[train] {err}") from err
    return Prepared(
        config=config,
        data=data.to(resolved),  # once per worker, not once per trial
        space=space,
        device=resolved,
        storage=make_storage(storage if storage is not None else config.study.storage),
        study_name=study_name or config.study.name,
        seed=config.study.seed if seed is None else seed,
    )


def make_sampler(
    name: str, *, seed: int, n_startup_trials: int = 10
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (one of :data:`optuna_bs.config.SAMPLERS`)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup_trials)
    raise ValueError(f"`sampler` must be one of tpe, random, gp, cmaes, but got {name!r}.")


def make_pruner(name: str, *, warmup_epochs: int = 3, max_epochs: int = 15):
    """The Optuna pruner called ``name`` (one of :data:`optuna_bs.config.PRUNERS`)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"`pruner` must be one of median, hyperband, none, but got {name!r}.")


def run_study(
    prepared: Prepared,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    show_progress_bar: bool = False,
) -> optuna.Study:
    """Create the study, or resume it (same name and store), and run ``n_trials`` more.

    A resumed study goes on counting its trials; its sampler is re-seeded with the number of
    trials already there, so it never proposes the first trials' configurations again.
    """
    cfg = prepared.config
    study = optuna.create_study(
        storage=prepared.storage,
        study_name=prepared.study_name,
        direction="minimize",
        load_if_exists=True,
        pruner=make_pruner(
            cfg.study.pruner,
            warmup_epochs=cfg.study.pruner_warmup_epochs,
            max_epochs=cfg.train.max_epochs,
        ),
    )
    n_before = len(study.trials)
    study.sampler = make_sampler(
        cfg.study.sampler,
        seed=prepared.seed + 7919 * n_before,
        n_startup_trials=cfg.study.n_startup_trials,
    )
    if n_before:
        _logger.info("Resuming study %r with %d trials.", prepared.study_name, n_before)
    else:
        with warnings.catch_warnings():  # experimental in Optuna, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAMES[cfg.train.metric]])
    study.set_user_attr("space", repr(prepared.space))
    study.optimize(
        prepared.objective,
        n_trials=cfg.study.n_trials if n_trials is None else n_trials,
        timeout=cfg.study.timeout if timeout is None else timeout,
        callbacks=list(callbacks),
        show_progress_bar=show_progress_bar,
    )
    return study


def evaluate_best_on_test(prepared: Prepared, study: optuna.Study) -> float | None:
    """Retrain the study's best trial and return its error on the data's test split.

    The test split is touched here only, for one configuration chosen on validation
    (DESIGN §8). The trial is re-run from its recorded parameters with its own seed, so on
    a CPU it reproduces the trial exactly. The value is stored as the study's user attrs
    ``test_<metric>`` and ``test_trial``.

    Returns:
        The test value, or ``None`` when the study has no complete trial.
    """
    try:
        best = study.best_trial
    except ValueError:
        return None
    replay = optuna.trial.FixedTrial(best.params, number=best.number)
    result, model = prepared.train(replay)
    if abs(result.best_value - best.value) > 1e-9:
        _logger.info(
            "Re-run of trial %d reached %.4f against %.4f (non-deterministic device kernels).",
            best.number,
            result.best_value,
            best.value,
        )
    metric = prepared.config.train.metric
    value = evaluate(
        model, prepared.data.x_test, prepared.data.y_test, metric=metric, task=prepared.data.task
    )
    study.set_user_attr(f"test_{metric}", value)
    study.set_user_attr("test_trial", best.number)
    return value
