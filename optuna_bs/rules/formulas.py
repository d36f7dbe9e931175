"""The formulas of the scaling rules, on plain numbers: SGD's noise scale, AdamW's
weight-decay timescale, McCandlish's and Li et al.'s curves, β2's half-life, and
:class:`Hyperparameters`, the one record of a trial's values.

This module imports neither torch nor Optuna. The formulas are the contract of
docs/design.md §1 and §3.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field

from optuna_bs._validation import check_int, check_positive, check_real
from optuna_bs.vocabulary import DEFAULTS

#: Optimizer families. A name of :func:`optuna_bs.fit` (or an optimizer's class name, any
#: case) maps to its family; the rules say which families they are valid for.
OPTIMIZER_FAMILIES = {
    "sgd": "sgd",
    "adam": "adam",
    "adamw": "adam",
    "nadam": "adam",
    "radam": "adam",
    "adamax": "adam",
    "rmsprop": "adam",
}


def largest_valid_batch(n_train: int) -> float:
    """N/10: the largest batch size the scaling rules are validated at (Smith et al. 2018,
    "Don't decay the learning rate, increase the batch size"); beyond it the gains of a larger
    batch stop. The one home of N/10: the rules warn past it, the batch ramp stops at it, the
    recommended batch sizes and the critical batch size's range end at it.

    Example:
        >>> largest_valid_batch(50_000)
        5000.0
    """
    return n_train / 10


def optimizer_family(name: str | None) -> str | None:
    """``"sgd"`` or ``"adam"`` for an optimizer's name or class name; ``None`` if unknown.

    Example:
        >>> optimizer_family("AdamW"), optimizer_family("sgd"), optimizer_family("Lion")
        ('adam', 'sgd', None)
    """
    return OPTIMIZER_FAMILIES.get(name.lower()) if isinstance(name, str) else None


def _type_error(name: str, kind: str, value: object) -> TypeError:
    return TypeError(
        f"`{name}` must be {kind}, but got {name}={value!r} of type {type(value).__name__}."
    )


def _check_beta(name: str, value: object) -> float:
    return check_real(name, value, 0.0, 1.0, high_open=True)


def _check_sizes(batch_size: object, n_train: object) -> tuple[int, int]:
    """``(B, N)``: ``n_train`` checked (>= 2), then ``batch_size`` against it."""
    n = check_int("n_train", n_train, low=2)
    b = check_int("batch_size", batch_size)
    if not 1 <= b <= n - 1:
        raise ValueError(
            f"`batch_size` must be an integer in [1, n_train - 1] = [1, {n - 1}], "
            f"but got batch_size={batch_size!r}."
        )
    return b, n


def _noise_factor(batch_size: object, n_train: object, momentum: object) -> float:
    """Check B, N and m and return (N/B − 1) / (1 − m), so that g = ϵ · factor."""
    b, n = _check_sizes(batch_size, n_train)
    m = _check_beta("momentum", momentum)
    # Smith, Kindermans, Ying & Le 2018, eq. 2; (N - B) / B is N/B - 1 without cancellation.
    return (n - b) / b / (1.0 - m)


def noise_scale(lr: float, batch_size: int, n_train: int, momentum: float = 0.0) -> float:
    """Return the noise scale g of SGD with momentum.

    Args:
        lr: Learning rate ϵ, > 0.
        batch_size: Batch size B, an integer in [1, n_train - 1].
        n_train: Training-set size N, an integer >= 2.
        momentum: Momentum m in [0, 1).

    Returns:
        g = ϵ · (N/B − 1) / (1 − m).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or not finite.

    Example:
        >>> round(noise_scale(0.1, batch_size=128, n_train=3200, momentum=0.9), 6)
        24.0
    """
    return check_positive("lr", lr) * _noise_factor(batch_size, n_train, momentum)


def lr_for_noise_scale(
    noise_scale: float, batch_size: int, n_train: int, momentum: float = 0.0
) -> float:
    """Return the learning rate that gives noise scale g: the inverse of :func:`noise_scale`.

    Args:
        noise_scale: Noise scale g, > 0.
        batch_size: Batch size B, an integer in [1, n_train - 1].
        n_train: Training-set size N, an integer >= 2.
        momentum: Momentum m in [0, 1).

    Returns:
        ϵ = g · (1 − m) / (N/B − 1).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or not finite.

    Example:
        >>> round(lr_for_noise_scale(24.0, batch_size=128, n_train=3200, momentum=0.9), 6)
        0.1
    """
    g = check_positive("noise_scale", noise_scale)
    return g / _noise_factor(batch_size, n_train, momentum)


@dataclass(frozen=True)
class Hyperparameters:
    """One point of the (batch size, learning rate, momentum) space, checked on creation.

    For Adam-family optimizers ``momentum`` plays the role of β1, and ``beta2`` and ``eps``
    may be given (keyword-only), as may ``weight_decay`` λ (AdamW's decoupled decay, or SGD's
    L2 penalty). Integer and float fields are stored as built-in ``int`` and
    ``float``, so :meth:`user_attrs` can go straight into an Optuna trial.

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If a field is out of range or not finite.

    Example:
        >>> hp = Hyperparameters(batch_size=128, lr=0.1, momentum=0.9, n_train=3200)
        >>> round(hp.noise_scale, 6)
        24.0
    """

    batch_size: int
    lr: float
    momentum: float
    n_train: int
    beta2: float | None = field(default=None, kw_only=True)
    eps: float | None = field(default=None, kw_only=True)
    weight_decay: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        b, n = _check_sizes(self.batch_size, self.n_train)
        checked = {
            "n_train": n,
            "batch_size": b,
            "lr": check_positive("lr", self.lr),
            "momentum": _check_beta("momentum", self.momentum),
        }
        if self.beta2 is not None:
            checked["beta2"] = _check_beta("beta2", self.beta2)
        if self.eps is not None:
            checked["eps"] = check_positive("eps", self.eps)
        if self.weight_decay is not None:
            checked["weight_decay"] = check_real("weight_decay", self.weight_decay)
            if checked["weight_decay"] < 0:
                raise ValueError(
                    f"`weight_decay` must be >= 0, but got weight_decay={self.weight_decay!r}."
                )
        for name, value in checked.items():  # frozen: normalise numpy scalars to built-ins
            object.__setattr__(self, name, value)

    @property
    def noise_scale(self) -> float:
        """The noise scale g = ϵ · (N/B − 1) / (1 − m) of these hyperparameters."""
        return noise_scale(self.lr, self.batch_size, self.n_train, self.momentum)

    @property
    def tau_epochs(self) -> float | None:
        """AdamW's weight-decay timescale τ_epoch = B/(ϵλN) in epochs; ``None`` without decay."""
        if not self.weight_decay:
            return None
        return weight_decay_timescale(self.lr, self.weight_decay, self.batch_size, self.n_train)

    def user_attrs(self) -> dict[str, float | int]:
        """Return the values to record on an Optuna trial with ``trial.set_user_attr``.

        Example:
            >>> hp = Hyperparameters(batch_size=64, lr=0.05, momentum=0.0, n_train=1000)
            >>> sorted(hp.user_attrs())
            ['batch_size', 'lr', 'momentum', 'n_train', 'noise_scale']
        """
        attrs = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "momentum": self.momentum,
            "noise_scale": self.noise_scale,
            "n_train": self.n_train,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "tau_epochs": self.tau_epochs,
        }
        return {k: v for k, v in attrs.items() if v is not None}


def weight_decay_timescale(lr: float, weight_decay: float, batch_size: int, n_train: int) -> float:
    """AdamW's EMA timescale in epochs, τ_epoch = B / (ϵ λ N) (Wang & Aitchison 2024).

    The weights are an exponential moving average of the updates with timescale
    τ_iter = 1/(ϵλ) steps; an epoch is N/B steps. The best τ_epoch stays about constant as
    B, N and the model change.

    Example:
        >>> round(weight_decay_timescale(1e-3, 0.1, batch_size=100, n_train=10_000), 6)
        100.0
    """
    b, n = _check_sizes(batch_size, n_train)
    return b / (check_positive("lr", lr) * check_positive("weight_decay", weight_decay) * n)


def weight_decay_for_timescale(
    tau_epochs: float, lr: float, batch_size: int, n_train: int
) -> float:
    """The weight decay λ = B / (ϵ τ N) that gives timescale ``tau_epochs``: the inverse of
    :func:`weight_decay_timescale`.

    Example:
        >>> round(weight_decay_for_timescale(100.0, 1e-3, batch_size=100, n_train=10_000), 6)
        0.1
    """
    b, n = _check_sizes(batch_size, n_train)
    return b / (check_positive("lr", lr) * check_positive("tau_epochs", tau_epochs) * n)


def _log_median(values: list[float]) -> float:
    return math.exp(statistics.median(math.log(v) for v in values))


def _beta_median(values: list[float]) -> float:
    """The median β on the scale of 1 − β, where the rules act."""
    return 1.0 - _log_median([1.0 - v for v in values])


def mccandlish(batch_size, noise_batch_size):
    """SGD's best lr against B, up to a constant (McCandlish et al. 2018):
    1 / (1 + B_noise / B), linear well below B_noise and flat well above it. Takes floats or
    numpy arrays alike."""
    return 1.0 / (1.0 + noise_batch_size / batch_size)


def surge(batch_size, noise_batch_size):
    """Adam's best lr against B, up to a constant (Li et al. 2024):
    1 / (½(√(B_noise/B) + √(B/B_noise))), √B below B_noise, falling past it. Takes floats
    or numpy arrays alike."""
    ratio = batch_size / noise_batch_size
    return 1.0 / (0.5 * (ratio**-0.5 + ratio**0.5))


def _scale_beta(name: str, beta: float, kappa: float, old_b: int, new_b: int) -> float:
    """Apply 1 − β → κ(1 − β), clamping at 0 with a warning, for β1 (``momentum``) or β2."""
    # Malladi et al. 2022, square-root scaling rule for Adam
    new_beta = 1.0 - kappa * (1.0 - beta)
    symbol = "β1" if name == "momentum" else "β2"
    if new_beta < 0.0:
        # stacklevel=5: the user's call of rescale(), above Rule.rescale and move_lr.
        warnings.warn(
            f"`{name}` ({symbol}) would become {new_beta:.6g} < 0 at batch_size={new_b}: the "
            f"Adam square-root rule does not apply beyond batch_size = B / (1 - {symbol}) = "
            f"{old_b / (1.0 - beta):.6g}; clamping {name} to 0.0.",
            UserWarning,
            stacklevel=5,
        )
        return 0.0
    if new_beta >= 1.0:
        raise ValueError(
            f"`{name}` must stay below 1 after rescaling, but {name}={beta!r} rounds to 1.0 "
            f"at batch_size={new_b}; use a smaller {name} or a batch size closer to {old_b}."
        )
    return new_beta


#: Past this 1 − β1 the adam-sqrt rule warns: it is derived for small 1 − β (Malladi et al.
#: 2022), and P8 lost 18+ points at 0.8.
MAX_ONE_MINUS_BETA1 = 0.5

#: Adam's defaults in torch.optim, taken where a study recorded no β2 or eps.
ADAM_DEFAULTS = {"beta2": DEFAULTS["beta2"], "eps": DEFAULTS["eps"]}

#: Where β2's half-life rule clips a moved β2 (docs/design.md §3).
BETA2_RANGE = (0.95, 0.9999)


def beta2_for_half_life(beta2: float, batch_size: int, new_batch_size: int) -> float:
    """β2 at ``new_batch_size`` with the half-life of its average kept in samples.

    Adam's second-moment average forgets half its past in ln 2 / −ln β2 steps, of B samples
    each. Keeping that many samples gives β2′ = β2^(B′/B) (Marek et al. 2025; Marin uses
    0.98^(B/128)), clipped to :data:`BETA2_RANGE` (a β2 given outside it is not moved
    further out).

    Example:
        >>> round(beta2_for_half_life(0.999, 64, 512), 6)
        0.992028
    """
    beta2 = _check_beta("beta2", beta2)
    kappa = check_positive("new_batch_size", new_batch_size) / check_positive(
        "batch_size", batch_size
    )
    low, high = min(BETA2_RANGE[0], beta2), max(BETA2_RANGE[1], beta2)
    return min(max(beta2**kappa, low), high)
