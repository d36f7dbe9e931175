"""What a finished study learned: the fitted scaling rule, the best noise scale, the Pareto front.

Every function reads the COMPLETE trials of a study and the user attrs that
:class:`~optuna_bs.space.BatchScalingSpace` and :func:`~optuna_bs.trainer.fit` record on them
(``batch_size``, ``lr``, ``momentum``, ``n_train``, ``noise_scale``, ``train_seconds``,
``n_updates``). The error is the study's objective 0, to be minimised: one objective, or the
first of a two-objective study (``[val_error, train_seconds]``).

* :func:`fit_scaling_rule`: ϵ* = c · B^α, with a bootstrap interval on α;
  :func:`fit_noise_scale`: the best noise scale g* (DESIGN §1). With too few trials or batch
  sizes they raise :class:`NotEnoughTrialsError`: they never return a number they cannot
  back.
* :func:`pareto_front`: the trials no other trial beats on both error and cost (training
  seconds or parameter updates).
* :func:`recommend`: the best trial's hyperparameters, moved to another batch size through
  :func:`~optuna_bs.rules.rescale`.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import optuna

from optuna_bs.errors import NotEnoughTrialsError
from optuna_bs.rules import Hyperparameters, noise_scale, rescale

__all__ = [
    "NoiseScaleFit",
    "NotEnoughTrialsError",
    "ParetoPoint",
    "ScalingFit",
    "TrialPoint",
    "PARETO_COSTS",
    "complete_points",
    "metric_name",
    "why_no_points",
    "fit_noise_scale",
    "fit_scaling_rule",
    "pareto_front",
    "recommend",
]

_logger = logging.getLogger(__name__)

PARETO_COSTS = ("train_seconds", "n_updates")
_REQUIRED = ("batch_size", "lr", "momentum", "n_train")


@dataclass(frozen=True)
class TrialPoint:
    """One COMPLETE trial as the analysis sees it: its error and its recorded user attrs."""

    number: int
    error: float
    batch_size: int
    lr: float
    momentum: float
    n_train: int
    noise_scale: float
    train_seconds: float | None = None
    n_updates: int | None = None
    beta2: float | None = None
    eps: float | None = None


@dataclass(frozen=True)
class ScalingFit:
    """The learning-rate rule ϵ* = c · B^α that a study's near-best trials follow.

    ``alpha_low``/``alpha_high`` is a bootstrap percentile interval at ``confidence``.
    ``batch_sizes`` and ``best_lrs`` are the points the line was fitted to (per batch size,
    the median lr of its near-best trials) and ``counts`` how many near-best trials each
    holds; ``anchor_batch_size`` and ``anchor_lr`` are their weighted centre, which the fitted
    line passes through. ``n_trials`` complete trials were used, ``n_selected`` of them
    near-best.
    """

    alpha: float
    alpha_low: float
    alpha_high: float
    coefficient: float
    batch_sizes: tuple[int, ...]
    best_lrs: tuple[float, ...]
    counts: tuple[int, ...]
    anchor_batch_size: float
    anchor_lr: float
    n_trials: int
    n_selected: int
    confidence: float

    def lr_at(self, batch_size: float) -> float:
        """The fitted learning rate c · B^α at ``batch_size``."""
        return self.coefficient * batch_size**self.alpha

    def describe(self) -> str:
        """One line: the rule and its interval."""
        return (
            f"lr* = {self.coefficient:.3g} * B^{self.alpha:.3f}, alpha "
            f"{round(100 * self.confidence)}% CI {self.alpha_low:.3f}..{self.alpha_high:.3f} "
            f"({self.n_selected} near-best of {self.n_trials} trials, "
            f"{len(self.batch_sizes)} batch sizes)"
        )


@dataclass(frozen=True)
class NoiseScaleFit:
    """The best noise scale g*: the median g of the near-best trials, with a bootstrap
    percentile interval ``low``..``high`` at ``confidence``."""

    best_noise_scale: float
    low: float
    high: float
    n_trials: int
    n_selected: int
    confidence: float

    def describe(self) -> str:
        """One line: g* and its interval."""
        return (
            f"g* = {self.best_noise_scale:.3g}, {round(100 * self.confidence)}% CI "
            f"{self.low:.3g}..{self.high:.3g} ({self.n_selected} near-best of "
            f"{self.n_trials} trials)"
        )


@dataclass(frozen=True)
class ParetoPoint:
    """A trial on the Pareto front: nothing has both a lower error and a lower ``cost``."""

    number: int
    error: float
    cost: float
    batch_size: int
    lr: float


def complete_points(study: optuna.Study) -> list[TrialPoint]:
    """The study's COMPLETE trials that carry the user attrs of optuna-bs, in trial order.

    Trials without ``batch_size``, ``lr``, ``momentum`` or ``n_train``, or with a non-finite
    error, are left out (logged at debug level). A missing ``noise_scale`` is computed.

    Raises:
        TypeError: If ``study`` is not an ``optuna.Study``.
        ValueError: If the study maximises its first objective (an error is minimised).
    """
    if not isinstance(study, optuna.Study):
        raise TypeError(
            f"`study` must be an optuna.Study, but got study={study!r} of type "
            f"{type(study).__name__}."
        )
    if study.directions[0] != optuna.study.StudyDirection.MINIMIZE:
        raise ValueError(
            "`study` must minimise its first objective (a validation error or loss), but "
            f"its directions are {[d.name.lower() for d in study.directions]}."
        )
    points = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = t.user_attrs
        error = t.values[0] if t.values else math.nan
        if any(a.get(k) is None for k in _REQUIRED) or not math.isfinite(error):
            _logger.debug("trial %d left out: no finite value or no %s", t.number, _REQUIRED)
            continue
        g = a.get("noise_scale")
        if g is None:
            g = noise_scale(a["lr"], a["batch_size"], a["n_train"], a["momentum"])
        seconds = a.get("train_seconds")
        if seconds is None and len(t.values) == 2:  # [val_error, train_seconds] studies
            seconds = t.values[1]
        points.append(
            TrialPoint(
                number=t.number,
                error=float(error),
                batch_size=int(a["batch_size"]),
                lr=float(a["lr"]),
                momentum=float(a["momentum"]),
                n_train=int(a["n_train"]),
                noise_scale=float(g),
                train_seconds=None if seconds is None else float(seconds),
                n_updates=None if a.get("n_updates") is None else int(a["n_updates"]),
                beta2=a.get("beta2"),
                eps=a.get("eps"),
            )
        )
    return points


def why_no_points(study: optuna.Study, attr: str | None = None) -> str | None:
    """Why the study has no trial to plot (with the user attr ``attr``), in words; or ``None``.

    Example:
        >>> why_no_points(optuna.create_study())
        'the study has no COMPLETE trial yet.'
    """
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return "the study has no COMPLETE trial yet."
    points = complete_points(study)
    if not points:
        missing = sorted({k for t in done for k in _REQUIRED if t.user_attrs.get(k) is None})
        return (
            f"no COMPLETE trial records {', '.join(missing)}: sample the trials with "
            "BatchScalingSpace.suggest(trial), which records them."
        )
    if attr is not None and all(getattr(p, attr) is None for p in points):
        return (
            f"no COMPLETE trial records `{attr}`: train with optuna_bs.fit, or in your own loop "
            "pass updates= (and samples=) to TrialMonitor.step and end the run inside "
            "`with TrialMonitor(...)` or with monitor.finish()."
        )
    return None


def metric_name(study: optuna.Study) -> str:
    """The name of objective 0: the study's metric name, else the trials' ``metric`` attr."""
    if study.metric_names:
        return study.metric_names[0]
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if isinstance(t.user_attrs.get("metric"), str):
            return t.user_attrs["metric"]
    return "val_error"


def _best(study: optuna.Study) -> tuple[TrialPoint, list[TrialPoint]]:
    """The best usable complete trial (the first on a tie), and all of them."""
    points = complete_points(study)
    if not points:
        raise NotEnoughTrialsError(
            f"study {study.study_name!r} has no COMPLETE trial with the user attrs "
            f"{', '.join(_REQUIRED)}: run some trials first."
        )
    return min(points, key=lambda p: p.error), points


def _near_best(points: list[TrialPoint], quantile: float, min_selected: int) -> list[TrialPoint]:
    """The best ``max(ceil(quantile · n), min_selected)`` of ``points`` by error, best first."""
    k = min(len(points), max(math.ceil(quantile * len(points)), min_selected))
    return sorted(points, key=lambda p: (p.error, p.number))[:k]


def fit_scaling_rule(
    study: optuna.Study,
    *,
    quantile: float = 0.25,
    min_selected: int = 5,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ScalingFit:
    """Fit ϵ* = c · B^α to the near-best complete trials of a study.

    The near-best trials are the best ``quantile`` of the complete trials, and at least
    ``min_selected``. Per batch size, the median log lr of its near-best trials is its best
    lr; a least-squares line of log best-lr on log B, weighted by the number of near-best
    trials at each B, gives α and c. The interval resamples the complete trials. A constant
    best noise scale g* gives α ≈ 1 for B ≪ N (Smith et al. 2018); α ≈ ½ is the square-root
    rule (Hoffer et al. 2017).

    Args:
        study: A finished study (one objective, or the error first of two).
        quantile: The fraction of complete trials counted as near-best, in (0, 1].
        min_selected: The fewest near-best trials, >= 3; a study needs that many complete
            trials.
        n_bootstrap: Bootstrap resamples for the interval, >= 1.
        confidence: The level of the interval, in (0, 1).
        seed: Seed of the bootstrap.

    Returns:
        A :class:`ScalingFit`.

    Raises:
        NotEnoughTrialsError: If the study has fewer than ``min_selected`` usable complete
            trials, or its near-best trials span fewer than 3 batch sizes: it says it cannot
            fit rather than return a number.
        ValueError: For an argument out of range.
        TypeError: For an argument of the wrong type.
    """
    points, rng = _checked(study, quantile, min_selected, n_bootstrap, confidence, seed)
    selected = _near_best(points, quantile, min_selected)
    fit = _fit_line(selected)
    if fit is None:
        sizes = sorted({p.batch_size for p in selected})
        raise NotEnoughTrialsError(
            f"cannot fit the scaling rule: the {len(selected)} near-best of "
            f"{len(points)} complete trials of study {study.study_name!r} span "
            f"{len(sizes)} batch size(s) {sizes}, and a fit needs at least 3. Run more trials."
        )
    boot = []
    for _ in range(n_bootstrap):
        resampled = [points[i] for i in rng.integers(0, len(points), len(points))]
        line = _fit_line(_near_best(resampled, quantile, min_selected))
        if line is not None:  # a resample may hold fewer than 3 batch sizes
            boot.append(line[0])
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(boot, [tail, 100 - tail]) if boot else (math.nan, math.nan)
    alpha, log_c, sizes, log_lrs, counts = fit
    w = np.asarray(counts, dtype=float)
    anchor = float(np.sum(w * np.log(sizes)) / np.sum(w))
    result = ScalingFit(
        alpha=alpha,
        alpha_low=float(low),
        alpha_high=float(high),
        coefficient=math.exp(log_c),
        batch_sizes=tuple(sizes),
        best_lrs=tuple(math.exp(v) for v in log_lrs),
        counts=tuple(counts),
        anchor_batch_size=math.exp(anchor),
        anchor_lr=math.exp(log_c + alpha * anchor),
        n_trials=len(points),
        n_selected=len(selected),
        confidence=confidence,
    )
    _logger.info("study %r: %s", study.study_name, result.describe())
    return result


def _fit_line(selected: list[TrialPoint]):
    """α, log c, batch sizes, median log lrs and counts; None for fewer than 3 batch sizes."""
    groups: dict[int, list[float]] = {}
    for p in selected:
        groups.setdefault(p.batch_size, []).append(math.log(p.lr))
    if len(groups) < 3:
        return None
    sizes = sorted(groups)
    x = np.log(sizes)
    y = np.array([np.median(groups[b]) for b in sizes])
    w = np.array([len(groups[b]) for b in sizes], dtype=float)
    x_mean, y_mean = np.sum(w * x) / np.sum(w), np.sum(w * y) / np.sum(w)
    alpha = float(np.sum(w * (x - x_mean) * (y - y_mean)) / np.sum(w * (x - x_mean) ** 2))
    return alpha, float(y_mean - alpha * x_mean), sizes, y.tolist(), w.astype(int).tolist()


def fit_noise_scale(
    study: optuna.Study,
    *,
    quantile: float = 0.25,
    min_selected: int = 5,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> NoiseScaleFit:
    """The best noise scale g*: the median g of the near-best complete trials.

    DESIGN §1: the best g barely moves with B and m, so one number summarises the study.
    The near-best trials, arguments and interval are those of :func:`fit_scaling_rule`; g*
    needs only ``min_selected`` complete trials, at any batch sizes.

    Returns:
        A :class:`NoiseScaleFit`.

    Raises:
        NotEnoughTrialsError: If the study has fewer than ``min_selected`` usable complete
            trials.
        ValueError: For an argument out of range.
        TypeError: For an argument of the wrong type.
    """
    points, rng = _checked(study, quantile, min_selected, n_bootstrap, confidence, seed)
    log_g = np.log([p.noise_scale for p in points])
    rank = np.empty(len(points), dtype=int)  # 0 for the best trial
    rank[np.lexsort(([p.number for p in points], [p.error for p in points]))] = range(len(points))
    k = len(_near_best(points, quantile, min_selected))
    best = float(np.median(log_g[rank < k]))
    boot = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        idx = rng.integers(0, len(points), len(points))
        boot[i] = np.median(log_g[idx[np.argsort(rank[idx], kind="stable")][:k]])
    tail = 100 * (1 - confidence) / 2
    low, high = np.exp(np.percentile(boot, [tail, 100 - tail]))
    result = NoiseScaleFit(
        best_noise_scale=math.exp(best),
        low=float(low),
        high=float(high),
        n_trials=len(points),
        n_selected=k,
        confidence=confidence,
    )
    _logger.info("study %r: %s", study.study_name, result.describe())
    return result


def _checked(study, quantile, min_selected, n_bootstrap, confidence, seed):
    """Check the fit arguments; the usable complete points and the bootstrap generator."""
    check_fraction("quantile", quantile, closed=True)
    check_fraction("confidence", confidence, closed=False)
    _check_count("min_selected", min_selected, 3)
    _check_count("n_bootstrap", n_bootstrap, 1)
    _check_count("seed", seed, 0)
    points = complete_points(study)
    if len(points) < min_selected:
        raise NotEnoughTrialsError(
            f"cannot fit: study {study.study_name!r} has {len(points)} usable complete "
            f"trials, and a fit needs at least min_selected={min_selected}. Run more trials."
        )
    return points, np.random.default_rng(seed)


def pareto_front(study: optuna.Study, x: str = "train_seconds") -> list[ParetoPoint]:
    """The trials that no other trial beats on both the error and the cost ``x``.

    Both are minimised. A trial that ties another on both is kept once (the lower trial
    number). Trials without the user attr ``x`` are left out.

    Args:
        study: A finished study.
        x: The cost: ``"train_seconds"`` (wall-clock of the fit) or ``"n_updates"``
            (parameter updates).

    Returns:
        The front, cheapest first (so the error falls along it).

    Raises:
        ValueError: If ``x`` is not one of :data:`PARETO_COSTS`.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> pareto_front(study, "n_updates")
        []
    """
    if x not in PARETO_COSTS:
        raise ValueError(f"`x` must be one of {PARETO_COSTS}, but got x={x!r}.")
    candidates = [p for p in complete_points(study) if getattr(p, x) is not None]
    candidates.sort(key=lambda p: (getattr(p, x), p.error, p.number))
    front: list[ParetoPoint] = []
    for p in candidates:
        if not front or p.error < front[-1].error:
            front.append(ParetoPoint(p.number, p.error, float(getattr(p, x)), p.batch_size, p.lr))
    return front


def recommend(
    study: optuna.Study,
    batch_size: int | None = None,
    rule: str = "noise-scale",
    *,
    alpha: float | None = None,
) -> Hyperparameters:
    """The best trial's hyperparameters, moved to ``batch_size`` by a scaling rule.

    Args:
        study: A finished study.
        batch_size: The batch size to run next; ``None`` keeps the best trial's own.
        rule: A rule of :func:`~optuna_bs.rules.rescale` (:data:`~optuna_bs.rules.RULES`).
        alpha: The exponent of ``rule="power"`` (for example a :class:`ScalingFit`'s).

    Returns:
        :class:`~optuna_bs.rules.Hyperparameters` at ``batch_size``.

    Raises:
        NotEnoughTrialsError: If the study has no usable complete trial.
        ValueError: For a batch size outside [1, n_train - 1] or an unknown rule.

    Warns:
        UserWarning: If ``batch_size`` lies outside the batch sizes the study explored, where
            the study has no evidence that the rule holds; and, from ``rescale``, beyond N/10.
    """
    best, points = _best(study)
    hp = Hyperparameters(
        best.batch_size, best.lr, best.momentum, best.n_train, beta2=best.beta2, eps=best.eps
    )
    if batch_size is None:
        return hp
    with warnings.catch_warnings(record=True) as caught:  # re-raised at the caller's line
        warnings.simplefilter("always")
        new = rescale(hp, batch_size, rule, alpha=alpha)
    low, high = min(p.batch_size for p in points), max(p.batch_size for p in points)
    if not low <= new.batch_size <= high:
        warnings.warn(
            f"batch_size={new.batch_size} is outside the batch sizes study "
            f"{study.study_name!r} explored ({low}..{high}): the {rule!r} rule is "
            "extrapolated there, so check it with a short run.",
            UserWarning,
            stacklevel=2,
        )
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    return new


def check_fraction(name: str, value: object, *, closed: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, but got {name}={value!r}.")
    ok = 0 < value <= 1 if closed else 0 < value < 1
    if not ok:
        interval = "(0, 1]" if closed else "(0, 1)"
        raise ValueError(f"`{name}` must be in {interval}, but got {name}={value!r}.")
    return float(value)


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, but got {name}={value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, but got {name}={value!r}.")
    return int(value)
