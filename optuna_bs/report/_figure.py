"""What every figure shares: plotly loaded on demand, one colour per batch size across figures,
the layout, readable log axes, and words where a figure has nothing to draw."""

from __future__ import annotations

import math
import textwrap

import optuna

from optuna_bs.report.analysis import (
    why_no_points,
)

INSTALL_HINT = "pip install 'optuna-bs[dashboard]'"


# Viridis, without its pale yellow end, which vanishes on white.
_PALETTE = (
    *("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779"),
    *("#6ece58", "#b5de2b"),
)


_PRUNED_COLOR = "#9e9e9e"


_HEIGHT = 480  # px: every figure, in the report and the dashboard


def _go():
    try:
        import plotly.graph_objects as go
    except ImportError as err:
        raise ImportError(f"optuna-bs figures need plotly: {INSTALL_HINT}") from err
    return go


def batch_size_colors(study: optuna.Study) -> dict[int, str]:
    """One colour per batch size, from dark (smallest) to light (largest), over every trial
    of the study that records a batch size, whatever its state: so a batch size has the same
    colour in every figure, even where some figure shows none of its trials."""
    sizes = sorted(
        {
            int(t.user_attrs["batch_size"])
            for t in study.get_trials(deepcopy=False)
            if isinstance(t.user_attrs.get("batch_size"), int | float)
        }
    )
    last = max(len(sizes) - 1, 1)
    n = len(_PALETTE) - 1
    return {b: _PALETTE[round(i * n / last)] for i, b in enumerate(sizes)}


def _note(fig, text: str, *, width: int = 70, y: float = 0.5, size: int = 13) -> None:
    """Words on the figure, centred, wrapped at ``width`` characters: what it lacks, and why.

    A name is never split at its hyphens (a study name, ``lr-decay``)."""
    fig.add_annotation(
        text="<br>".join(textwrap.wrap(text, width, break_on_hyphens=False)),
        **{"xref": "paper", "yref": "paper", "x": 0.5, "y": y, "showarrow": False},
        font={"size": size},
    )


def _say_why_empty(fig, study: optuna.Study, attr: str | None = None):
    """A figure with nothing to draw says why in words, instead of showing blank axes."""
    reason = why_no_points(study, attr)
    if reason is None:
        return fig
    _note(fig, f"Nothing to draw: {reason}", width=60)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _layout(fig, title: str, x: str, y: str, *, log_x: bool = False, log_y: bool = False):
    """The layout every figure shares: legends below (the dashboard's panels are narrow), the
    toolbar upright at the right edge (never over the title), full labels on log axes."""
    fig.update_layout(
        # The title sits in the lower half of a tall top margin, the toolbar in its upper
        # half: the toolbar never covers the title.
        title={
            "text": title,
            "font": {"size": 15},
            "x": 0.01,
            "xanchor": "left",
            "y": 1 - 52 / _HEIGHT,
            "yanchor": "middle",
            "yref": "container",
        },
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "top", "y": -0.2},
        margin={"l": 60, "r": 20, "t": 76, "b": 40},
        height=_HEIGHT,
    )
    fig.update_xaxes(title=x, **(_log_axis(fig, "x") if log_x else {}))
    fig.update_yaxes(title=y, **(_log_axis(fig, "y") if log_y else {}))


#: Mantissas of log-axis ticks, tried in turn: 1-2-5; decades on a wide range; finer steps
#: on a narrow one.
_TICK_MANTISSAS = ((1, 2, 5), (1,), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8))


def log_ticks(values) -> list[float]:
    """Ticks for a log axis spanning ``values``: 1-2-5 when that gives 3 to 8 ticks, decades
    when it gives more, finer steps when fewer.

    Every tick gets a full label ("0.02", "20"), never plotly's bare minor digit "2".

    Example:
        >>> log_ticks([0.009, 0.4])
        [0.01, 0.02, 0.05, 0.1, 0.2]
        >>> log_ticks([0.76, 1.2])
        [0.8, 1.0, 1.2]
    """
    positive = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    if not positive:
        return []
    low, high = min(positive) / 1.1, max(positive) * 1.1  # what the axis shows, about
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    best: list[float] = []
    for mantissas in _TICK_MANTISSAS:
        ticks = [
            float(f"{m * 10.0**k:.12g}")
            for k in range(first, last + 1)
            for m in mantissas
            if low <= m * 10.0**k <= high
        ]
        if 3 <= len(ticks) <= 8:
            return ticks
        if len(ticks) > len(best) and (len(ticks) <= 8 or not best):
            best = ticks
    return best


def _log_axis(fig, axis: str) -> dict:
    """A log axis whose ticks are :func:`log_ticks` of the figure's own values."""
    values = [v for trace in fig.data for v in (getattr(trace, axis, None) or ())]
    ticks = log_ticks(v for v in values if isinstance(v, (int, float)))
    return {
        "type": "log",
        "tickvals": ticks,
        "ticktext": [f"{t:g}" for t in ticks],
        "minor": {"showgrid": False},
    }
