"""What a finished study learned: the fitted scaling rule, the best noise scale, the Pareto front.

Every function reads the COMPLETE trials of a study and the user attrs that
:class:`~optuna_bs.space.BatchScalingSpace` and :func:`~optuna_bs.trainer.fit` record on them
(``batch_size``, ``lr``, ``momentum``, ``n_train``, ``noise_scale``, ``train_seconds``,
``n_updates``). The error is the study's objective 0, to be minimised: one objective, or the
first of a two-objective study (``[val_error, train_seconds]``).

* :func:`fit_scaling_rule`: ϵ* = c · B^α, with a bootstrap interval on α;
  :func:`fit_noise_scale`: the best noise scale g* (docs/design.md §1). With too few trials or
  batch sizes they raise :class:`NotEnoughTrialsError`: they never return a number they cannot
  back.
* :func:`pareto_front`: the trials no other trial beats on both error and cost (training
  seconds or parameter updates).
* :func:`fit_surge`: Adam's surge, ϵ*(B) = ϵ_max / (½(√(B_noise/B) + √(B/B_noise)))
  (Li et al. 2024), fitted beside the power law; it says which of the two the data prefer.
* :func:`study_rule`: the rule and optimizer family a study was run with (its attrs).
* :func:`recommend`: the centre of the near-best trials, moved to another batch size by the
  study's rule (g* for the noise-scale space), never a single lucky trial.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import optuna

from optuna_bs._validation import check_fraction, check_int
from optuna_bs.errors import NotEnoughTrialsError
from optuna_bs.rules import (
    Hyperparameters,
    Rule,
    get_rule,
    noise_scale,
    optimizer_family,
    rescale,
)

__all__ = [
    "NoiseScaleFit",
    "NotEnoughTrialsError",
    "ParetoPoint",
    "ScalingFit",
    "SurgeFit",
    "TrialPoint",
    "PARETO_COSTS",
    "complete_points",
    "metric_name",
    "why_no_points",
    "fit_noise_scale",
    "fit_scaling_rule",
    "fit_surge",
    "pareto_front",
    "recommend",
    "rule_for",
    "study_rule",
]

_logger = logging.getLogger(__name__)

PARETO_COSTS = ("train_seconds", "n_updates")
_REQUIRED = ("batch_size", "lr", "momentum", "n_train")
#: A recommendation this many times beyond the explored batch sizes is refused unless asked.
MAX_EXTRAPOLATION = 4.0
#: The fewest near-best trials a fit, or the recommendation's centre, takes.
MIN_SELECTED = 5


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
    weight_decay: float | None = None

    @property
    def tau_epochs(self) -> float | None:
        """AdamW's weight-decay timescale B/(ϵλN); ``None`` without weight decay."""
        return self.hparams().tau_epochs

    def hparams(self) -> Hyperparameters:
        """The trial's hyperparameters."""
        return Hyperparameters(
            self.batch_size,
            self.lr,
            self.momentum,
            self.n_train,
            beta2=self.beta2,
            eps=self.eps,
            weight_decay=self.weight_decay,
        )


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
class SurgeFit:
    """Adam's surge ϵ*(B) = ϵ_max / (½(√(B_noise/B) + √(B/B_noise))) (Li et al. 2024),
    fitted to the same best-lr-per-B points as the power law, and which model they prefer.

    Both models have two parameters, so they are compared by their weighted residual sums of
    squares (in log lr): ``delta_aic`` = n·ln(SSE_power / SSE_surge) over the n batch sizes.
    The surge is ``preferred`` when ``delta_aic`` >= :data:`SURGE_MIN_DELTA_AIC` and its peak
    ``noise_batch_size`` lies inside the explored batch sizes (a peak outside them is a power
    law of slope ±½ as far as the data can tell).
    """

    noise_batch_size: float
    lr_max: float
    sse: float
    power_sse: float
    delta_aic: float
    preferred: bool
    batch_sizes: tuple[int, ...]

    def lr_at(self, batch_size: float) -> float:
        """The surge curve's learning rate at ``batch_size``."""
        b = batch_size / self.noise_batch_size
        return self.lr_max / (0.5 * (math.sqrt(1 / b) + math.sqrt(b)))

    def describe(self) -> str:
        """One line: the model the data prefer, and why."""
        which = "surge" if self.preferred else "power law"
        return (
            f"{which} preferred: surge B_noise = {self.noise_batch_size:.3g}, lr_max = "
            f"{self.lr_max:.3g}, ΔAIC = {self.delta_aic:+.2f} against the power law "
            f"(surge when >= {SURGE_MIN_DELTA_AIC:g} with B_noise inside "
            f"{self.batch_sizes[0]}..{self.batch_sizes[-1]})"
        )


#: ΔAIC at which the surge is preferred to the power law (Burnham & Anderson: >= 2 is
#: "substantial" support).
SURGE_MIN_DELTA_AIC = 2.0
#: The surge has a peak to find only with at least this many batch sizes.
SURGE_MIN_SIZES = 4


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
                weight_decay=a.get("weight_decay"),
            )
        )
    return points


def study_rule(study: optuna.Study) -> tuple[str, str | None]:
    """The rule a study was searched with, and its optimizer family (``"sgd"``, ``"adam"``).

    Read from the study's user attrs ``parameterisation`` and ``optimizer`` (what
    ``optuna-bs run`` records), else from its trials' (what
    :class:`~optuna_bs.space.BatchScalingSpace` and :func:`~optuna_bs.fit` record), else
    ``"noise-scale"``. An adam-sqrt study with no optimizer recorded is taken as Adam.

    Example:
        >>> study_rule(optuna.create_study())
        ('noise-scale', None)
    """
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))

    def recorded(key: str) -> str | None:
        value = study.user_attrs.get(key)
        if isinstance(value, str):
            return value
        seen = [t.user_attrs[key] for t in trials if isinstance(t.user_attrs.get(key), str)]
        return max(set(seen), key=seen.count) if seen else None

    rule = recorded("parameterisation") or "noise-scale"
    family = optimizer_family(recorded("optimizer"))
    if family is None and rule == "adam-sqrt":
        family = "adam"
    return rule, family


def rule_for(study: optuna.Study, rule: str | None = None, alpha: float | None = None) -> Rule:
    """The :class:`~optuna_bs.rules.Rule` named ``rule``, by default the study's own; a
    ``"power"`` rule without ``alpha`` takes the α its trials recorded."""
    name = rule or study_rule(study)[0]
    if name == "power" and alpha is None:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if isinstance(t.user_attrs.get("alpha"), int | float):
                alpha = t.user_attrs["alpha"]
                break
    return get_rule(name, alpha)


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
    min_selected: int = MIN_SELECTED,
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
        sizes = sorted(_groups(selected))
        raise NotEnoughTrialsError(
            f"cannot fit the scaling rule: of the {len(selected)} near-best of "
            f"{len(points)} complete trials of study {study.study_name!r}, "
            f"{len(sizes)} batch size(s) {sizes} hold at least {MIN_PER_SIZE} each, and a fit "
            f"needs {MIN_FIT_SIZES} such batch sizes. Run more trials."
        )
    boot = []
    for _ in range(n_bootstrap):
        resampled = [points[i] for i in rng.integers(0, len(points), len(points))]
        line = _fit_line(_near_best(resampled, quantile, min_selected))
        # A resample with too few batch sizes has no slope: it counts as the widest one
        # seen, so that thin evidence widens the interval instead of vanishing from it.
        boot.append(math.nan if line is None else line[0])
    low, high = _interval(boot, confidence)
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


#: A batch size counts in a fit when it holds at least this many near-best trials; a fit
#: needs at least MIN_FIT_SIZES such batch sizes (one lucky trial per B fits anything).
MIN_PER_SIZE = 2
MIN_FIT_SIZES = 3


def _groups(selected: list[TrialPoint]) -> dict[int, list[float]]:
    """Log lrs of the near-best trials by batch size, for the sizes holding MIN_PER_SIZE."""
    groups: dict[int, list[float]] = {}
    for p in selected:
        groups.setdefault(p.batch_size, []).append(math.log(p.lr))
    return {b: v for b, v in groups.items() if len(v) >= MIN_PER_SIZE}


def _fit_line(selected: list[TrialPoint]):
    """α, log c, batch sizes, median log lrs and counts; None for too few batch sizes."""
    groups = _groups(selected)
    if len(groups) < MIN_FIT_SIZES:
        return None
    sizes = sorted(groups)
    x = np.log(sizes)
    y = np.array([np.median(groups[b]) for b in sizes])
    w = np.array([len(groups[b]) for b in sizes], dtype=float)
    x_mean, y_mean = np.sum(w * x) / np.sum(w), np.sum(w * y) / np.sum(w)
    alpha = float(np.sum(w * (x - x_mean) * (y - y_mean)) / np.sum(w * (x - x_mean) ** 2))
    return alpha, float(y_mean - alpha * x_mean), sizes, y.tolist(), w.astype(int).tolist()


def fit_surge(
    study: optuna.Study, *, quantile: float = 0.25, min_selected: int = MIN_SELECTED
) -> SurgeFit:
    """Fit Adam's surge curve beside the power law, and say which the data prefer.

    Li et al. (NeurIPS 2024) find that for Adam the best lr rises as √B below B_noise and
    falls past it: ϵ*(B) = ϵ_max / (½(√(B_noise/B) + √(B/B_noise))). The points are those of
    :func:`fit_scaling_rule` (per batch size holding at least 2 near-best trials, their median
    lr); B_noise is found on a fine log grid, ϵ_max in closed form.

    Raises:
        NotEnoughTrialsError: With fewer than :data:`SURGE_MIN_SIZES` such batch sizes.
    """
    points, _ = _checked(study, quantile, min_selected, 1, 0.95, 0)
    selected = _near_best(points, quantile, min_selected)
    groups = _groups(selected)
    if len(groups) < SURGE_MIN_SIZES:
        raise NotEnoughTrialsError(
            f"cannot fit the surge: {len(groups)} batch size(s) {sorted(groups)} hold at "
            f"least {MIN_PER_SIZE} near-best trials each, and the surge needs "
            f"{SURGE_MIN_SIZES}. Run more trials."
        )
    line = _fit_line(selected)
    sizes = np.array(line[2], dtype=float)
    y, w = np.array(line[3]), np.array(line[4], dtype=float)
    x = np.log(sizes)
    power_sse = float(np.sum(w * (y - (line[1] + line[0] * x)) ** 2))
    best = None
    for log_bn in np.linspace(x[0] - math.log(64), x[-1] + math.log(64), 2001):
        shape = -np.log(0.5 * (np.exp((log_bn - x) / 2) + np.exp((x - log_bn) / 2)))
        log_max = float(np.sum(w * (y - shape)) / np.sum(w))
        sse = float(np.sum(w * (y - log_max - shape) ** 2))
        if best is None or sse < best[0]:
            best = (sse, float(log_bn), log_max)
    sse, log_bn, log_max = best
    tiny = 1e-12 * max(power_sse, 1e-300)
    delta = len(sizes) * math.log(max(power_sse, tiny) / max(sse, tiny))
    inside = sizes[0] <= math.exp(log_bn) <= sizes[-1]
    result = SurgeFit(
        noise_batch_size=math.exp(log_bn),
        lr_max=math.exp(log_max),
        sse=sse,
        power_sse=power_sse,
        delta_aic=delta,
        preferred=bool(delta >= SURGE_MIN_DELTA_AIC and inside),
        batch_sizes=tuple(int(b) for b in sizes),
    )
    _logger.info("study %r: %s", study.study_name, result.describe())
    return result


def _interval(boot: list[float], confidence: float) -> tuple[float, float]:
    """The bootstrap percentile interval; a NaN (no estimate) counts as -inf or +inf in turn."""
    values = np.array(boot, dtype=float)
    missing = np.flatnonzero(np.isnan(values))
    values[missing[::2]], values[missing[1::2]] = -math.inf, math.inf
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def fit_noise_scale(
    study: optuna.Study,
    *,
    quantile: float = 0.25,
    min_selected: int = MIN_SELECTED,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> NoiseScaleFit:
    """The best noise scale g*: the median g of the near-best complete trials.

    docs/design.md §1: the best g barely moves with B and m, so one number summarises the study.
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
    check_int("min_selected", min_selected, low=3)
    check_int("n_bootstrap", n_bootstrap, low=1)
    check_int("seed", seed, low=0)
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
    rule: str | None = None,
    *,
    alpha: float | None = None,
    extrapolate: bool = False,
    noise_batch_size: float | None = None,
    quantile: float = 0.25,
    min_selected: int = MIN_SELECTED,
) -> Hyperparameters:
    """The centre of the study's near-best trials, moved to ``batch_size`` by a rule.

    Each near-best trial (the best ``quantile``, at least ``min_selected``) is moved to
    ``batch_size`` by the rule, and the rule takes their centre: for the noise-scale rule,
    the lr of g* (their median g) at their median m; for the others the median of each
    value (lr, eps and weight decay on a log scale, 1 − β for β1 and β2). One lucky trial
    does not move the answer (docs/design.md §3: a seed's noise alone spans 5 points of error).
    With fewer than ``min_selected`` complete trials there is no centre: the best trial
    alone is moved.

    Args:
        study: A finished study.
        batch_size: The batch size to run next; ``None``: the best trial's.
        rule: A rule of :data:`~optuna_bs.rules.RULES`; ``None``: the study's own
            (:func:`study_rule`).
        alpha: The exponent of ``rule="power"`` (for example a :class:`ScalingFit`'s).
        extrapolate: Allow a batch size more than :data:`MAX_EXTRAPOLATION` times beyond
            the explored ones.
        noise_batch_size: The critical batch size B_noise, where known (``optuna-bs
            noise-scale``): the lr then bends as B nears it (:func:`~optuna_bs.rescale`).
        quantile: The fraction of complete trials that are near-best.
        min_selected: The fewest near-best trials.

    Returns:
        :class:`~optuna_bs.rules.Hyperparameters` at ``batch_size``.

    Raises:
        NotEnoughTrialsError: If the study has no usable complete trial.
        ValueError: For a batch size outside [1, n_train - 1], an unknown rule, or one far
            beyond the explored batch sizes without ``extrapolate``.

    Warns:
        UserWarning: If ``batch_size`` lies outside the batch sizes the study explored, where
            the study has no evidence that the rule holds; and, from ``rescale``, beyond N/10.
    """
    best, points = _best(study)
    rule = rule_for(study, rule, alpha)
    check_fraction("quantile", quantile, closed=True)
    target = best.batch_size if batch_size is None else batch_size
    Hyperparameters(target, best.lr, best.momentum, best.n_train)  # B' checked against N
    low, high = min(p.batch_size for p in points), max(p.batch_size for p in points)
    if (target > MAX_EXTRAPOLATION * high or target * MAX_EXTRAPOLATION < low) and not extrapolate:
        raise ValueError(
            f"batch_size={target} is over {MAX_EXTRAPOLATION:g}x beyond the batch sizes "
            f"study {study.study_name!r} explored ({low}..{high}); a rule extrapolated that "
            "far is a guess: run trials nearer it, or pass extrapolate=True (--extrapolate)."
        )
    # Too few complete trials for a centre: the near-best would take in poor ones too (with
    # 2 trials, one at chance), so the best trial alone is moved.
    near = _near_best(points, quantile, min_selected) if len(points) >= min_selected else [best]
    with warnings.catch_warnings(record=True) as caught:  # re-raised at the caller's line
        warnings.simplefilter("always")
        moved = [
            rescale(p.hparams(), target, rule, noise_batch_size=noise_batch_size) for p in near
        ]
        new = rule.center(moved)
    if not low <= new.batch_size <= high:
        warnings.warn(
            f"batch_size={new.batch_size} is outside the batch sizes study "
            f"{study.study_name!r} explored ({low}..{high}): the {rule.name!r} rule is "
            "extrapolated there, so check it with a short run.",
            UserWarning,
            stacklevel=2,
        )
    seen = set()
    for w in caught:  # once each: every near-best trial may warn the same
        if str(w.message) not in seen:
            seen.add(str(w.message))
            warnings.warn(w.message, w.category, stacklevel=2)
    return new
