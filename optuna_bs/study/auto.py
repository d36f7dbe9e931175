"""The ranges that ``"auto"`` stands for in a study file's ``[space]``: their one owner.

``batch_size = "auto"`` runs up to the critical batch size, measured on the plan's probe model
(:func:`~optuna_bs.measure.estimate_noise_scale`); ``noise_scale = "auto"`` centres the range
of g on SGD's range test, and ``lr = "auto"`` that of Adam's reference lr on Adam's
(:func:`~optuna_bs.measure.lr_range_test`). A study keeps what they measured
(:data:`AUTO_RANGES_ATTR`), for every later worker and resume; the runner and
``optuna-bs noise-scale`` both come here. Nothing here writes to a store.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable

import optuna
import torch

from optuna_bs.data.datasets import Data
from optuna_bs.errors import ConfigError
from optuna_bs.measure.noise import estimate_noise_scale, recommend_batch_sizes
from optuna_bs.measure.range_test import (
    RangeTest,
    lr_range_test,
    recommend_lrs,
    recommend_noise_scales,
)
from optuna_bs.rules.registry import RULES
from optuna_bs.search.edges import RANGES_ATTR
from optuna_bs.search.space import BatchScalingSpace
from optuna_bs.study.config import StudyConfig
from optuna_bs.study.plan import Plan, _imported, search_batch_size
from optuna_bs.train.sources import Datasets

_logger = logging.getLogger(__name__)


#: The [space] keys that take ``"auto"`` for a measured range, in the order they are measured.
AUTO_KEYS = ("batch_size", "noise_scale", "lr")


def auto_keys(config: StudyConfig) -> list[str]:
    """The [space] keys of ``config`` that are ``"auto"``."""
    return [k for k in AUTO_KEYS if getattr(config.space, k) == "auto"]


#: The study user attr that holds the ranges ``"auto"`` resolved to, as they widen
#: (:class:`~optuna_bs.search.RangeWidening`), for every later worker.
AUTO_RANGES_ATTR = RANGES_ATTR


def auto_ranges(
    plan: Plan,
    space: BatchScalingSpace,
    store: optuna.storages.BaseStorage | None,
    name: str,
) -> dict[str, tuple]:
    """The ``batch_size``, ``noise_scale`` and ``lr`` that ``"auto"`` stands for: the study's own
    (stored when it was created, or drawn from by its trials), else measured on the plan's
    probe model. ``store`` is ``None`` for a store not created yet.

    Raises:
        ConfigError: If a probe fails: a gradient or loss that is NaN or inf, a gradient that
            is zero, or a range test that finds no descent.
    """
    cfg = plan.config.space
    stored = {} if store is None else _stored_ranges(store, name)
    keys = auto_keys(plan.config)
    if all(k in stored for k in keys):
        _logger.info(
            "'auto' ranges kept from study %r: %s.",
            name,
            ", ".join(f"{k} = {stored[k]}" for k in keys),
        )
        return {k: stored[k] for k in keys}
    out = {}
    if cfg.batch_size == "auto":
        # Bound the search by the critical batch size, measured on this model and data.
        try:
            estimate = estimate_noise_scale(
                plan.probe_model(),
                plan.data,
                batch_sizes=default_probe_batch_sizes(plan.data.n_train),
                seed=0,
                device=plan.device,
            )
        except ValueError as err:
            raise ConfigError(f"[space] batch_size = 'auto': {err}") from err
        out["batch_size"] = recommend_batch_sizes(estimate)
        _logger.info(
            "batch_size = 'auto': B_simple = %.3g, so batch sizes %s.",
            estimate.b_simple,
            out["batch_size"],
        )
        space = plan.space(out["batch_size"], noise_scale=space.noise_scale, lr=space.lr)
    if cfg.noise_scale == "auto":
        out["noise_scale"] = auto_noise_scales(
            plan.config,
            plan.data,
            plan.probe_model(),
            space,
            device=plan.device,
            loss=plan.loss,
        )
    if cfg.lr == "auto":
        out["lr"] = auto_lrs(plan, space)
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
    params = {"batch_size": "log2_batch_size", "noise_scale": "noise_scale", "lr": "reference_lr"}
    ranges = {}
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        for key, param in params.items():
            d = trial.distributions.get(param)
            if d is not None and key not in ranges:
                ranges[key] = (2**d.low, 2**d.high) if key == "batch_size" else (d.low, d.high)
    return ranges


def _check_range_test(config: StudyConfig, optimizer: str) -> None:
    if not RULES[config.space.parameterisation].searches_noise_scale or optimizer != "sgd":
        raise ConfigError(
            "[space] noise_scale = 'auto' runs a range test of SGD's noise scale: it needs "
            "parameterisation 'noise-scale' and optimizer 'sgd', but got "
            f"{config.space.parameterisation!r} and {optimizer!r}."
        )


def auto_noise_scales(
    config: StudyConfig,
    data: Data | Datasets,
    model: torch.nn.Module,
    space: BatchScalingSpace,
    *,
    device: str | torch.device = "auto",
    loss: Callable | None = None,
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
        test = range_test(config, data, model, space, device=device, loss=loss)
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


def auto_lrs(plan: Plan, space: BatchScalingSpace) -> tuple[float, float]:
    """``[space] lr = "auto"``: the range of Adam's reference lr, centred on the task's own
    steepest descent (:func:`adam_range_test`, :func:`~optuna_bs.measure.recommend_lrs`).

    Raises:
        ConfigError: If the study does not train with Adam, or the range test finds no
            descent.
    """
    if plan.optimizer_name not in ("adam", "adamw"):
        raise ConfigError(
            "[space] lr = 'auto' runs a range test of Adam's learning rate, but the study "
            f"trains with {plan.optimizer_name!r}: give lr as [low, high]."
        )
    tic = time.perf_counter()
    try:
        test = adam_range_test(plan, space)
    except ValueError as err:
        raise ConfigError(f"[space] lr = 'auto': {err} Give lr as [low, high].") from err
    lrs = recommend_lrs(test)
    _logger.info(
        "lr = 'auto': Adam's range test (%d steps at B=%d, β1=%g, %.1f s) falls fastest at "
        "lr=%.3g, so learning rates %s at B=%d.",
        len(test.losses),
        test.batch_size,
        test.momentum,
        time.perf_counter() - tic,
        test.lr_steep,
        lrs,
        test.batch_size,
    )
    return lrs


def adam_range_test(plan: Plan, space: BatchScalingSpace) -> RangeTest:
    """The study's Adam range test (:func:`~optuna_bs.measure.lr_range_test`) on the plan's
    probe model: with its Adam or AdamW, at the space's reference batch size (where its lr
    range is), β1 and β2, and its loss."""
    return lr_range_test(
        plan.probe_model(),
        plan.data,
        batch_size=min(space.reference_batch_size, plan.data.n_train - 1),
        momentum=_probe_momentum(space),
        optimizer=plan.optimizer_name if plan.optimizer_name == "adam" else "adamw",
        beta2=space.beta2,
        loss=plan.loss,
        device=plan.device,
        seed=0,
    )


def range_test(
    config: StudyConfig,
    data: Data | Datasets,
    model: torch.nn.Module,
    space: BatchScalingSpace,
    *,
    device: str | torch.device = "auto",
    loss: Callable | None = None,
) -> RangeTest:
    """The study's :func:`~optuna_bs.measure.lr_range_test`: at the space's
    :func:`search_batch_size`, its momentum (0.9 where it is searched, within its range) and
    the study's loss (``loss``, else the file's, imported here). It trains plainly: no
    micro-batches, clipping or augmentation.
    """
    momentum = _probe_momentum(space)
    if loss is None:
        loss = _imported(config, config.train.loss, "[train] loss")
    batch = search_batch_size(space.batch_sizes)
    return lr_range_test(
        model, data, batch_size=batch, momentum=momentum, loss=loss, device=device, seed=0
    )


def default_probe_batch_sizes(n_train: int) -> tuple[int, int]:
    """The two batch sizes of the noise-scale estimate: 32 and 512, or less for small N."""
    big = min(512, 2 ** int(math.log2(max(2, n_train - 1))))
    big = big if big < n_train else big // 2
    return max(1, min(32, big // 4)), big


def _probe_momentum(space: BatchScalingSpace) -> float:
    """The momentum (β1) a range test runs at: the space's, or 0.9 within a searched range."""
    momentum = space.momentum
    if isinstance(momentum, numbers.Real):
        return float(momentum)
    return min(max(0.9, momentum[0]), momentum[1])
