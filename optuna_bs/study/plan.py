"""A study file resolved once per worker into a :class:`Plan`.

:func:`make_plan` loads the data, imports the user's model factory, optimizer and loss once,
builds one model and one optimizer to check them, and resolves the device. The plan then gives
each trial its model and ``fit``'s keywords, builds the space, and runs the probes that
``"auto"`` ranges stand for (their one owner is :mod:`optuna_bs.study.auto`), for the runner
and ``optuna-bs noise-scale`` alike. Nothing here writes to a store.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import optuna
import torch

from optuna_bs.data.datasets import Data, load_data
from optuna_bs.data.models import build_model
from optuna_bs.errors import ConfigError
from optuna_bs.factories import import_object, is_spec
from optuna_bs.measure.range_test import (
    RangeTest,
)
from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.search.ladder import middle_log2
from optuna_bs.search.space import BatchScalingSpace
from optuna_bs.study.config import StudyConfig
from optuna_bs.train.policies import DevicePath, MemoryPolicy
from optuna_bs.train.schedules import Schedule, make_schedule
from optuna_bs.train.sources import Datasets
from optuna_bs.train.trainer import resolve_device

_logger = logging.getLogger(__name__)


@dataclass
class Plan:
    """A study file resolved once per worker: what every trial of it shares."""

    config: StudyConfig
    data: Data | Datasets
    #: The user's model factory, imported once; ``None`` for a built-in model.
    model_factory: Callable[..., torch.nn.Module] | None
    #: The optimizer's name, or the user's factory, imported once.
    optimizer: str | Callable
    #: The optimizer's name: the file's, or for a factory the class it builds.
    optimizer_name: str
    #: The user's loss, imported once; ``None`` for the task's default.
    loss: Callable | None
    device: torch.device

    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model (seed torch first)."""
        return _build_model(self.config, self.data, self.model_factory)

    def probe_model(self) -> torch.nn.Module:
        """The model the probes of ``"auto"`` measure: seeded with 0, whatever the worker's
        seed, so that workers started together measure the same ranges."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return self.build_model()

    def fit_keywords(self, trial: optuna.trial.BaseTrial | None) -> dict:
        """``fit``'s keywords for one trial on the plan's device (:func:`fit_arguments`,
        with the user's code imported once)."""
        return _fit_keywords(self.config, trial, self.optimizer, self.loss, self.device)

    def space(self, batch_size=None, **overrides) -> BatchScalingSpace:
        """The file's space over the data (:func:`space_from_config`)."""
        return space_from_config(
            self.config, self.data.n_train, batch_size, self.optimizer_name, **overrides
        )

    def range_test(self, space: BatchScalingSpace) -> RangeTest:
        """The study's range test (:func:`~optuna_bs.study.auto.range_test`) on
        :meth:`probe_model`."""
        from optuna_bs.study.auto import range_test

        return range_test(
            self.config, self.data, self.probe_model(), space, device=self.device, loss=self.loss
        )


def make_plan(config: StudyConfig, device: str | None = None) -> Plan:
    """Resolve ``config`` once: load its data, import its code, check them, pick the device.

    Raises:
        ConfigError: If the data set or model is unknown or gets a bad option, a factory
            cannot be imported or fails on a probe, the metric does not fit the task, or the
            device is unknown; each names its section.
    """
    data = _load_data(config)
    factory = _imported(config, config.model.name, "Model", "[model] ")
    optimizer, loss = _user_code(config)
    try:
        _build_model(config, data, factory)  # one model, to check [model] now
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model] {err}") from err
    name = _optimizer_name(config, data.n_train, optimizer)
    if config.train.metric == "error" and data.task != "classification":
        raise ConfigError(
            f"[train] `metric` is 'error', but {data.name!r} is a {data.task} task: use 'loss'."
        )
    try:
        resolved = resolve_device(device or config.train.device)
    except ValueError as err:
        raise ConfigError(f"[train] {err}") from err
    return Plan(config, data, factory, optimizer, name, loss, resolved)


def _imported(config: StudyConfig, spec: str, what: str, prefix: str = "") -> Callable | None:
    """The callable ``spec`` names (``None`` for a built-in name), or one ConfigError."""
    if not is_spec(spec):
        return None
    try:
        return import_object(spec, what, folder=config.folder)
    except ValueError as err:
        raise ConfigError(f"{prefix}{err}") from err


def _user_code(config: StudyConfig) -> tuple[str | Callable, Callable | None]:
    """The optimizer (its name, or the user's factory) and the user's loss (or ``None``)."""
    optimizer = config.train.optimizer
    if is_spec(optimizer):  # else a built-in name such as "sgd"
        optimizer = _imported(config, optimizer, "[train] optimizer")
    return optimizer, _imported(config, config.train.loss, "[train] loss")


def _load_data(config: StudyConfig) -> Data | Datasets:
    """The study's data. ``[data] name = "package.module:factory"`` calls
    ``factory(**options)``, which returns a ``Data``, a ``Datasets`` or a ``(train, val)``
    pair of Datasets."""
    try:
        if is_spec(config.data.name):
            return _user_data(config)
        return load_data(
            config.data.name,
            seed=config.data.seed,
            val_fraction=config.data.val_fraction,
            **config.data.options,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[data] {err}") from err


def fit_arguments(
    config: StudyConfig, trial: optuna.trial.BaseTrial | None, device: object = "auto"
) -> dict:
    """The keyword arguments of :func:`~optuna_bs.fit` that a study file sets, for one trial
    on ``device``, the user's optimizer and loss imported here (a :class:`Plan` imports them
    once). The seed and the checkpoints are the caller's.
    """
    return _fit_keywords(config, trial, *_user_code(config), device)


#: The [train] keys of fit's device path (DevicePath's fields but the device).
_DEVICE_PATH = tuple(f.name for f in fields(DevicePath) if f.name != "device")


def _fit_keywords(config: StudyConfig, trial, optimizer, loss, device) -> dict:
    """The one place where a study file's ``[train]`` section becomes ``fit``'s arguments,
    so that no key is silently dropped."""
    train = config.train
    return {
        "max_epochs": train.max_epochs,
        "patience": train.patience or None,
        "min_delta": train.min_delta,
        "metric": train.metric,
        "optimizer": optimizer,
        "augment": train.augment,
        "schedule": trial_schedule(config, trial),
        "loss_fn": loss,
        "max_grad_norm": train.max_grad_norm or None,
        "device": DevicePath(device, **{k: getattr(train, k) for k in _DEVICE_PATH}),
        "memory": MemoryPolicy(micro_batch_size=train.micro_batch_size, on_oom=train.on_oom),
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


def _build_model(
    config: StudyConfig, data: Data | Datasets, factory: Callable | None = None
) -> torch.nn.Module:
    if isinstance(data, Datasets) and is_spec(config.model.name):
        # Your own model sizes itself: it gets what the Datasets tell without a pass over
        # them (None where they cannot, e.g. dict inputs, or classes not declared).
        shape, outputs = data.known_input_shape(), data.known_n_outputs()
    else:
        shape, outputs = data.input_shape, data.n_outputs
    return build_model(
        config.model.name,
        shape,
        outputs,
        folder=config.folder,
        factory=factory,
        **config.model.options,
    )


def _optimizer_name(config: StudyConfig, n_train: int, optimizer: str | Callable) -> str:
    """The optimizer's name: the study file's, or, for a factory, the class it builds.

    A factory is called once on a dummy parameter, so that its errors surface before the
    study is written, as one line, and the space can check its rule against the optimizer.
    """
    if isinstance(optimizer, str):
        return optimizer
    spec = config.train.optimizer
    probe = [torch.nn.Parameter(torch.zeros(1))]
    hp = Hyperparameters(1, 1e-3, 0.9, max(n_train, 2), beta2=0.999, eps=1e-8)
    try:
        opt = optimizer(probe, hp)
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
    # Each [space] key is BatchScalingSpace's argument of that name (parameterisation first).
    kwargs = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "parameterisation"}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    kwargs.update(n_train=n_train, optimizer=optimizer or config.train.optimizer, **overrides)
    try:
        return BatchScalingSpace(cfg.parameterisation, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[space] {err} (the data has n_train={n_train})") from err


def _check_micro_batch(config: StudyConfig, space: BatchScalingSpace) -> None:
    micro = config.train.micro_batch_size
    if isinstance(micro, int) and any(b % micro for b in space.batch_sizes):
        raise ConfigError(
            f"[train] `micro_batch_size` must divide every batch size of the space "
            f"{space.batch_sizes}, but got micro_batch_size={micro}."
        )


def search_batch_size(batch_sizes: Sequence[int]) -> int:
    """The middle power of two of a space's batch sizes (rounded down): where the ladder
    searches g, and where ``noise_scale = "auto"`` runs its range test."""
    low, high = (round(math.log2(b)) for b in (batch_sizes[0], batch_sizes[-1]))
    return 2 ** middle_log2(low, high)


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
