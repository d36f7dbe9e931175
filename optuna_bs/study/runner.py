"""StudyConfig -> objective -> ``study.optimize``.

:func:`prepare` does every check and every expensive, trial-independent step once per worker
(load the data, move it to the device, build the space, open the store) *before* anything is
written; :func:`run_study` then creates or resumes the study and runs its trials.
"""

from __future__ import annotations

import gc
import inspect
import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from optuna_bs.data.datasets import Data, load_data
from optuna_bs.data.models import build_model
from optuna_bs.errors import ConfigError
from optuna_bs.factories import import_object, is_spec
from optuna_bs.measure.noise import (
    RangeTest,
    estimate_noise_scale,
    lr_range_test,
    recommend_batch_sizes,
    recommend_noise_scales,
)
from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.search.ladder import BatchLadderSampler
from optuna_bs.search.space import BatchScalingSpace, OOMAwareSampler
from optuna_bs.study.config import StudyConfig, StudySection
from optuna_bs.study.storage import DEFAULT_STORAGE, file_to_create, make_storage
from optuna_bs.study.workers import optimize_reconnecting
from optuna_bs.train._checkpoints import checkpoint_file, resumable, retried_trials, study_folder
from optuna_bs.train.distributed import follow, lead, release, world
from optuna_bs.train.schedules import Schedule, make_schedule
from optuna_bs.train.sources import Datasets
from optuna_bs.train.state import check_creatable
from optuna_bs.train.trainer import FitResult, evaluate_split, fit, place_data, resolve_device
from optuna_bs.vocabulary import DEFAULTS, SAMPLERS, metric_name

__all__ = [
    "Prepared",
    "prepare",
    "run_study",
    "open_study",
    "best_trial",
    "load_data_and_model",
    "make_sampler",
    "make_pruner",
    "evaluate_best_on_test",
    "fit_arguments",
    "trial_schedule",
]

_logger = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Prepared:
    """Everything a worker needs to run trials of one study, checked and ready."""

    config: StudyConfig
    data: Data | Datasets
    space: BatchScalingSpace
    device: torch.device
    storage: optuna.storages.BaseStorage
    study_name: str
    seed: int
    #: This study's checkpoints (one folder per store and study), or ``None`` for none.
    checkpoint_folder: Path | None = None

    @property
    def memory_key(self) -> str:
        """What shares a GPU memory limit: trials that ran out of memory cap later ones."""
        train = self.config.train
        return f"{self.config.model.name}|{train.precision}|{self.device.type}"

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
        hparams = self.space.suggest(trial)
        # Recorded, so the trial can be replayed exactly (on the test split, say).
        seed = self.seed + trial.number if seed is None else seed
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("memory_key", self.memory_key)
        torch.manual_seed(seed)
        model = _build_model(self.config, self.data)
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
            device=self.device,
            seed=seed,
            checkpoint=own,
            resume_from=None if resume is None else resume[1],
            **fit_arguments(self.config, trial),
        )
        return result, model

    def drop_finished_checkpoints(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Callback: the trial's end is committed, so its checkpoint and those of the dead
        trials it retried can go (the best's stays with ``keep_best_checkpoint``)."""
        keep = trial.state == TrialState.COMPLETE and self.config.study.keep_best_checkpoint
        self._drop_checkpoints(trial, keep_own=keep)

    def drop_orphan_checkpoints(self, study: optuna.Study) -> int:
        """Delete the checkpoints an earlier run left of trials the store holds as finished
        (a Ctrl-C, or a store failure, between a trial's end and its callbacks): a complete
        or pruned trial's, and those of the dead trials a finished trial retried. A failed
        trial's stays while a retry may still resume it. Returns how many went."""
        if self.checkpoint_folder is None or not self.checkpoint_folder.is_dir():
            return 0
        best = best_trial(study) if self.config.study.keep_best_checkpoint else None
        done = (TrialState.COMPLETE, TrialState.PRUNED)
        dropped = sum(
            self._drop_checkpoints(t, keep_own=best is not None and t.number == best.number)
            for t in study.get_trials(deepcopy=False, states=done)
        )
        if dropped:
            _logger.info(
                "Removed %d checkpoint(s) of finished trials from %s.",
                dropped,
                self.checkpoint_folder,
            )
        return dropped

    def _drop_checkpoints(self, trial: FrozenTrial, *, keep_own: bool) -> int:
        """Delete the checkpoints of the dead trials ``trial`` retried, and its own unless
        ``keep_own``; return how many there were."""
        folder = self.checkpoint_folder
        if folder is None:
            return 0
        dropped = 0
        for number in retried_trials(trial) + ([] if keep_own else [trial.number]):
            path = checkpoint_file(folder, number)
            if path.exists():
                path.unlink(missing_ok=True)
                dropped += 1
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
        folder = self.checkpoint_folder
        if folder is None or isinstance(trial, optuna.trial.FixedTrial):
            return None, None
        return checkpoint_file(folder, trial.number), resumable(trial, folder)

    def drop_checkpoints_but_best(self, study: optuna.Study, _: FrozenTrial) -> None:
        """Callback: delete the checkpoints of complete trials other than the best."""
        folder = self.checkpoint_folder
        if folder is None:
            return
        best = best_trial(study)
        if best is None:
            return
        best = best.number
        done = optuna.trial.TrialState.COMPLETE
        for t in study.get_trials(deepcopy=False, states=(done,)):
            if t.number != best:
                checkpoint_file(folder, t.number).unlink(missing_ok=True)


def fit_arguments(config: StudyConfig, trial: optuna.trial.BaseTrial) -> dict:
    """The keyword arguments of :func:`~optuna_bs.fit` that a study file sets, for one trial.

    The one place where a study file's ``[train]`` section becomes ``fit``'s arguments, for
    the runner and the benchmarks alike, so that no key is silently dropped. The device, the
    seed and the checkpoints are the caller's.
    """
    train = config.train
    optimizer = train.optimizer
    if is_spec(optimizer):
        optimizer = import_object(optimizer, "[train] optimizer", folder=config.folder)
    loss = None
    if train.loss:
        loss = import_object(train.loss, "[train] loss", folder=config.folder)
    return {
        "max_epochs": train.max_epochs,
        "patience": train.patience or None,
        "min_delta": train.min_delta,
        "metric": train.metric,
        "optimizer": optimizer,
        "precision": train.precision,
        "channels_last": train.channels_last,
        "compile": train.compile,
        "augment": train.augment,
        "cudnn_benchmark": train.cudnn_benchmark,
        "schedule": trial_schedule(config, trial),
        "loss_fn": loss,
        "max_grad_norm": train.max_grad_norm or None,
        "micro_batch_size": train.micro_batch_size,
        "on_oom": train.on_oom,
    }


def trial_schedule(config: StudyConfig, trial: optuna.trial.BaseTrial) -> Schedule | None:
    """The trial's schedule: the study file's, or one searched among several."""
    train = config.train
    name = train.schedule
    if not isinstance(name, str):
        name = trial.suggest_categorical("schedule", list(name))
    if name == "constant" and not train.warmup_epochs:
        return None
    return make_schedule(
        name,
        max_epochs=train.max_epochs,
        milestones=train.milestones,
        factor=train.factor,
        max_batch_size=train.max_batch_size or None,
        warmup_epochs=train.warmup_epochs,
        warmup_per_step=train.warmup_per_step,
    )


def _build_model(config: StudyConfig, data: Data | Datasets) -> torch.nn.Module:
    if isinstance(data, Datasets) and is_spec(config.model.name):
        # Your own model sizes itself: it gets what the Datasets tell without a pass over
        # them (None where they cannot, e.g. dict inputs, or classes not declared).
        shape, outputs = data.known_input_shape(), data.known_n_outputs()
    else:
        shape, outputs = data.input_shape, data.n_outputs
    return build_model(
        config.model.name, shape, outputs, folder=config.folder, **config.model.options
    )


def _optimizer_name(config: StudyConfig, n_train: int) -> str:
    """The optimizer's name: the study file's, or, for a factory, the class it builds.

    A factory is called once on a dummy parameter, so that its errors surface before the
    study is written, as one line, and the space can check its rule against the optimizer.
    """
    spec = config.train.optimizer
    if not is_spec(spec):
        return spec
    try:
        factory = import_object(spec, "[train] optimizer", folder=config.folder)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    probe = [torch.nn.Parameter(torch.zeros(1))]
    hp = Hyperparameters(1, 1e-3, 0.9, max(n_train, 2), beta2=0.999, eps=1e-8)
    try:
        opt = factory(probe, hp)
    except Exception as err:
        cause = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ConfigError(f"[train] optimizer {spec!r} failed on a probe: {cause}") from err
    if not isinstance(opt, torch.optim.Optimizer):
        raise ConfigError(
            f"[train] optimizer {spec!r} must return a torch.optim.Optimizer, but it returned "
            f"{type(opt).__name__!r}."
        )
    return type(opt).__name__.lower()


def space_from_config(
    config: StudyConfig, n_train: int, batch_size=None, optimizer: str | None = None, **overrides
) -> BatchScalingSpace:
    """The study file's ``[space]`` over ``n_train`` samples: the one place it becomes a
    :class:`BatchScalingSpace`, for the runner and the benchmarks alike.

    ``batch_size`` replaces the file's (after ``"auto"`` is resolved); ``optimizer`` is the
    optimizer's name (default the file's); ``overrides`` replace other arguments.

    Raises:
        ConfigError: For a space the data cannot hold, in one line.
    """
    cfg = config.space
    kwargs = {
        "n_train": n_train,
        "batch_size": cfg.batch_size if batch_size is None else batch_size,
        "noise_scale": cfg.noise_scale,
        "momentum": cfg.momentum,
        "lr": cfg.lr,
        "reference_batch_size": cfg.reference_batch_size,
        "alpha": cfg.alpha,
        "beta2": cfg.beta2,
        "eps": cfg.eps,
        "weight_decay": cfg.weight_decay,
        "tau_epochs": cfg.tau_epochs,
        "optimizer": optimizer or config.train.optimizer,
        "allow_sgd_rule_for_adam": cfg.allow_sgd_rule_for_adam,
        **overrides,
    }
    try:
        return BatchScalingSpace(cfg.parameterisation, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[space] {err} (the data has n_train={n_train})") from err


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
    data, _ = load_data_and_model(config)  # the model is built to check [model]
    cfg = config.space
    if cfg.batch_size == "auto" and not isinstance(data, Data):
        raise ConfigError(
            "[space] batch_size = 'auto' measures the noise scale on in-memory tensors; with "
            "Datasets give a [low, high] range (optuna-bs noise-scale helps choose it)."
        )
    optimizer = _optimizer_name(config, data.n_train)
    if cfg.noise_scale == "auto":
        _check_range_test(config, optimizer)
    if is_spec(config.train.loss):  # fail now, before anything is written
        try:
            import_object(config.train.loss, "[train] loss", folder=config.folder)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    if config.train.metric == "error" and data.task != "classification":
        raise ConfigError(
            f"[train] `metric` is 'error', but {data.name!r} is a {data.task} task: use 'loss'."
        )
    try:
        resolved = resolve_device(device or config.train.device)
    except ValueError as err:
        raise ConfigError(f"[train] {err}") from err
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
        checkpoints = study_folder(config.study.checkpoint_dir, name, url_or_default)
        try:  # before the first trial, and without creating anything
            check_creatable(checkpoints, "--checkpoint-dir")
        except ValueError as err:
            raise ConfigError(str(err)) from err
    # The space with the file's own ranges first: a bad batch range fails before measuring.
    placeholder = {"noise_scale": DEFAULTS["noise_scale"]} if cfg.noise_scale == "auto" else {}
    batch_size = cfg.batch_size
    probe_batches = default_probe_batch_sizes(data.n_train) if batch_size == "auto" else None
    space = space_from_config(
        config, data.n_train, probe_batches or batch_size, optimizer, **placeholder
    )
    _check_micro_batch(config, space)
    auto = "auto" in (batch_size, cfg.noise_scale)
    store = None
    # A store that would be a new file holds no ranges yet: measure first, and create it only
    # once the probes have passed, so that a failed probe leaves no empty database behind.
    if not (auto and file_to_create(url) is not None):
        store = _open_store(config, url)
    if auto:
        ranges = _auto_ranges(config, data, space, optimizer, store, name, resolved)
        space = space_from_config(config, data.n_train, optimizer=optimizer, **ranges)
        _check_micro_batch(config, space)
    if store is None:
        store = _open_store(config, url)
    return Prepared(
        config=config,
        # Tensors move to the device once per worker, not once per trial.
        data=place_data(data, resolved) if isinstance(data, Data) else data,
        space=space,
        device=resolved,
        storage=store,
        study_name=name,
        seed=config.study.seed if seed is None else seed,
        checkpoint_folder=checkpoints,
    )


def _open_store(config: StudyConfig, url: str | None) -> optuna.storages.BaseStorage:
    return make_storage(
        url,
        heartbeat_interval=config.study.heartbeat_interval or None,
        max_retry=config.study.max_retry,
        synchronous_commit=config.study.synchronous_commit,
    )


#: The study user attr that holds the ranges ``"auto"`` resolved to, for every later worker.
AUTO_RANGES_ATTR = "auto_ranges"


def _auto_ranges(
    config: StudyConfig,
    data: Data | Datasets,
    space: BatchScalingSpace,
    optimizer: str,
    store: optuna.storages.BaseStorage | None,
    name: str,
    device: torch.device,
) -> dict[str, tuple]:
    """The ``batch_size`` and ``noise_scale`` that ``"auto"`` stands for: the study's own
    (stored when it was created, or drawn from by its trials), else measured on a model
    seeded with 0 (so that workers started together measure the same). ``store`` is
    ``None`` for a store not created yet.

    Raises:
        ConfigError: If a probe fails: a gradient or loss that is NaN or inf, a gradient that
            is zero, or a range test that finds no descent.
    """
    cfg = config.space
    stored = {} if store is None else _stored_ranges(store, name)
    keys = [k for k in ("batch_size", "noise_scale") if getattr(cfg, k) == "auto"]
    if all(k in stored for k in keys):
        _logger.info(
            "'auto' ranges kept from study %r: %s.",
            name,
            ", ".join(f"{k} = {stored[k]}" for k in keys),
        )
        return {k: stored[k] for k in keys}
    probe = _probe_model(config, data)
    out = {}
    if cfg.batch_size == "auto":
        # Bound the search by the critical batch size, measured on this model and data.
        small, big = default_probe_batch_sizes(data.n_train)
        try:
            estimate = estimate_noise_scale(
                probe, data, batch_sizes=(small, big), seed=0, device=device
            )
        except ValueError as err:
            raise ConfigError(f"[space] batch_size = 'auto': {err}") from err
        out["batch_size"] = recommend_batch_sizes(estimate)
        _logger.info(
            "batch_size = 'auto': B_simple = %.3g, so batch sizes %s.",
            estimate.b_simple,
            out["batch_size"],
        )
        space = space_from_config(
            config, data.n_train, out["batch_size"], optimizer, noise_scale=space.noise_scale
        )
    if cfg.noise_scale == "auto":
        out["noise_scale"] = auto_noise_scales(config, data, probe, space, device=device)
    return out


def _stored_ranges(storage: optuna.storages.BaseStorage, name: str) -> dict[str, tuple]:
    """The ranges the named study holds: those ``"auto"`` resolved to when it was created
    (:data:`AUTO_RANGES_ATTR`), else those its trials were drawn from; empty for a new study."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return {}
    saved = storage.get_study_user_attrs(study_id).get(AUTO_RANGES_ATTR)
    if saved:
        return {k: tuple(v) for k, v in saved.items()}
    ranges = {}
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        batch = trial.distributions.get("log2_batch_size")
        if batch is not None and "batch_size" not in ranges:
            ranges["batch_size"] = (2**batch.low, 2**batch.high)
        scale = trial.distributions.get("noise_scale")
        if scale is not None and "noise_scale" not in ranges:
            ranges["noise_scale"] = (scale.low, scale.high)
    return ranges


def _probe_model(config: StudyConfig, data: Data | Datasets) -> torch.nn.Module:
    """The model the probes of ``"auto"`` measure: seeded with 0, whatever the worker's seed,
    so that workers started together measure the same ranges."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _build_model(config, data)


def _check_micro_batch(config: StudyConfig, space: BatchScalingSpace) -> None:
    micro = config.train.micro_batch_size
    if isinstance(micro, int) and any(b % micro for b in space.batch_sizes):
        raise ConfigError(
            f"[train] `micro_batch_size` must divide every batch size of the space "
            f"{space.batch_sizes}, but got micro_batch_size={micro}."
        )


def _check_range_test(config: StudyConfig, optimizer: str) -> None:
    if config.space.parameterisation != "noise-scale" or optimizer != "sgd":
        raise ConfigError(
            "[space] noise_scale = 'auto' runs a range test of SGD's noise scale: it needs "
            "parameterisation 'noise-scale' and optimizer 'sgd', but got "
            f"{config.space.parameterisation!r} and {optimizer!r}."
        )


def search_batch_size(batch_sizes: Sequence[int]) -> int:
    """The middle power of two of a space's batch sizes (rounded down): where the ladder
    searches g, and where ``noise_scale = "auto"`` runs its range test."""
    return batch_sizes[(len(batch_sizes) - 1) // 2]


def load_data_and_model(config: StudyConfig) -> tuple[Data | Datasets, torch.nn.Module]:
    """The study's data and a freshly built model, every error named by its section.

    ``[data] name = "package.module:factory"`` calls ``factory(**options)``, which returns a
    ``Data``, a ``Datasets`` or a ``(train, val)`` pair of Datasets.

    Raises:
        ConfigError: If the data set or the model is unknown or gets a bad option, or a
            data factory returns something else.
    """
    try:
        if is_spec(config.data.name):
            data = _user_data(config)
        else:
            data = load_data(
                config.data.name,
                seed=config.data.seed,
                val_fraction=config.data.val_fraction,
                **config.data.options,
            )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[data] {err}") from err
    try:
        model = _build_model(config, data)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model] {err}") from err
    return data, model


def _user_data(config: StudyConfig) -> Data | Datasets:
    spec = config.data.name
    factory = import_object(spec, "data factory", folder=config.folder)
    kwargs = dict(config.data.options)
    accepts = inspect.signature(factory).parameters
    for key in ("seed", "val_fraction"):  # passed on where the factory takes them
        if key in accepts:
            kwargs.setdefault(key, getattr(config.data, key))
    try:
        data = factory(**kwargs)
    except TypeError as err:
        raise ValueError(f"data factory {spec!r}: {err}") from err
    except Exception as err:  # anything else inside the user's factory
        cause = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ValueError(f"data factory {spec!r} failed: {cause}") from err
    if isinstance(data, tuple | list) and len(data) == 2:
        data = Datasets(data[0], data[1], name=spec)
    if not isinstance(data, Data | Datasets):
        raise TypeError(
            f"data factory {spec!r} must return an optuna_bs.Data, an optuna_bs.Datasets or "
            f"a (train, val) pair of Datasets, but it returned {type(data).__name__!r}."
        )
    if isinstance(data, Datasets):
        data.sample_batch()  # a Dataset whose items do not collate fails here, not mid-study
        data.task  # noqa: B018 (checks that the items unpack into inputs and targets)
    return data


def auto_noise_scales(
    config: StudyConfig,
    data: Data | Datasets,
    model: torch.nn.Module,
    space: BatchScalingSpace,
    *,
    device: str | torch.device = "auto",
) -> tuple[float, float]:
    """``[space] noise_scale = "auto"``: the range of g centred on the task's own steepest
    descent (:func:`range_test` and :func:`~optuna_bs.measure.recommend_noise_scales`).

    The one place the study file's ``"auto"`` becomes a range, for the runner and the
    benchmarks alike.

    Raises:
        ConfigError: If the range test finds no descent.
    """
    tic = time.perf_counter()
    try:
        test = range_test(config, data, model, space, device=device)
    except ValueError as err:
        raise ConfigError(
            f"[space] noise_scale = 'auto': {err} Give noise_scale as [low, high]."
        ) from err
    scales = recommend_noise_scales(test)
    _logger.info(
        "noise_scale = 'auto': the range test (%d steps at B=%d, m=%g, %.1f s) falls fastest "
        "at g=%.3g, so noise scales %s.",
        len(test.losses),
        test.batch_size,
        test.momentum,
        time.perf_counter() - tic,
        test.g_steep,
        scales,
    )
    return scales


def range_test(
    config: StudyConfig,
    data: Data | Datasets,
    model: torch.nn.Module,
    space: BatchScalingSpace,
    *,
    device: str | torch.device = "auto",
) -> RangeTest:
    """The study's :func:`~optuna_bs.measure.lr_range_test`: at the space's
    :func:`search_batch_size`, its momentum (0.9 where it is searched, within its range) and
    the study file's loss. It trains plainly: no micro-batches, clipping or augmentation.
    """
    momentum = space.momentum
    if not isinstance(momentum, numbers.Real):
        momentum = min(max(0.9, momentum[0]), momentum[1])
    loss = None
    if config.train.loss:
        loss = import_object(config.train.loss, "[train] loss", folder=config.folder)
    batch = search_batch_size(space.batch_sizes)
    return lr_range_test(
        model, data, batch_size=batch, momentum=momentum, loss=loss, device=device, seed=0
    )


def default_probe_batch_sizes(n_train: int) -> tuple[int, int]:
    """The two batch sizes of the noise-scale estimate: 32 and 512, or less for small N."""
    big = min(512, 2 ** int(math.log2(max(2, n_train - 1))))
    big = big if big < n_train else big // 2
    return max(1, min(32, big // 4)), big


def make_sampler(
    name: str, *, seed: int, n_startup_trials: int = 10, scale_param: str = "noise_scale"
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (one of :data:`optuna_bs.vocabulary.SAMPLERS`).

    ``"ladder"`` is :class:`~optuna_bs.search.BatchLadderSampler` over TPE; ``scale_param``
    is the parameter it holds fixed while it climbs (the rule's, ``noise_scale`` by default).
    """
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "ladder":
        base = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        return BatchLadderSampler(base, seed=seed, scale_param=scale_param)
    raise ValueError(f"`sampler` must be one of {', '.join(SAMPLERS)}, but got {name!r}.")


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
        ),
        memory_key=prepared.memory_key,
    )
    if n_before:
        _logger.info("Joining study %r with %d trials.", prepared.study_name, n_before)
    else:
        with warnings.catch_warnings():  # experimental in Optuna, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    auto = [k for k in ("batch_size", "noise_scale") if getattr(cfg.space, k) == "auto"]
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
        return _run_study(
            prepared, objective, n_trials, timeout, max_trials, callbacks, show_progress_bar
        )
    finally:
        if size > 1:
            release()


def _run_study(prepared, objective, n_trials, timeout, max_trials, callbacks, show_progress_bar):
    cfg = prepared.config
    study = open_study(prepared)
    study.set_user_attr("space", repr(prepared.space))
    # What the report reads the study by: its rule, and the optimizer family it is for.
    study.set_user_attr("parameterisation", prepared.space.parameterisation)
    study.set_user_attr("optimizer", prepared.space.optimizer)
    prepared.drop_orphan_checkpoints(study)
    callbacks = [*callbacks, prepared.free_memory, prepared.drop_finished_checkpoints]
    if cfg.study.keep_best_checkpoint:
        callbacks.append(prepared.drop_checkpoints_but_best)
    n_trials = cfg.study.n_trials if n_trials is None else n_trials
    if max_trials is not None:
        finished = len(study.get_trials(deepcopy=False, states=_FINISHED))
        if finished >= max_trials:
            _logger.info(
                "The study holds %d finished trials of %d: nothing to do.", finished, max_trials
            )
            return study
        callbacks.append(MaxTrialsCallback(max_trials, states=_FINISHED))
    timeout = cfg.study.timeout if timeout is None else timeout
    optimize_reconnecting(study, objective, n_trials, timeout, callbacks, show_progress_bar)
    return study


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
    loss = fit_arguments(prepared.config, replay)["loss_fn"]  # the study's own loss, if any
    value = evaluate_split(model, prepared.data, "test", metric=metric, loss_fn=loss)
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
