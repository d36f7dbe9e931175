"""The evidence a study holds on the lr against B, and the curves fitted to it (docs/design.md §3).

Each batch size's best lr (:func:`batch_optima`, never pooled across batch sizes; only batch
sizes whose best beats the study's median trial count: :func:`error_limit`), the fitted lr*(B)
(:func:`fit_scaling_rule`: the study's rule, a power law, McCandlish's or Li et al.'s curve,
chosen by leave-one-batch-size-out error with the 1-SE rule), and g* (:func:`fit_noise_scale`)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import optuna

from optuna_bs._validation import check_fraction, check_int, check_real
from optuna_bs.errors import NotEnoughTrialsError
from optuna_bs.report.analysis import TrialPoint, complete_points, rule_for, study_rule
from optuna_bs.report.optima import MIN_TRIALS, TOLERANCE, BatchOptimum, batch_optima, error_limit
from optuna_bs.rules.formulas import Hyperparameters, mccandlish, surge
from optuna_bs.rules.registry import Rule

_logger = logging.getLogger(__name__)


#: A recommendation this many times beyond the explored batch sizes is refused unless asked.
MAX_EXTRAPOLATION = 4.0


#: The fitted curve answers up to this many times beyond the batch sizes it was fitted on;
#: farther out, the study's rule moves the curve's value at the nearest edge.
FIT_REACH = 4.0


#: A curve of two parameters is fitted, and chosen by leaving one out, on this many sizes.
MIN_FIT_SIZES = 3


#: Bootstrap resamples of the interval.
N_BOOTSTRAP = 200


#: Bounds on a power law's exponent, by optimizer family: SGD's best lr grows at most
#: linearly and never falls (McCandlish et al. 2018); Adam's grows at most as √B and falls
#: at most as 1/√B (Li et al. 2024).
ALPHA_BOUNDS = {"sgd": (0.0, 1.0), "adam": (-0.5, 0.5), None: (-0.5, 1.0)}


# -- the curves ϵ*(B) -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Curve:
    """One form of log ϵ*(B): an intercept a plus ``shape(x, p)`` of x = log B and one
    parameter p (None for the one-parameter rule), fitted by weighted least squares."""

    name: str
    shape: Callable[[np.ndarray, float | None], np.ndarray]
    grid: Callable[[np.ndarray], np.ndarray] | None = None  # candidate p, given the x's
    alpha_bounds: tuple[float, float] | None = None  # the power law's p is its slope
    kind: str = ""  # what ``fit_scaling_rule(models=...)`` calls it; the name by default

    def fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float | None]:
        """(a, p) minimising Σ w (y − a − shape(x, p))²."""
        if self.alpha_bounds is not None:
            xm, ym = np.average(x, weights=w), np.average(y, weights=w)
            alpha = float(np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2))
            alpha = min(max(alpha, self.alpha_bounds[0]), self.alpha_bounds[1])
            return float(ym - alpha * xm), alpha
        if self.grid is None:
            return float(np.average(y - self.shape(x, None), weights=w)), None
        ps = self.grid(x)
        shapes = self.shape(x[None, :], ps[:, None])
        a = np.sum(w * (y - shapes), axis=1) / np.sum(w)
        sse = np.sum(w * (y - a[:, None] - shapes) ** 2, axis=1)
        i = int(np.argmin(sse))
        return float(a[i]), float(ps[i])

    def predict(self, params: tuple[float, float | None], x) -> np.ndarray:
        a, p = params
        return a + self.shape(np.asarray(x, dtype=float), p)


def _noise_grid(x: np.ndarray) -> np.ndarray:
    """log B_noise from 64× below the smallest to 64× above the largest batch size."""
    return np.linspace(x.min() - math.log(64), x.max() + math.log(64), 241)


def _in_log_b(curve, x, log_bn):  # the shape of rules.mccandlish or rules.surge in log B
    return np.log(curve(np.exp(x), np.exp(log_bn)))


def _rule_curve(rule: Rule, reference: Hyperparameters) -> _Curve:
    """The study's rule as a curve: its own lr against B, through a free constant."""

    def shape(x, _):
        sizes = np.clip(np.rint(np.exp(x)), 1, reference.n_train - 1).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lrs = [rule.move_lr(reference, int(b)).lr for b in np.ravel(sizes)]
        return np.log(np.reshape(lrs, np.shape(sizes)) / reference.lr)

    return _Curve(f"{rule.name} rule", shape, kind="rule")


def _curves(rule: Rule, family: str | None, reference: Hyperparameters) -> list[_Curve]:
    """The candidate forms for a study: its rule, a power law, the saturating curve(s)."""
    power = _Curve("power", lambda x, alpha: alpha * x, alpha_bounds=ALPHA_BOUNDS[family])
    curves = [_rule_curve(rule, reference), power]
    if family != "adam":
        curves.append(_Curve("mccandlish", partial(_in_log_b, mccandlish), _noise_grid))
    if family != "sgd":
        curves.append(_Curve("surge", partial(_in_log_b, surge), _noise_grid))
    return curves


def _leave_one_out(curve: _Curve, x, y, w) -> np.ndarray:
    """The error, in log lr, of predicting each batch size's best lr from the others."""
    errors = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        params = curve.fit(x[keep], y[keep], w[keep])
        errors.append(float(y[i] - curve.predict(params, x[i])))
    return np.array(errors)


def _choose(curves: list[_Curve], x, y, w) -> tuple[_Curve, dict[str, float]]:
    """The simplest curve whose leave-one-out error is within one standard error of the
    best's (the one-standard-error rule of cross-validation, Hastie et al., ESL §7.10): with
    three batch sizes a two-parameter curve predicts each from two points, so it must win
    clearly to be believed. ``curves`` are ordered simplest first. Returns the curve and each
    curve's RMS error in log lr."""
    squares = {c.name: _leave_one_out(c, x, y, w) ** 2 for c in curves}
    mse = {name: float(np.average(e, weights=w)) for name, e in squares.items()}
    best = min(mse, key=mse.get)
    se = float(np.std(squares[best], ddof=1) / math.sqrt(len(x)))
    chosen = next(c for c in curves if mse[c.name] <= mse[best] + se)
    return chosen, {name: math.sqrt(v) for name, v in mse.items()}


@dataclass(frozen=True)
class ScalingFit:
    """ϵ*(B), fitted to a study's per-batch-size optima.

    ``model`` is the simplest form that predicted a left-out batch size within one standard
    error of the best (``scores``: each form's RMS error of that prediction in log lr, so 0.1
    is about 10%). ``optima`` holds every
    explored batch size's evidence, counted or not. ``alpha`` is the curve's slope
    d log ϵ / d log B at the middle of the counted batch sizes; ``noise_batch_size`` is
    B_noise for a saturating curve. :meth:`interval_at` comes from refitting the chosen form
    to its fitted values plus leave-one-batch-size-out errors drawn with replacement: the
    out-of-sample scatter of a batch size's best lr about the curve, so it widens with how
    badly the curve predicts a batch size it did not see and with distance from the data; one
    more drawn error makes it an interval for the best lr of a batch size, not for the curve.
    """

    model: str
    params: tuple[float, float | None]
    scores: dict[str, float]
    optima: tuple[BatchOptimum, ...]
    n_trials: int
    confidence: float
    # (params, one more drawn error) per bootstrap repetition: a prediction, not a mean.
    boot: tuple[tuple[tuple[float, float | None], float], ...] = field(repr=False)
    curve: _Curve = field(repr=False, compare=False)

    @property
    def counted(self) -> tuple[BatchOptimum, ...]:
        """The batch sizes the curve is fitted to."""
        return tuple(o for o in self.optima if o.counted)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(o.batch_size for o in self.counted)

    @property
    def best_lrs(self) -> tuple[float, ...]:
        return tuple(o.lr for o in self.counted)

    @property
    def noise_batch_size(self) -> float | None:
        """B_noise of a saturating curve (McCandlish or surge); None for the others."""
        return math.exp(self.params[1]) if self.curve.grid is not None else None

    @property
    def alpha(self) -> float:
        """The slope d log ϵ / d log B at the log-middle of the fitted batch sizes."""
        x = math.log(math.sqrt(self.batch_sizes[0] * self.batch_sizes[-1]))
        h = 0.05
        y = self.curve.predict(self.params, [x - h, x + h])
        return float((y[1] - y[0]) / (2 * h))

    def lr_at(self, batch_size: float) -> float:
        """The fitted best lr at ``batch_size``."""
        return float(np.exp(self.curve.predict(self.params, math.log(batch_size))))

    def interval_at(self, batch_size: float) -> tuple[float, float]:
        """Where the best lr at ``batch_size`` lies, at ``confidence``: a bootstrap prediction
        interval (the refitted curve plus the scatter of one more batch size about it)."""
        x = math.log(batch_size)
        values = [float(self.curve.predict(p, x)) + e for p, e in self.boot]
        low, high = _interval(values, self.confidence)
        return math.exp(low), math.exp(high)

    def describe(self) -> str:
        """One line: the curve, and how it was chosen."""
        a, p = self.params
        if self.curve.alpha_bounds is not None:
            form = f"lr* = {math.exp(a):.3g} * B^{p:.3f}"
        elif self.curve.grid is not None:
            form = f"{self.model}: lr_max = {math.exp(a):.3g}, B_noise = {math.exp(p):.3g}"
        else:
            b = self.batch_sizes[0]
            form = f"{self.model}, lr* = {self.lr_at(b):.3g} at B={b}"
        scores = ", ".join(f"{k} {v:.3f}" for k, v in self.scores.items())
        return (
            f"{form} (the simplest within one standard error of the best "
            f"leave-one-batch-size-out error in log lr: {scores}; "
            f"{len(self.batch_sizes)} batch sizes {list(self.batch_sizes)}, "
            f"{self.n_trials} trials)"
        )


def _interval(values: list[float], confidence: float) -> tuple[float, float]:
    """The percentile interval at ``confidence``."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def _resamples(points: list[TrialPoint], n: int, seed: int):
    """``n`` resamples of the trials, each batch size's own trials drawn with replacement
    (stratified by B): the evidence is read per batch size, so every resample keeps the
    batch sizes that counted and varies what each one says."""
    rng = np.random.default_rng(seed)
    groups: dict[int, list[TrialPoint]] = {}
    for p in points:
        groups.setdefault(p.batch_size, []).append(p)
    for _ in range(n):
        yield [g[i] for g in groups.values() for i in rng.integers(0, len(g), len(g))]


def _optima(study, tolerance, n_bootstrap, confidence, seed):
    """The arguments checked; the study's trials, and each batch size's optimum among them."""
    check_real("tolerance", tolerance, low=0.0)
    check_fraction("confidence", confidence, closed=False)
    check_int("n_bootstrap", n_bootstrap, low=1)
    check_int("seed", seed, low=0)
    points = complete_points(study)
    return points, batch_optima(points, error_limit(study, tolerance))


def fit_scaling_rule(
    study: optuna.Study,
    *,
    tolerance: float = TOLERANCE,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = 0.9,
    seed: int = 0,
    models: tuple[str, ...] | None = None,
) -> ScalingFit:
    """Fit ϵ*(B) to the per-batch-size optima of a study (:func:`batch_optima`).

    The candidate forms are the study's rule (one constant), a power law c·B^α (α bounded by
    theory: :data:`ALPHA_BOUNDS`) and, for SGD, McCandlish et al.'s ϵ_max / (1 + B_noise/B),
    for Adam Li et al.'s surge. Each is fitted by weighted least squares in log lr (weights:
    the trials behind each optimum, up to 3), and chosen by leaving one batch size out: the
    simplest whose error is within one standard error of the best's.

    Args:
        study: A finished study (one objective, or the error first of two).
        tolerance: How far from the study's best towards its median trial a batch size's
            best may lie and count (:func:`error_limit`).
        n_bootstrap: Resamples of the trials for the interval, >= 1.
        confidence: The level of the interval, in (0, 1).
        seed: Seed of the bootstrap.
        models: The candidate forms to choose among (``"rule"``, ``"power"``,
            ``"mccandlish"``, ``"surge"``); ``None``: all that suit the optimizer family.

    Raises:
        NotEnoughTrialsError: If fewer than :data:`MIN_FIT_SIZES` batch sizes count; the
            message names what the study lacks.
        ValueError: If ``models`` leaves no candidate.
    """
    points, optima = _optima(study, tolerance, n_bootstrap, confidence, seed)
    counted = [o for o in optima if o.counted]
    if len(counted) < MIN_FIT_SIZES:
        raise NotEnoughTrialsError(_why_no_fit(study, points, optima))
    curves = _curves(rule_for(study), study_rule(study)[1], counted[0].hparams())
    if models is not None:
        curves = [c for c in curves if (c.kind or c.name) in models]
        if not curves:
            raise ValueError(
                f"`models` must name at least one of the candidates for this study, but got "
                f"models={models!r}."
            )
    x = np.log([o.batch_size for o in counted])
    y = np.log([o.lr for o in counted])
    w = np.array([o.weight for o in counted])
    curve, scores = _choose(curves, x, y, w)
    # The interval: refit to the fitted values plus resampled leave-one-out errors, the
    # honest (out-of-sample) scatter of a batch size's best lr about the curve.
    params = curve.fit(x, y, w)
    fitted, errors = curve.predict(params, x), _leave_one_out(curve, x, y, w)
    rng = np.random.default_rng(seed)
    boot = [
        (curve.fit(x, fitted + errors[rng.integers(0, len(x), len(x))], w), rng.choice(errors))
        for _ in range(n_bootstrap)
    ]
    result = ScalingFit(
        model=curve.name,
        params=params,
        scores=scores,
        optima=tuple(optima),
        n_trials=len(points),
        confidence=confidence,
        boot=tuple(boot),
        curve=curve,
    )
    _logger.info("study %r: %s", study.study_name, result.describe())
    return result


def _why_no_fit(study, points, optima) -> str:
    """One line naming what the study lacks for a fit."""
    name = study.study_name
    if not points:
        return f"study {name!r} has no usable COMPLETE trial: run some trials first."
    if len(optima) < MIN_FIT_SIZES:
        sizes = [o.batch_size for o in optima]
        return (
            f"study {name!r} explored {len(optima)} batch size(s) {sizes} in its "
            f"{len(points)} complete trials, and a fit of the best lr against B needs "
            f"{MIN_FIT_SIZES}: widen the batch-size range or run more trials."
        )
    good = [o.batch_size for o in optima if o.counted]
    bad = [o.batch_size for o in optima if not o.counted]
    return (
        f"of the {len(optima)} batch sizes study {name!r} explored, {len(good)} {good} "
        f"beat its median trial, and a fit needs {MIN_FIT_SIZES}: the others {bad} "
        "trained worse; run more trials at them, or recommend within the good ones."
    )


@dataclass(frozen=True)
class NoiseScaleFit:
    """The best noise scale g*: the weighted median g of the counted per-batch-size optima,
    with a bootstrap percentile interval ``low``..``high`` at ``confidence``."""

    best_noise_scale: float
    low: float
    high: float
    n_trials: int
    batch_sizes: tuple[int, ...]
    confidence: float

    def describe(self) -> str:
        """One line: g* and its interval."""
        return (
            f"g* = {self.best_noise_scale:.3g}, {round(100 * self.confidence)}% CI "
            f"{self.low:.3g}..{self.high:.3g} (the best lr of batch sizes "
            f"{list(self.batch_sizes)}, {self.n_trials} trials)"
        )


def _g_star(optima: list[BatchOptimum]) -> float:
    """The weighted median log g of the counted optima (the best error always counts)."""
    counted = [o for o in optima if o.counted]
    log_g = np.log([o.hparams().noise_scale for o in counted])
    w = np.array([o.weight for o in counted])
    order = np.argsort(log_g)
    cumulative = np.cumsum(w[order])
    return float(log_g[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def fit_noise_scale(
    study: optuna.Study,
    *,
    tolerance: float = TOLERANCE,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = 0.9,
    seed: int = 0,
) -> NoiseScaleFit:
    """The best noise scale g*, from the per-batch-size optima (docs/design.md §1: the best g
    barely moves with B and m, so one number summarises an SGD study).

    Raises:
        NotEnoughTrialsError: With fewer than :data:`MIN_TRIALS` usable complete trials.
    """
    points, optima = _optima(study, tolerance, n_bootstrap, confidence, seed)
    if len(points) < MIN_TRIALS:
        raise NotEnoughTrialsError(
            f"cannot find g*: study {study.study_name!r} has {len(points)} usable complete "
            f"trials, and g* needs {MIN_TRIALS}. Run more trials."
        )
    sizes = tuple(o.batch_size for o in optima if o.counted)
    evidence = [p for p in points if p.batch_size in sizes]
    boot = [_g_star(batch_optima(r)) for r in _resamples(evidence, n_bootstrap, seed)]
    low, high = _interval(boot, confidence)
    result = NoiseScaleFit(
        best_noise_scale=math.exp(_g_star(optima)),
        low=math.exp(low),
        high=math.exp(high),
        n_trials=len(points),
        batch_sizes=sizes,
        confidence=confidence,
    )
    _logger.info("study %r: %s", study.study_name, result.describe())
    return result
