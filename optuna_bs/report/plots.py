"""Plotly figures of what a study learned.

Each ``plot_*`` is a ``_*_info()`` that returns plain data (tests check it) and a drawing step
that returns a ``plotly.graph_objects.Figure``. plotly and optuna-dashboard are optional
(``pip install 'optuna-bs[dashboard]'``): they are imported only when a figure is drawn.

* :func:`plot_noise_scale`: validation error against noise scale, coloured by B, g* marked.
* :func:`plot_lr_vs_batch_size`: lr against B, log-log: the trials, each batch size's best
  lr, the fitted ϵ*(B) with its interval, and the linear and square-root rules beside it.
* :func:`plot_pareto_front`: error against training seconds or parameter updates.
* :func:`plot_learning_curves`: validation value per epoch, pruned trials dimmed.

A batch size keeps one colour in every figure of a study (:func:`batch_size_colors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import optuna

from optuna_bs.errors import NotEnoughTrialsError
from optuna_bs.report._figure import (
    _PRUNED_COLOR,
    _go,
    _layout,
    _note,
    _say_why_empty,
    batch_size_colors,
)
from optuna_bs.report.analysis import (
    ParetoPoint,
    complete_points,
    objective_name,
    pareto_front,
    study_rule,
)
from optuna_bs.report.fits import NoiseScaleFit, ScalingFit, fit_noise_scale, fit_scaling_rule

if TYPE_CHECKING:
    import plotly.graph_objects as go

FIGURES = ("noise-scale", "lr-vs-batch-size", "pareto-seconds", "pareto-updates", "curves")
#: An Adam-family study's figures: g means nothing for Adam, so error against lr instead.
ADAM_FIGURES = ("error-vs-lr", *FIGURES[1:])


def _try(function, study: optuna.Study, given=None):
    """``(given, None)``, else ``(function(study), None)``, else ``(None, why not)``."""
    if given is not None:
        return given, None
    try:
        return function(study), None
    except NotEnoughTrialsError as err:
        return None, str(err)


@dataclass(frozen=True)
class NoiseScaleInfo:
    """Error against noise scale; ``best_noise_scale`` is None (with ``reason``) if unfitted."""

    numbers: tuple[int, ...]
    noise_scales: tuple[float, ...]
    errors: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    colors: dict[int, str]
    best_noise_scale: float | None
    interval: tuple[float, float] | None
    reason: str | None
    metric: str


def _noise_scale_info(
    study: optuna.Study, fit: NoiseScaleFit | None = None, *, fit_g: bool = True
) -> NoiseScaleInfo:
    points = complete_points(study)
    fit, reason = _try(fit_noise_scale, study, fit) if fit_g else (None, "not an SGD study")
    return NoiseScaleInfo(
        numbers=tuple(p.number for p in points),
        noise_scales=tuple(p.noise_scale for p in points),
        errors=tuple(p.error for p in points),
        batch_sizes=tuple(p.batch_size for p in points),
        colors=batch_size_colors(study),
        best_noise_scale=None if fit is None else fit.best_noise_scale,
        interval=None if fit is None else (fit.low, fit.high),
        reason=reason,
        metric=objective_name(study),
    )


def _band(fig, x, y, name: str) -> None:
    """A shaded area: a fit's interval."""
    fig.add_trace(
        _go().Scatter(
            x=x, y=y, fill="toself", mode="none", fillcolor="rgba(214,39,40,0.12)", name=name
        )
    )


def _by_batch_size(fig, xs, info) -> None:
    """One marker trace per batch size: ``xs`` against the error."""
    go = _go()
    for b, color in info.colors.items():
        idx = [i for i, bi in enumerate(info.batch_sizes) if bi == b]
        if not idx:
            continue
        fig.add_trace(
            go.Scatter(
                x=[xs[i] for i in idx],
                y=[info.errors[i] for i in idx],
                mode="markers",
                name=f"B={b}",
                marker={"color": color, "size": 9},
                text=[f"trial #{info.numbers[i]}" for i in idx],
            )
        )


def plot_error_vs_lr(study: optuna.Study) -> go.Figure:
    """Validation error against the learning rate (log x), one colour per batch size: the
    first figure of an Adam-family study, for which the SGD noise scale means nothing."""
    info = _noise_scale_info(study, fit_g=False)
    fig = _go().Figure()
    _by_batch_size(fig, tuple(p.lr for p in complete_points(study)), info)
    _layout(fig, f"{info.metric} against learning rate", "learning rate", info.metric, log_x=True)
    return _say_why_empty(fig, study)


def plot_noise_scale(study: optuna.Study, *, fit: NoiseScaleFit | None = None) -> go.Figure:
    """Validation error against noise scale g (log x), one colour per batch size, g* marked."""
    info = _noise_scale_info(study, fit)
    go = _go()
    fig = go.Figure()
    _by_batch_size(fig, info.noise_scales, info)
    title = f"{info.metric} against noise scale g: g* not fitted (too few trials)"
    if info.best_noise_scale is not None and info.errors:
        (low, high), y = info.interval, (min(info.errors), max(info.errors))
        _band(fig, [low, high, high, low, low], [y[0], y[0], y[1], y[1], y[0]], "g* interval")
        fig.add_trace(
            go.Scatter(
                x=[info.best_noise_scale] * 2,
                y=list(y),
                mode="lines",
                line={"color": "#d62728", "dash": "dash"},
                name=f"g* = {info.best_noise_scale:.3g}",
            )
        )
        title = f"{info.metric} against noise scale g: g* = {info.best_noise_scale:.3g}"
    _layout(fig, title, "noise scale g = lr (N/B - 1) / (1 - m)", info.metric, log_x=True)
    return _say_why_empty(fig, study)


@dataclass(frozen=True)
class LrInfo:
    """Learning rate against batch size: the trials, each batch size's best lr, the fitted
    ϵ*(B) with its interval, and the linear and square-root rules through the fitted curve
    at the middle of the counted batch sizes.

    The lines are empty when no curve can be fitted (``reason`` says why).
    """

    numbers: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    errors: tuple[float, ...]
    colors: dict[int, str]
    fit: ScalingFit | None
    reason: str | None
    line_batch_sizes: tuple[float, ...]
    fitted_lrs: tuple[float, ...]
    band_low: tuple[float, ...]
    band_high: tuple[float, ...]
    linear_lrs: tuple[float, ...]
    sqrt_lrs: tuple[float, ...]


def _lr_info(study: optuna.Study, fit: ScalingFit | None = None) -> LrInfo:
    points = complete_points(study)
    fit, reason = _try(fit_scaling_rule, study, fit)
    sizes = tuple(p.batch_size for p in points)
    line: tuple[float, ...] = ()
    fitted = low = high = linear = sqrt = ()
    if fit is not None:
        line = tuple(float(b) for b in np.geomspace(min(sizes), max(sizes), 25))
        fitted = tuple(fit.lr_at(b) for b in line)
        low, high = zip(*(fit.interval_at(b) for b in line), strict=True)
        b0 = math.sqrt(fit.batch_sizes[0] * fit.batch_sizes[-1])
        lr0 = fit.lr_at(b0)
        linear = tuple(lr0 * (b / b0) for b in line)  # Goyal et al. 2017
        sqrt = tuple(lr0 * math.sqrt(b / b0) for b in line)  # Hoffer et al. 2017
    return LrInfo(
        numbers=tuple(p.number for p in points),
        batch_sizes=sizes,
        lrs=tuple(p.lr for p in points),
        errors=tuple(p.error for p in points),
        colors=batch_size_colors(study),
        fit=fit,
        reason=reason,
        line_batch_sizes=line,
        fitted_lrs=fitted,
        band_low=low,
        band_high=high,
        linear_lrs=linear,
        sqrt_lrs=sqrt,
    )


def plot_lr_vs_batch_size(study: optuna.Study, *, fit: ScalingFit | None = None) -> go.Figure:
    """lr against B on log axes: the trials (shaded by error), each batch size's best lr
    (filled where it counts in the fit, hollow where its best error is too far from the
    study's), the fitted ϵ*(B) with its interval, and the linear and sqrt rules."""
    info = _lr_info(study, fit)
    metric = objective_name(study)
    go = _go()
    fig = go.Figure()
    if info.fit is not None:
        xs, pct = info.line_batch_sizes, round(100 * info.fit.confidence)
        ys = info.band_high + info.band_low[::-1]
        _band(fig, xs + xs[::-1], ys, f"{pct}% interval of a batch size's best lr")
    fig.add_trace(
        go.Scatter(
            x=info.batch_sizes,
            y=info.lrs,
            mode="markers",
            name=f"trials (shade: {metric})",
            marker={
                "color": info.errors,
                # Greys, not viridis: viridis means a batch size in every figure.
                "colorscale": "Greys_r",
                "size": 7,
                "line": {"color": "#777", "width": 0.5},
                "colorbar": {"title": {"text": metric}, "thickness": 12},
            },
            text=[
                f"trial #{n}, {metric} {e:.4f}"
                for n, e in zip(info.numbers, info.errors, strict=True)
            ],
        )
    )
    title = "Learning rate against batch size: no curve fitted"
    if info.fit is not None:
        f = info.fit
        for o in f.optima:
            color = info.colors.get(o.batch_size, "#d62728")
            fig.add_trace(
                go.Scatter(
                    x=[o.batch_size],
                    y=[o.lr],
                    mode="markers",
                    name=f"best lr at B={o.batch_size}" + ("" if o.counted else " (not counted)"),
                    marker={
                        "symbol": "diamond" if o.counted else "diamond-open",
                        "size": 14,
                        "color": color,
                        "line": {"color": color, "width": 2},
                    },
                    text=f"{o.method}, {o.n_trials} trials, best {metric} {o.error:.4f}",
                )
            )
        lines = (
            (
                info.fitted_lrs,
                f"fit: {f.model}"
                + ("" if info.band_low else " (no interval: too few trials per batch size)"),
                {"color": "#d62728", "width": 3},
            ),
            (info.linear_lrs, "linear rule: lr ∝ B", {"color": "#555", "dash": "dash"}),
            (info.sqrt_lrs, "sqrt rule: lr ∝ √B", {"color": "#555", "dash": "dot"}),
        )
        for ys, name, style in lines:
            fig.add_trace(
                go.Scatter(x=info.line_batch_sizes, y=ys, mode="lines", name=name, line=style)
            )
        title = f"Learning rate against batch size: {f.model}, slope {f.alpha:.2f} mid-range"
    elif info.reason:
        _note(fig, f"No curve: {info.reason}", width=72, y=1.0, size=11)
    _layout(fig, title, "batch size B", "learning rate", log_x=True, log_y=True)
    ticks = [2**k for k in range(31)]  # B is a power of two: label each one
    fig.update_xaxes(tickvals=ticks, ticktext=[str(t) for t in ticks])
    return _say_why_empty(fig, study)


@dataclass(frozen=True)
class ParetoInfo:
    """Every trial's (cost, error) and the front among them."""

    cost: str
    numbers: tuple[int, ...]
    costs: tuple[float, ...]
    errors: tuple[float, ...]
    front: tuple[ParetoPoint, ...]
    metric: str


def _pareto_info(study: optuna.Study, x: str = "train_seconds") -> ParetoInfo:
    front = pareto_front(study, x)
    points = [p for p in complete_points(study) if getattr(p, x) is not None]
    return ParetoInfo(
        cost=x,
        numbers=tuple(p.number for p in points),
        costs=tuple(float(getattr(p, x)) for p in points),
        errors=tuple(p.error for p in points),
        front=tuple(front),
        metric=objective_name(study),
    )


def plot_pareto_front(study: optuna.Study, x: str = "train_seconds") -> go.Figure:
    """Validation error against ``x`` (``"train_seconds"`` or ``"n_updates"``), front joined."""
    info = _pareto_info(study, x)
    go = _go()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=info.costs,
            y=info.errors,
            mode="markers",
            name="trials",
            marker={"color": "#b0b0b0", "size": 8},
            text=[f"trial #{n}" for n in info.numbers],
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[p.cost for p in info.front],
            y=[p.error for p in info.front],
            mode="lines+markers",
            line_shape="hv",
            name="Pareto front",
            marker={"color": "#d62728", "size": 10},
            text=[f"trial #{p.number}, B={p.batch_size}, lr={p.lr:.3g}" for p in info.front],
        )
    )
    label = {"train_seconds": "training time [s]", "n_updates": "parameter updates"}[x]
    # One run whose loss blew up would flatten a linear axis: past a decade, it is log.
    positive = [e for e in info.errors if e > 0]
    log_y = len(positive) == len(info.errors) > 1 and max(positive) > 10 * min(positive)
    title = f"Pareto front: {info.metric} against {label}"
    _layout(fig, title, label, info.metric, log_x=True, log_y=log_y)
    return _say_why_empty(fig, study, x)


@dataclass(frozen=True)
class Curve:
    """One trial's validation values per epoch; ``pruned`` curves are drawn dimmed."""

    number: int
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    pruned: bool
    batch_size: int | None


@dataclass(frozen=True)
class CurvesInfo:
    curves: tuple[Curve, ...]
    colors: dict[int, str]
    metric: str


def _curves_info(study: optuna.Study) -> CurvesInfo:
    state = optuna.trial.TrialState
    curves = []
    for t in study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED)):
        steps = sorted(t.intermediate_values)
        if steps:
            curves.append(
                Curve(
                    number=t.number,
                    epochs=tuple(steps),
                    values=tuple(t.intermediate_values[s] for s in steps),
                    pruned=t.state == state.PRUNED,
                    batch_size=t.user_attrs.get("batch_size"),
                )
            )
    # Pruned first, so they lie underneath; then by batch size, so the legend reads in order.
    curves.sort(key=lambda c: (not c.pruned, c.batch_size or 0, c.number))
    return CurvesInfo(tuple(curves), batch_size_colors(study), objective_name(study))


def plot_learning_curves(study: optuna.Study) -> go.Figure:
    """Validation value per epoch for every trial; pruned ones grey and faint."""
    info = _curves_info(study)
    go = _go()
    fig = go.Figure()
    shown: set[str] = set()
    for c in info.curves:
        group = "pruned" if c.pruned else f"B={c.batch_size}"
        color = _PRUNED_COLOR if c.pruned else info.colors.get(c.batch_size, "#1f77b4")
        fig.add_trace(
            go.Scatter(
                x=c.epochs,
                y=c.values,
                mode="lines",
                name=group,
                legendgroup=group,
                showlegend=group not in shown,
                opacity=0.3 if c.pruned else 0.9,
                line={"color": color, "width": 1 if c.pruned else 2},
                text=f"trial #{c.number}",
            )
        )
        shown.add(group)
    _layout(fig, "Learning curves (pruned trials dimmed)", "epoch", info.metric)
    last = max((max(c.epochs) for c in info.curves if c.epochs), default=1)
    fig.update_xaxes(dtick=max(1, math.ceil(last / 10)))  # whole epochs, never "1.5"
    if not info.curves:
        _note(fig, "Nothing to draw: no trial has reported an intermediate value yet.")
    return fig


def figures(
    study: optuna.Study,
    *,
    fit: ScalingFit | None = None,
    noise: NoiseScaleFit | None = None,
) -> dict[str, go.Figure]:
    """Every figure of the report, by id (:data:`FIGURES`, or :data:`ADAM_FIGURES` for an
    Adam-family study); fits given are not redone."""
    adam = study_rule(study)[1] == "adam"
    built = (
        plot_error_vs_lr(study) if adam else plot_noise_scale(study, fit=noise),
        plot_lr_vs_batch_size(study, fit=fit),
        plot_pareto_front(study, "train_seconds"),
        plot_pareto_front(study, "n_updates"),
        plot_learning_curves(study),
    )
    return dict(zip(ADAM_FIGURES if adam else FIGURES, built, strict=True))
