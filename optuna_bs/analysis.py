"""What a finished study learned: the fitted scaling rule, the best noise scale, the Pareto front.

Every function reads the COMPLETE trials of a study and the user attrs that
:class:`~optuna_bs.space.BatchScalingSpace` and :func:`~optuna_bs.trainer.fit` record on them
(``batch_size``, ``lr``, ``momentum``, ``n_train``, ``noise_scale``, ``train_seconds``,
``n_updates``). The error is the study's objective 0, to be minimised: one objective, or the
first of a two-objective study (``[val_error, train_seconds]``).

* :func:`fit_scaling_rule`: ϵ* = c · B^α with a bootstrap interval on α, and the best noise
  scale g* (DESIGN §1). Too few trials or batch sizes raise :class:`NotEnoughTrialsError`;
  the fit never returns a number it cannot back.
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

from optuna_bs.errors import OptunaBSError
from optuna_bs.rules import Hyperparameters, noise_scale, rescale

__all__ = [
    "NotEnoughTrialsError",
    "ParetoPoint",
    "ScalingFit",
    "Summary",
    "TrialPoint",
    "PARETO_COSTS",
    "best_point",
    "complete_points",
    "explored_batch_sizes",
    "metric_name",
    "fit_scaling_rule",
    "pareto_front",
    "recommend",
    "summarize",
]

_logger = logging.getLogger(__name__)

PARETO_COSTS = ("train_seconds", "n_updates")
_REQUIRED = ("batch_size", "lr", "momentum", "n_train")


class NotEnoughTrialsError(OptunaBSError):
    """The study has too few usable complete trials, or batch sizes, for what was asked."""


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
    """The learning-rate rule ϵ* = c · B^α and the best noise scale g* that a study found.

    ``alpha_low``/``alpha_high`` and ``noise_scale_low``/``noise_scale_high`` are bootstrap
    percentile intervals at ``confidence``. ``batch_sizes`` and ``best_lrs`` are the points
    the line was fitted to (per batch size, the median lr of its near-best trials), and
    ``n_selected`` how many near-best trials each holds. ``anchor_batch_size`` and
    ``anchor_lr`` are the weighted centre of those points, where reference rules are drawn
    through.
    """

    alpha: float
    alpha_low: float
    alpha_high: float
    coefficient: float
    best_noise_scale: float
    noise_scale_low: float
    noise_scale_high: float
    n_trials: int
    n_batch_sizes: int
    batch_sizes: tuple[int, ...]
    best_lrs: tuple[float, ...]
    n_selected: tuple[int, ...]
    anchor_batch_size: float
    anchor_lr: float
    quantile: float
    confidence: float

    def lr_at(self, batch_size: float) -> float:
        """The fitted learning rate c · B^α at ``batch_size``."""
        return self.coefficient * batch_size**self.alpha

    def describe(self) -> str:
        """One line: the rule with its interval, and g* with its interval."""
        pct = round(100 * self.confidence)
        return (
            f"lr* = {self.coefficient:.3g} * B^{self.alpha:.3f} "
            f"(alpha {pct}% CI {self.alpha_low:.3f}..{self.alpha_high:.3f}); "
            f"g* = {self.best_noise_scale:.3g} "
            f"({pct}% CI {self.noise_scale_low:.3g}..{self.noise_scale_high:.3g}); "
            f"{self.n_trials} trials over {self.n_batch_sizes} batch sizes"
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


def metric_name(study: optuna.Study) -> str:
    """The name of objective 0: the study's metric name, else the trials' ``metric`` attr."""
    if study.metric_names:
        return study.metric_names[0]
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if isinstance(t.user_attrs.get("metric"), str):
            return t.user_attrs["metric"]
    return "val_error"


def best_point(study: optuna.Study) -> TrialPoint:
    """The usable COMPLETE trial with the lowest error (the first one on a tie).

    Raises:
        NotEnoughTrialsError: If the study has no usable complete trial.
    """
    points = complete_points(study)
    if not points:
        raise NotEnoughTrialsError(
            f"study {study.study_name!r} has no COMPLETE trial with the user attrs "
            f"{', '.join(_REQUIRED)}: run some trials first."
        )
    return min(points, key=lambda p: p.error)


def fit_scaling_rule(
    study: optuna.Study,
    *,
    quantile: float = 0.25,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    min_trials_per_batch_size: int = 2,
    seed: int = 0,
) -> ScalingFit:
    """Fit ϵ* = c · B^α and the best noise scale g* to the near-best trials of each batch size.

    For each batch size with at least ``min_trials_per_batch_size`` complete trials, the best
    ``ceil(quantile · n)`` trials (at least one) are its near-best trials, and the median of
    their log lr is its best lr. A weighted least-squares line (weights: the number of
    near-best trials) of log best-lr on log B gives α and c. g* is the median noise scale of
    all near-best trials; a constant g* means α ≈ 1 for B ≪ N (Smith et al. 2018). The
    intervals are bootstrap percentiles, resampling the trials within each batch size.

    Args:
        study: A finished study (one objective, or the error first of two).
        quantile: The fraction of each batch size's trials counted as near-best, in (0, 1].
        n_bootstrap: Bootstrap resamples for the intervals, >= 1.
        confidence: The level of the intervals, in (0, 1).
        min_trials_per_batch_size: Batch sizes with fewer complete trials are left out.
        seed: Seed of the bootstrap.

    Returns:
        A :class:`ScalingFit`.

    Raises:
        NotEnoughTrialsError: If fewer than 3 batch sizes have enough complete trials: the
            fit says it cannot fit rather than return a number.
        ValueError: For an argument out of range.
        TypeError: For an argument of the wrong type.
    """
    quantile = _check_fraction("quantile", quantile, closed=True)
    confidence = _check_fraction("confidence", confidence, closed=False)
    n_bootstrap = _check_count("n_bootstrap", n_bootstrap, 1)
    min_per_b = _check_count("min_trials_per_batch_size", min_trials_per_batch_size, 1)
    _check_count("seed", seed, 0)

    points = complete_points(study)
    groups: dict[int, list[TrialPoint]] = {}
    for p in points:
        groups.setdefault(p.batch_size, []).append(p)
    usable = {b: ps for b, ps in sorted(groups.items()) if len(ps) >= min_per_b}
    if len(usable) < 3:
        counts = ", ".join(f"B={b}: {len(ps)}" for b, ps in sorted(groups.items())) or "none"
        raise NotEnoughTrialsError(
            f"cannot fit the scaling rule: it needs at least 3 batch sizes with "
            f">= {min_per_b} complete trials each, but study {study.study_name!r} has "
            f"{len(points)} usable complete trials ({counts}). Run more trials."
        )

    # Per batch size, arrays sorted by error: near-best trials are a prefix.
    arrays = []
    for ps in usable.values():
        ps = sorted(ps, key=lambda p: p.error)
        arrays.append(
            (
                np.array([p.error for p in ps]),
                np.log([p.lr for p in ps]),
                np.log([p.noise_scale for p in ps]),
            )
        )
    log_b = np.log(np.array(list(usable), dtype=float))
    alpha, log_c, log_g, best_log_lr, n_sel = _fit_once(arrays, log_b, quantile)

    rng = np.random.default_rng(seed)
    boot = np.empty((n_bootstrap, 2))
    for i in range(n_bootstrap):
        resampled = []
        for err, llr, lg in arrays:
            idx = rng.integers(0, len(err), len(err))
            order = idx[np.argsort(err[idx], kind="stable")]
            resampled.append((err[order], llr[order], lg[order]))
        a, _, g, _, _ = _fit_once(resampled, log_b, quantile)
        boot[i] = a, g
    tail = 100 * (1 - confidence) / 2
    (a_lo, g_lo), (a_hi, g_hi) = np.percentile(boot, [tail, 100 - tail], axis=0)
    w = np.asarray(n_sel, dtype=float)
    anchor_log_b = float(np.sum(w * log_b) / np.sum(w))
    fit = ScalingFit(
        alpha=float(alpha),
        alpha_low=float(a_lo),
        alpha_high=float(a_hi),
        coefficient=float(math.exp(log_c)),
        best_noise_scale=float(math.exp(log_g)),
        noise_scale_low=float(math.exp(g_lo)),
        noise_scale_high=float(math.exp(g_hi)),
        n_trials=sum(len(ps) for ps in usable.values()),
        n_batch_sizes=len(usable),
        batch_sizes=tuple(usable),
        best_lrs=tuple(float(math.exp(v)) for v in best_log_lr),
        n_selected=tuple(n_sel),
        anchor_batch_size=float(math.exp(anchor_log_b)),
        anchor_lr=float(math.exp(log_c + alpha * anchor_log_b)),
        quantile=quantile,
        confidence=confidence,
    )
    _logger.info("scaling fit of study %r: %s", study.study_name, fit.describe())
    return fit


def _fit_once(arrays, log_b: np.ndarray, quantile: float):
    """One fit over error-sorted per-batch-size arrays: α, log c, log g*, best log lrs, counts."""
    best_log_lr, n_sel, selected_log_g = [], [], []
    for err, llr, lg in arrays:
        k = max(1, math.ceil(quantile * len(err)))
        best_log_lr.append(float(np.median(llr[:k])))
        selected_log_g.append(lg[:k])
        n_sel.append(k)
    y, w = np.asarray(best_log_lr), np.asarray(n_sel, dtype=float)
    x_mean, y_mean = np.sum(w * log_b) / np.sum(w), np.sum(w * y) / np.sum(w)
    sxx = np.sum(w * (log_b - x_mean) ** 2)
    alpha = np.sum(w * (log_b - x_mean) * (y - y_mean)) / sxx
    log_g = float(np.median(np.concatenate(selected_log_g)))
    return float(alpha), float(y_mean - alpha * x_mean), log_g, best_log_lr, n_sel


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


def explored_batch_sizes(study: optuna.Study) -> tuple[int, int]:
    """The smallest and largest batch size among the usable complete trials.

    Raises:
        NotEnoughTrialsError: If the study has no usable complete trial.
    """
    sizes = [p.batch_size for p in complete_points(study)]
    if not sizes:
        raise NotEnoughTrialsError(f"study {study.study_name!r} has no usable complete trial.")
    return min(sizes), max(sizes)


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
    best = best_point(study)
    hp = Hyperparameters(
        best.batch_size, best.lr, best.momentum, best.n_train, beta2=best.beta2, eps=best.eps
    )
    if batch_size is None:
        return hp
    low, high = explored_batch_sizes(study)
    if isinstance(batch_size, numbers.Integral) and not low <= batch_size <= high:
        warnings.warn(
            f"batch_size={batch_size} is outside the batch sizes study "
            f"{study.study_name!r} explored ({low}..{high}): the {rule!r} rule is "
            "extrapolated there, so check it with a short run.",
            UserWarning,
            stacklevel=2,
        )
    return rescale(hp, batch_size, rule, alpha=alpha)


def _check_fraction(name: str, value: object, *, closed: bool) -> float:
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


@dataclass(frozen=True)
class Summary:
    """What a study learned, as plain data: what ``optuna-bs report`` prints and writes.

    ``fit`` is ``None`` when the rule cannot be fitted, and ``fit_reason`` then says why.
    ``good_batch_sizes`` are the explored batch sizes whose best error is within
    ``tolerance`` (relative) of the study's best and at most N/10, where the rules hold:
    the recommended range. ``recommendation`` is the best trial moved to ``batch_size``
    (its own when ``None``), and ``warnings`` holds what :func:`recommend` warned.
    """

    study_name: str
    metric: str
    n_trials: int
    n_complete: int
    n_pruned: int
    fit: ScalingFit | None
    fit_reason: str | None
    best: TrialPoint | None
    good_batch_sizes: tuple[int, ...]
    tolerance: float
    batch_size: int | None
    recommendation: Hyperparameters | None
    warnings: tuple[str, ...]
    pareto_seconds: tuple[ParetoPoint, ...]
    pareto_updates: tuple[ParetoPoint, ...]

    def rows(self) -> list[tuple[str, str]]:
        """(item, value) rows of the summary table."""
        rows = [
            ("study", f"{self.study_name} ({self.metric})"),
            ("trials", f"{self.n_trials}: {self.n_complete} complete, {self.n_pruned} pruned"),
        ]
        if self.fit is None:
            rows.append(("scaling rule", f"not fitted: {self.fit_reason}"))
        else:
            f, pct = self.fit, round(100 * self.fit.confidence)
            rows += [
                ("scaling rule", f"lr* = {f.coefficient:.3g} * B^{f.alpha:.3f}"),
                (f"alpha ({pct}% CI)", f"{f.alpha:.3f} ({f.alpha_low:.3f}..{f.alpha_high:.3f})"),
                (
                    f"best noise scale g* ({pct}% CI)",
                    f"{f.best_noise_scale:.3g} ({f.noise_scale_low:.3g}.."
                    f"{f.noise_scale_high:.3g})",
                ),
            ]
        if self.best is not None:
            b = self.best
            rows.append(
                (
                    "best trial",
                    f"#{b.number}: {self.metric}={b.error:.4f} at B={b.batch_size}, "
                    f"lr={b.lr:.4g}, m={b.momentum:.3g}, g={b.noise_scale:.3g}",
                )
            )
        if self.good_batch_sizes:
            rows.append(
                (
                    "recommended batch sizes",
                    f"{', '.join(map(str, self.good_batch_sizes))} (best {self.metric} within "
                    f"{self.tolerance:.0%} of the best, B <= N/10)",
                )
            )
        if self.recommendation is not None:
            r = self.recommendation
            rows.append(
                (
                    f"recommendation at B={r.batch_size}",
                    f"lr={r.lr:.4g}, m={r.momentum:.3g}, g={r.noise_scale:.3g}",
                )
            )
        rows += [("warning", w) for w in self.warnings]
        return rows

    def pareto_rows(self, cost: str) -> list[tuple[str, ...]]:
        """Header and rows of the Pareto front over ``cost`` (one of :data:`PARETO_COSTS`)."""
        front = self.pareto_seconds if cost == "train_seconds" else self.pareto_updates
        head = ("trial", self.metric, cost, "B", "lr")
        return [head] + [
            (f"#{p.number}", f"{p.error:.4f}", f"{p.cost:.4g}", str(p.batch_size), f"{p.lr:.4g}")
            for p in front
        ]

    def to_text(self) -> str:
        """The summary and both Pareto fronts as aligned plain-text tables."""
        blocks = [_align(self.rows(), header=False)]
        for cost in PARETO_COSTS:
            blocks.append(
                f"Pareto front, {self.metric} vs {cost}:\n" + _align(self.pareto_rows(cost))
            )
        return "\n\n".join(blocks)

    def to_markdown(self) -> str:
        """The summary as markdown, for an optuna-dashboard note."""
        lines = ["## optuna-bs report", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in self.rows()]
        for cost in PARETO_COSTS:
            head, *rows = self.pareto_rows(cost)
            lines += ["", f"### Pareto front, {self.metric} vs {cost}", ""]
            lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"


def summarize(
    study: optuna.Study,
    batch_size: int | None = None,
    *,
    rule: str = "noise-scale",
    tolerance: float = 0.05,
    **fit_options,
) -> Summary:
    """Fit, front and recommendation of a study in one :class:`Summary`; never raises on a
    study with too few trials (the summary says what is missing instead).

    Args:
        study: A finished study.
        batch_size: The batch size to recommend hyperparameters for; ``None`` for the best
            trial's own.
        rule: The rule of :func:`recommend`.
        tolerance: Relative margin on the best error that makes a batch size "good".
        **fit_options: Passed to :func:`fit_scaling_rule`.
    """
    _check_fraction("tolerance", tolerance, closed=True)
    trials = study.get_trials(deepcopy=False)
    state = optuna.trial.TrialState
    points = complete_points(study)
    fit, reason = None, None
    try:
        fit = fit_scaling_rule(study, **fit_options)
    except NotEnoughTrialsError as err:
        reason = str(err)
    best = min(points, key=lambda p: p.error) if points else None
    recommendation, caught = None, []
    good: list[int] = []
    if best is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recommendation = recommend(study, batch_size, rule)
        per_b: dict[int, float] = {}
        for p in points:
            per_b[p.batch_size] = min(p.error, per_b.get(p.batch_size, math.inf))
        limit = best.error * (1 + tolerance) if best.error > 0 else tolerance
        good = sorted(b for b, e in per_b.items() if e <= limit and b <= best.n_train / 10)
    metric = metric_name(study)
    return Summary(
        study_name=study.study_name,
        metric=metric,
        n_trials=len(trials),
        n_complete=sum(t.state == state.COMPLETE for t in trials),
        n_pruned=sum(t.state == state.PRUNED for t in trials),
        fit=fit,
        fit_reason=reason,
        best=best,
        good_batch_sizes=tuple(good),
        tolerance=tolerance,
        batch_size=batch_size,
        recommendation=recommendation,
        warnings=tuple(str(w.message) for w in caught),
        pareto_seconds=tuple(pareto_front(study, "train_seconds")),
        pareto_updates=tuple(pareto_front(study, "n_updates")),
    )


def _align(rows, *, header: bool = True) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
