"""StudyConfig -> objective -> ``study.optimize``.

:func:`prepare` does every check and every expensive, trial-independent step once per worker
(load the data, move it to the device, build the space, open the store) *before* anything is
written; :func:`run_study` then creates or resumes the study and runs its trials.
"""

from __future__ import annotations

import gc
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from optuna_bs.data.datasets import Data
from optuna_bs.errors import ConfigError
from optuna_bs.search.edges import RangeWidening
from optuna_bs.search.ladder import BatchLadderSampler
from optuna_bs.search.space import BatchScalingSpace, OOMAwareSampler
from optuna_bs.study.auto import (
    AUTO_RANGES_ATTR,
    _check_range_test,
    auto_keys,
    auto_ranges,
    default_probe_batch_sizes,
)
from optuna_bs.study.config import StudyConfig, StudySection
from optuna_bs.study.plan import Plan, _check_micro_batch, make_plan
from optuna_bs.study.storage import DEFAULT_STORAGE, file_to_create, make_storage
from optuna_bs.study.workers import optimize_reconnecting
from optuna_bs.train._checkpoints import StudyCheckpoints
from optuna_bs.train.distributed import follow, lead, release, world
from optuna_bs.train.policies import CheckpointPolicy
from optuna_bs.train.sources import Datasets
from optuna_bs.train.state import check_creatable
from optuna_bs.train.trainer import FitResult, evaluate_split, fit, place_data
from optuna_bs.vocabulary import DEFAULTS, SAMPLERS, metric_name

_logger = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Prepared:
    """Everything a worker needs to run trials of one study, checked and ready: its
    :class:`~optuna_bs.study.plan.Plan`, the data on the device, the space with its resolved
    ranges, and the store."""

    plan: Plan
    data: Data | Datasets  # the plan's, on its device
    space: BatchScalingSpace
    storage: optuna.storages.BaseStorage
    study_name: str
    seed: int
    #: This study's checkpoints (one folder per store and study), or ``None`` for none.
    checkpoints: StudyCheckpoints | None = None
    #: Widens the ``"auto"`` ranges where the best trials pile at an edge; ``None`` without.
    widening: RangeWidening | None = None

    @property
    def config(self) -> StudyConfig:
        return self.plan.config

    @property
    def device(self) -> torch.device:
        return self.plan.device

    @property
    def memory_key(self) -> str:
        """What shares a GPU memory limit: trials that ran out of memory cap later ones."""
        return f"{self.config.model.name}|{self.config.train.precision}|{self.device.type}"

    def objective(self, trial: optuna.trial.BaseTrial) -> float | tuple[float, float]:
        """Train one trial's configuration; its best epoch's validation value (and cost)."""
        result = self.train(trial)[0]
        objectives = self.config.study.objectives
        if len(objectives) > 1:
            return result.best_value, float(getattr(result, objectives[1]))
        return result.best_value

    def train(
        self, trial: optuna.trial.BaseTrial, *, seed: int | None = None
    ) -> tuple[FitResult, torch.nn.Module]:
        """Sample the trial's hyperparameters, build a fresh model and fit it.

        A trial that retries a dead worker's trial resumes from that trial's last checkpoint.
        """
        hparams = self.current_space(trial).suggest(trial)
        # Recorded, so the trial can be replayed exactly (on the test split, say).
        seed = self.seed + trial.number if seed is None else seed
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("memory_key", self.memory_key)
        torch.manual_seed(seed)
        model = self.plan.build_model()
        own, resume = self._checkpoints(trial)
        if resume is not None:
            trial.set_user_attr("resumed_from_trial", resume[0])
        # The checkpoints are deleted by drop_finished_checkpoints, once the trial's end is
        # in the store: if that write fails (the database is down), the retry resumes.
        result = fit(
            model,
            self.data,
            hparams,
            trial=trial,
            seed=seed,
            checkpoint=CheckpointPolicy(own, resume_from=None if resume is None else resume[1]),
            **self.plan.fit_keywords(trial),
        )
        return result, model

    def current_space(self, trial: optuna.trial.BaseTrial) -> BatchScalingSpace:
        """The space the trial draws from: :attr:`space`, with the ranges the study holds now
        where ``"auto"`` ranges widen (:class:`~optuna_bs.search.RangeWidening`)."""
        study = getattr(trial, "study", None)
        if self.widening is None or study is None:
            return self.space
        ranges = self.widening.ranges(study)
        if any(tuple(getattr(self.space, k)) != tuple(v) for k, v in ranges.items()):
            self.space = self.space.with_ranges(**ranges)
        return self.space

    def drop_finished_checkpoints(self, study: optuna.Study, trial: FrozenTrial | None = None):
        """Callback, once a trial's end is committed (so a lost write leaves a retry its
        checkpoint): delete its checkpoint and those of the dead trials it retried. At the
        start of a run (no ``trial``): those of every trial the store holds as finished. With
        ``keep_best_checkpoint`` the best trial's stays, and each time the best changes the
        others go. Returns how many went."""
        if self.checkpoints is None:
            return 0
        keep_best = self.config.study.keep_best_checkpoint
        keep = getattr(best_trial(study), "number", None) if keep_best else None
        dropped = 0
        if trial is not None:  # this trial's (and its dead trials'), whatever its state
            dropped = self.checkpoints.drop(trial, keep_own=trial.number == keep)
            if not keep_best:  # the usual case: no walk over every trial
                return dropped
        dropped += self.checkpoints.drop_finished(study, keep=keep)
        if dropped and trial is None:
            _logger.info(
                "Removed %d checkpoint(s) of finished trials from %s.",
                dropped,
                self.checkpoints.folder,
            )
        return dropped

    def free_memory(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Callback: on a GPU, release the last trial's memory, so the next one starts clean.

        On a CPU, reference counting frees a trial's tensors as it ends; a full collection
        there finds nothing to free and costs about 0.3 s per trial once torch is loaded.
        """
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()

    def _checkpoints(
        self, trial: optuna.trial.BaseTrial
    ) -> tuple[Path | None, tuple[int, Path] | None]:
        """This trial's checkpoint file, and the dead trial it resumes with that trial's
        checkpoint (the newest one that is theirs:
        :func:`~optuna_bs.train._checkpoints.resumable`)."""
        if self.checkpoints is None or isinstance(trial, optuna.trial.FixedTrial):
            return None, None
        return self.checkpoints.path(trial.number), self.checkpoints.resumable(trial)


#: The longest study name Optuna's RDB schema stores.
MAX_STUDY_NAME = 512


def prepare(
    config: StudyConfig,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> Prepared:
    """Check the configuration against the data and open the store; nothing is written.

    Arguments given here override the study file's. ``"auto"`` ranges (``batch_size``,
    ``noise_scale``) are measured last, once every cheap check has passed, unless the study
    holds them already (:func:`_stored_ranges`); a store that would be a new file is created
    only after they are measured, so a failed probe leaves no empty database.

    Raises:
        ConfigError: If a value does not fit the data (a batch size >= N, say), or the data
            set or model is unknown or gets a bad option.
        StorageError: If the store cannot be opened.
    """
    plan = make_plan(config, device)  # data, the user's code and the device, checked
    data, cfg = plan.data, config.space
    if cfg.batch_size == "auto" and not isinstance(data, Data):
        raise ConfigError(
            "[space] batch_size = 'auto' measures the noise scale on in-memory tensors; with "
            "Datasets give a [low, high] range (optuna-bs noise-scale helps choose it)."
        )
    if cfg.noise_scale == "auto":
        _check_range_test(config, plan.optimizer_name)
    name = study_name or config.study.name
    if not name.strip():  # a study named '' would keep its checkpoints in the folder's root
        raise ConfigError(
            f"`--study-name` (or [study] name) must be a non-empty name, but got {name!r}."
        )
    if len(name) > MAX_STUDY_NAME:  # the stores' column: a traceback at create time else
        raise ConfigError(
            f"`--study-name` must be at most {MAX_STUDY_NAME} characters, but got {len(name)}."
        )
    url = storage if storage is not None else config.study.storage
    checkpoints = None
    if config.study.checkpoint_dir:
        url_or_default = DEFAULT_STORAGE if url is None else url
        checkpoints = StudyCheckpoints.of(config.study.checkpoint_dir, name, url_or_default)
        try:  # before the first trial, and without creating anything
            check_creatable(checkpoints.folder, "--checkpoint-dir")
        except ValueError as err:
            raise ConfigError(str(err)) from err
    # The space with the file's own ranges first: a bad batch range fails before measuring.
    auto = auto_keys(config)
    placeholder = {k: DEFAULTS[k] for k in ("noise_scale", "lr") if k in auto}
    probe_batches = default_probe_batch_sizes(data.n_train) if cfg.batch_size == "auto" else None
    space = plan.space(probe_batches or cfg.batch_size, **placeholder)
    _check_micro_batch(config, space)
    store = None
    if not (auto and file_to_create(url) is not None):
        store = _open_store(config, url)
    widening = None
    if auto:
        ranges = auto_ranges(plan, space, store, name)
        space = plan.space(**ranges)
        _check_micro_batch(config, space)
        micro = config.train.micro_batch_size  # B widens down to b at most: b divides B
        widening = RangeWidening(
            ranges,
            limits={"batch_size": (micro if isinstance(micro, int) else 1, data.n_train - 1)},
            powers_of_two=["batch_size"],
            params={"lr": space.rule.lr_param},  # a trial draws the reference lr
        )
    if store is None:
        store = _open_store(config, url)
    return Prepared(
        plan=plan,
        # Tensors move to the device once per worker, not once per trial.
        data=place_data(data, plan.device) if isinstance(data, Data) else data,
        space=space,
        storage=store,
        study_name=name,
        seed=config.study.seed if seed is None else seed,
        checkpoints=checkpoints,
        widening=widening,
    )


def _open_store(config: StudyConfig, url: str | None) -> optuna.storages.BaseStorage:
    return make_storage(
        url,
        heartbeat_interval=config.study.heartbeat_interval or None,
        max_retry=config.study.max_retry,
        synchronous_commit=config.study.synchronous_commit,
    )


def make_sampler(
    name: str,
    *,
    seed: int,
    n_startup_trials: int = 10,
    scale_param: str = "noise_scale",
    probe_edges: bool = False,
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (one of :data:`optuna_bs.vocabulary.SAMPLERS`).

    ``"ladder"`` is :class:`~optuna_bs.search.BatchLadderSampler` over TPE; ``scale_param``
    is the parameter it holds fixed while it climbs (the rule's, ``noise_scale`` by default);
    ``probe_edges`` makes its search go on while its best trials pile at an edge of a range
    that widens (``"auto"``).
    """
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    s = optuna.samplers  # the others take n_startup_trials; the ladder climbs over TPE
    kinds = dict(tpe=s.TPESampler, gp=s.GPSampler, cmaes=s.CmaEsSampler, ladder=s.TPESampler)
    if name not in kinds:
        raise ValueError(f"`sampler` must be one of {', '.join(SAMPLERS)}, but got {name!r}.")
    sampler = kinds[name](seed=seed, n_startup_trials=n_startup_trials)
    if name != "ladder":
        return sampler
    return BatchLadderSampler(sampler, seed=seed, scale_param=scale_param, probe_edges=probe_edges)


def make_pruner(
    name: str,
    *,
    warmup_epochs: int = StudySection.pruner_warmup_epochs,
    startup_trials: int = StudySection.pruner_startup_trials,
    max_epochs: int = 15,
):
    """The Optuna pruner called ``name`` (one of :data:`optuna_bs.vocabulary.PRUNERS`).

    ``"median"`` prunes a trial whose epoch is worse than the median of the trials before it
    at that epoch, after ``warmup_epochs`` epochs and once ``startup_trials`` trials have
    finished and reported that epoch. The defaults are the study file's; BENCHMARKS.md (P3)
    has the measurements behind them, and behind the more aggressive 1 and 2.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials,
            n_warmup_steps=warmup_epochs,
            n_min_trials=startup_trials,
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"`pruner` must be one of median, hyperband, none, but got {name!r}.")


def open_study(prepared: Prepared) -> optuna.Study:
    """Create the study, or load it by name, with the configured sampler and pruner."""
    cfg = prepared.config
    names = list(cfg.study.objectives) or [metric_name(cfg.train.metric)]
    study = optuna.create_study(
        storage=prepared.storage,
        study_name=prepared.study_name,
        directions=["minimize"] * len(names),
        load_if_exists=True,
        pruner=make_pruner(
            cfg.study.pruner,
            warmup_epochs=cfg.study.pruner_warmup_epochs,
            startup_trials=cfg.study.pruner_startup_trials,
            max_epochs=cfg.train.max_epochs,
        ),
    )
    n_before = len(study.get_trials(deepcopy=False))
    seed = prepared.seed + 7919 * n_before
    if not isinstance(prepared.storage, optuna.storages.InMemoryStorage) and not str(
        getattr(prepared.storage, "url", "")
    ).startswith("sqlite"):
        # A shared store may have workers started together with the same seed: keep their
        # samplers apart. (One worker on SQLite stays reproducible.)
        seed += 104729 * os.getpid()
    study.sampler = OOMAwareSampler(
        make_sampler(
            cfg.study.sampler,
            seed=seed % 2**32,
            n_startup_trials=cfg.study.n_startup_trials,
            scale_param=prepared.space.rule.lr_param,
            probe_edges=prepared.widening is not None,
        ),
        memory_key=prepared.memory_key,
    )
    if n_before:
        _logger.info("Joining study %r with %d trials.", prepared.study_name, n_before)
    else:
        with warnings.catch_warnings():  # experimental in Optuna, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    auto = auto_keys(cfg)
    if auto and AUTO_RANGES_ATTR not in study.user_attrs:
        # What "auto" measured, for every worker and resume after this one.
        space = prepared.space
        study.set_user_attr(AUTO_RANGES_ATTR, {k: list(getattr(space, k)) for k in auto})
    return study


def run_study(
    prepared: Prepared,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    max_trials: int | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    show_progress_bar: bool = False,
) -> optuna.Study | None:
    """Create the study, or resume it (same name and store), and run ``n_trials`` more.

    Every worker of a shared study calls this with the same study name and store. Under
    ``torchrun`` every rank calls it: rank 0 runs the study and returns it, and each other
    rank trains every trial with rank 0 (:mod:`optuna_bs.train.distributed`) and returns ``None``.
    A resumed study goes on counting its trials; its sampler is re-seeded with the number of trials
    already there, so it never proposes the first trials' configurations again.

    Args:
        prepared: From :func:`prepare`.
        n_trials: Trials this process runs (default: the study file's ``n_trials``).
        timeout: Seconds after which this process starts no new trial.
        max_trials: A cap on the study's finished (complete or pruned) trials, across all
            workers: this process stops once the study holds that many.
        callbacks: Optuna callbacks, called after each trial.
        show_progress_bar: Optuna's progress bar.
    """
    rank, size = world()
    if rank != 0:  # torchrun: rank 0 runs the study, this rank trains each trial with it
        follow(prepared.objective)
        return None
    objective = prepared.objective if size == 1 else lead(prepared.objective)
    try:
        cfg = prepared.config
        study = open_study(prepared)
        study.set_user_attr("space", repr(prepared.space))
        # What the report reads the study by: its rule, and the optimizer family it is for.
        study.set_user_attr("parameterisation", prepared.space.parameterisation)
        study.set_user_attr("optimizer", prepared.space.optimizer)
        prepared.drop_finished_checkpoints(study)  # what an earlier run left (a Ctrl-C, say)
        callbacks = [*callbacks, prepared.free_memory, prepared.drop_finished_checkpoints]
        if prepared.widening is not None:
            callbacks.append(prepared.widening)
        n_trials = cfg.study.n_trials if n_trials is None else n_trials
        if max_trials is not None:
            finished = len(study.get_trials(deepcopy=False, states=_FINISHED))
            if finished >= max_trials:
                _logger.info(
                    "The study holds %d finished trials of %d: nothing to do.",
                    finished,
                    max_trials,
                )
                return study
            callbacks.append(MaxTrialsCallback(max_trials, states=_FINISHED))
        timeout = cfg.study.timeout if timeout is None else timeout
        optimize_reconnecting(study, objective, n_trials, timeout, callbacks, show_progress_bar)
        return study
    finally:
        if size > 1:
            release()


def evaluate_best_on_test(prepared: Prepared, study: optuna.Study) -> float | None:
    """Retrain the study's best trial and return its error on the data's test split.

    The test split is touched here only, for one configuration chosen on validation
    (docs/design.md §7). The trial is re-run from its recorded parameters with its own seed, so on
    a CPU it reproduces the trial exactly. The value is stored as the study's user attrs
    ``test_<metric>`` and ``test_trial``.

    Returns:
        The test value, or ``None`` when the study has no complete trial.
    """
    best = best_trial(study)
    if best is None:
        return None
    replay = optuna.trial.FixedTrial(best.params, number=best.number)
    result, model = prepared.train(replay, seed=best.user_attrs.get("seed"))
    if abs(result.best_value - best.values[0]) > 1e-9:
        _logger.info(
            "Re-run of trial %d reached %.4f against %.4f (non-deterministic device kernels).",
            best.number,
            result.best_value,
            best.values[0],
        )
    metric = prepared.config.train.metric
    value = evaluate_split(model, prepared.data, "test", metric=metric, loss_fn=prepared.plan.loss)
    if value is None:
        _logger.info("The data has no test split: trial %d is not evaluated.", best.number)
        return None
    study.set_user_attr(f"test_{metric}", value)
    study.set_user_attr("test_trial", best.number)
    return value


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the lowest validation value (objective 0), or ``None``."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(done, key=lambda t: t.values[0], default=None)
