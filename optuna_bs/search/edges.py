"""Ranges that do not shut out the optimum: when a study's best trials pile at an edge of a
searched range, that edge moves out.

A range chosen before the study (``noise_scale = "auto"``, from the range test; ``batch_size
= "auto"``, from the critical batch size) is a guess about the task. When the best trials sit
at one of its edges, the optimum may lie beyond it. :class:`RangeWidening` watches the study's
trials (it is an Optuna callback), widens such an edge by half the first range's width on a
log scale, and stores the new ranges in the study, so that every worker draws from them, and a
resumed study keeps them. :func:`edge_of` and :func:`pile_at_edge` are the one rule of what
"at an edge" means: the ladder's search and the report use them too.

Widening stays within Optuna's rules: a parameter's distribution only grows, so every earlier
trial stays inside it, and the samplers read a dynamic range as they read any other.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna_bs.rules.formulas import Hyperparameters
    from optuna_bs.search.space import BatchScalingSpace

_logger = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

Side = Literal["lower", "upper"]

#: The outer share of a range's width (on a log scale) that counts as its edge. 0.15 widened
#: the larger MNIST-1D's range at its upper edge in 4 of 20 auto studies, where g* lay inside,
#: 1.2-1.5x below it, and cost the ladder half a point (BENCHMARKS.md, "ranges that widen").
EDGE_ZONE = 0.08
#: The finished trials a range needs before its edges are judged.
MIN_TRIALS = 5
#: The study user attr holding the ranges its trials draw from now (``{name: [low, high]}``).
RANGES_ATTR = "auto_ranges"
#: The study user attr listing each widening, in words and numbers, for the report.
WIDENINGS_ATTR = "range_widenings"


def edge_of(
    value: float, low: float, high: float, *, log: bool = True, zone: float = EDGE_ZONE
) -> Side | None:
    """The edge of ``[low, high]`` that ``value`` lies at (within ``zone`` of its width, on a
    log scale by default), or ``None`` for the interior or a range of one value.

    Example:
        >>> edge_of(11.0, 10.0, 1000.0), edge_of(100.0, 10.0, 1000.0)
        ('lower', None)
    """
    if high <= low:
        return None
    scale = math.log if log else float
    width = scale(high) - scale(low)
    where = (scale(value) - scale(low)) / width
    if where <= zone:
        return "lower"
    if where >= 1 - zone:
        return "upper"
    return None


def pile_at_edge(
    points: Sequence[tuple[float, float]], low: float, high: float, *, log: bool = True
) -> Side | None:
    """The edge the best points pile at, or ``None``.

    ``points`` are (value to minimise, parameter) pairs; a NaN counts as the worst value (a
    diverged trial). The best ``max(3, n // 5)`` are looked at, once there are
    :data:`MIN_TRIALS` points: they pile at an edge when the best of them lies there and so
    does a majority of them.
    """
    if len(points) < MIN_TRIALS:
        return None
    ranked = sorted(points, key=lambda p: math.inf if math.isnan(p[0]) else p[0])
    top = [p for p in ranked[: max(3, len(points) // 5)] if math.isfinite(p[0])]
    if not top:
        return None
    side = edge_of(top[0][1], low, high, log=log)  # None: the best lies inside
    at = sum(edge_of(x, low, high, log=log) == side for _, x in top)
    return side if 2 * at > max(3, len(points) // 5) else None


def widen(
    low: float,
    high: float,
    side: Side,
    *,
    factor: float | None = None,
    limits: tuple[float, float] = (0.0, math.inf),
    powers_of_two: bool = False,
) -> tuple[float, float]:
    """``[low, high]`` with ``side`` moved out by ``factor`` (default: half the range's width on
    a log scale; at least 2), within ``limits``; with ``powers_of_two`` the new edge is the
    power of two that stays within them (an ``int``).

    Example:
        >>> widen(10.0, 1000.0, "lower")
        (1.0, 1000.0)
    """
    factor = max(2.0, math.sqrt(high / low) if factor is None else factor)
    if side == "lower":
        new = max(low / factor, limits[0])
        return (2 ** math.ceil(math.log2(new)) if powers_of_two else new), high
    new = min(high * factor, limits[1])
    return low, (2 ** math.floor(math.log2(new)) if powers_of_two else new)


def finished_points(
    trials: Iterable[FrozenTrial], name: str, *, sign: float = 1.0
) -> list[tuple[float, float]]:
    """(value to minimise, ``name``'s value) of the finished trials that have one: a complete
    trial by its first value (times ``sign``: -1 for a maximised one), a pruned one by the
    last value it reported (NaN, the worst, for none or a diverged one), as Optuna's TPE
    ranks them."""
    out = []
    for trial in trials:
        # Its parameter, else its user attr: the space records ``batch_size`` so.
        x = trial.params.get(name, trial.user_attrs.get(name))
        if x is None:
            continue
        if trial.state == TrialState.COMPLETE and trial.values:
            out.append((sign * trial.values[0], float(x)))
        elif trial.state == TrialState.PRUNED:
            steps = trial.intermediate_values
            out.append((sign * steps[max(steps)] if steps else math.nan, float(x)))
    return out


def _sign(study: optuna.Study) -> float:
    return -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0


class RangeWidening:
    """Widen a study's ranges where its best trials pile at an edge: an Optuna callback, and the
    one source of the ranges each trial draws from.

    Args:
        ranges: The ranges to start from, by name (``noise_scale``, ``batch_size``, ...).
        limits: How far each may widen, by name (default: ``(0, inf)``).
        powers_of_two: The names whose edges stay powers of two (``batch_size``).
        params: The trial parameter (or user attr) that each range's values are read from,
            where it is not the range's own name (``{"lr": "reference_lr"}``).

    The ranges live in the study's user attr :data:`RANGES_ATTR`; until a first widening
    they are ``ranges``. Two workers that widen at once from the same ranges write the same
    new ones; a worker that reads them after another's widening judges its trials against the
    wider range, where the old edge is inside.

    Example::

        space = BatchScalingSpace(n_train=len(train), noise_scale=(30.0, 450.0))
        widening = RangeWidening({"noise_scale": space.noise_scale})

        def objective(trial):
            hp = widening.suggest(space, trial)  # the space over the study's ranges now
            ...

        study.optimize(objective, n_trials=30, callbacks=[widening])
    """

    def __init__(
        self,
        ranges: dict[str, tuple[float, float]],
        *,
        limits: dict[str, tuple[float, float]] | None = None,
        powers_of_two: Sequence[str] = (),
        params: dict[str, str] | None = None,
    ) -> None:
        self.initial = {k: (lo, hi) for k, (lo, hi) in ranges.items()}
        self.limits = dict(limits or {})
        self.powers_of_two = frozenset(powers_of_two)
        self.params = dict(params or {})

    def ranges(self, study: optuna.Study) -> dict[str, tuple[float, float]]:
        """The ranges the study's next trial draws from."""
        return self._ranges(study.user_attrs)

    def _ranges(self, attrs: dict) -> dict[str, tuple[float, float]]:
        stored = attrs.get(RANGES_ATTR) or {}
        return {k: tuple(stored.get(k, v)) for k, v in self.initial.items()}

    def suggest(self, space: BatchScalingSpace, trial: optuna.Trial) -> Hyperparameters:
        """``space.suggest(trial)`` over the ranges the trial's study holds now."""
        return space.with_ranges(**self.ranges(trial.study)).suggest(trial)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """After each trial: widen each range whose best trials pile at an edge."""
        attrs = study.user_attrs  # one read of the store
        current = self._ranges(attrs)
        trials = study.get_trials(deepcopy=False, states=_FINISHED)
        history = list(attrs.get(WIDENINGS_ATTR) or [])
        stored, n_before = dict(attrs.get(RANGES_ATTR) or {}), len(history)
        for name, (low, high) in current.items():
            points = finished_points(trials, self.params.get(name, name), sign=_sign(study))
            side = pile_at_edge(points, low, high)
            if side is None:
                continue
            # Steps of one size: half the width of the range the study started with.
            first = [h["from"] for h in history if h["name"] == name] or [(low, high)]
            first_low, first_high = first[0]
            new = widen(
                low,
                high,
                side,
                factor=math.sqrt(first_high / first_low),
                limits=self.limits.get(name, (0.0, math.inf)),
                powers_of_two=name in self.powers_of_two,
            )
            if new == (low, high):
                continue
            stored[name] = list(new)
            history.append(
                {
                    "name": name,
                    "side": side,
                    "from": [low, high],
                    "to": list(new),
                    "after": len(trials),
                }
            )
            _logger.info(
                "%s: the best trials sit at the %s edge of [%.4g, %.4g]; it now searches "
                "[%.4g, %.4g].",
                name,
                side,
                low,
                high,
                *new,
            )
        if len(history) > n_before:
            study.set_user_attr(RANGES_ATTR, stored)
            study.set_user_attr(WIDENINGS_ATTR, history)


def best_at_edges(study: optuna.Study) -> list[str]:
    """In words, each searched parameter whose best trial lies at an edge of the range it was
    drawn from, with that range; then each widening the study made (empty for none).

    Example (the words): "noise_scale = 125 lies at the lower edge of its range [123, 1840]:
    the optimum may lie beyond it".
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    points = [t for t in trials if t.values and math.isfinite(t.values[0])]
    words = [
        f"{change['name']} widened at its {change['side']} edge after {change['after']} "
        f"finished trials: [{change['from'][0]:.4g}, {change['from'][1]:.4g}] -> "
        f"[{change['to'][0]:.4g}, {change['to'][1]:.4g}]"
        for change in study.user_attrs.get(WIDENINGS_ATTR) or []
    ]
    if not points:
        return words
    best = min(points, key=lambda t: _sign(study) * t.values[0])
    for name, dist in best.distributions.items():
        low, high = getattr(dist, "low", None), getattr(dist, "high", None)
        if low is None or high is None or high <= low:
            continue  # categorical, or fixed
        value = best.params[name]
        log = bool(getattr(dist, "log", False)) and low > 0  # log2_batch_size: linear
        side = edge_of(value, low, high, log=log)
        if side is None:
            continue
        if name.startswith("log2_"):  # the space's log2_batch_size: said as B
            name, value, low, high = name[5:], 2**value, 2**low, 2**high
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        words.append(
            f"{name} = {shown} lies at the {side} edge of its range [{low:.4g}, {high:.4g}]: "
            "the optimum may lie beyond it"
        )
    return words
