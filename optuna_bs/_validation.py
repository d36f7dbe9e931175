"""Argument checks with one wording, in the spirit of scikit-learn's parameter constraints.

Every message reads `` `name` must be <constraint>, but got name=<value>.``: a wrong type is a
``TypeError``, a value out of range a ``ValueError``. Torch-free and Optuna-free.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Sequence


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None and math.isfinite(high):
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_int(name: str, value: object, low: int | None = None, high: float | None = None) -> int:
    """``value`` as an ``int`` in [low, high].

    Example:
        >>> check_int("n_trials", 3, low=1)
        3
        >>> check_int("n_trials", 0, low=1)
        Traceback (most recent call last):
        ...
        ValueError: `n_trials` must be an integer >= 1, but got n_trials=0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, but got {name}={value!r}.")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = _bounds(low, high, False, False)
        raise ValueError(f"`{name}` must be an integer {bounds}, but got {name}={value!r}.")
    return int(value)


def check_real(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a ``float`` between ``low`` and ``high`` (closed unless open); finite unless
    ``finite=False``, which lets ±inf through to the bounds (never NaN).

    Example:
        >>> check_real("momentum", 1.0, 0, 1, high_open=True)
        Traceback (most recent call last):
        ...
        ValueError: `momentum` must be a real number in [0, 1), but got momentum=1.0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, but got {name}={value!r}.")
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"`{name}` must be a finite real number, but got {name}={value!r}.")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        bounds = _bounds(low, high, low_open, high_open)
        raise ValueError(f"`{name}` must be a real number {bounds}, but got {name}={value!r}.")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a finite ``float`` > 0."""
    return check_real(name, value, 0, low_open=True)


def check_fraction(name: str, value: object, *, closed: bool) -> float:
    """``value`` in (0, 1] when ``closed``, else in (0, 1)."""
    return check_real(name, value, 0, 1, low_open=True, high_open=not closed)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise a ``ValueError`` naming them all and the
    closest one.

    Example:
        >>> check_choice("pruner", "none", ("median", "hyperband", "none"))
        'none'
        >>> check_choice("pruner", "medain", ("median", "none"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `pruner` must be one of median, none, ... (did you mean 'median'?).
    """
    if isinstance(value, str) and value in choices:
        return value
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"`{name}` must be one of {', '.join(choices)}, but got {name}={value!r}{hint}."
    )


def check_range(
    name: str, value: object, *, integer: bool = False, positive: bool = False
) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` pair with low <= high: integers >= 1 with ``integer``,
    numbers > 0 with ``positive``."""
    kind = numbers.Integral if integer else numbers.Real
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    ):
        what = "integers" if integer else "numbers"
        raise TypeError(
            f"`{name}` must be a (low, high) pair of {what}, but got {name}={value!r}."
        )
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"`{name}` must be finite, but got {name}=({low}, {high}).")
    if positive and low <= 0:
        raise ValueError(f"`{name}` must be > 0, but got {name}=({low}, {high}).")
    if integer and low < 1:
        raise ValueError(f"`{name}` must be >= 1, but got {name}=({low}, {high}).")
    if low > high:
        raise ValueError(f"`{name}` must have low <= high, but got {name}=({low}, {high}).")
    return low, high
