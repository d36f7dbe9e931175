"""Scaling rules that tie the batch size to the learning rate, momentum and Adam's betas.

Pure math on plain numbers: this module knows nothing of torch or Optuna. The formulas are
the contract of DESIGN.md section 1.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from dataclasses import dataclass, field, replace

_logger = logging.getLogger(__name__)

__all__ = ["RULES", "Hyperparameters", "lr_for_noise_scale", "noise_scale", "rescale"]

RULES = ("noise-scale", "linear", "sqrt", "power", "adam-sqrt")


def _type_error(name: str, kind: str, value: object) -> TypeError:
    return TypeError(
        f"`{name}` must be {kind}, but got {name}={value!r} of type {type(value).__name__}."
    )


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _type_error(name, "an integer", value)
    return int(value)


def _check_real(name: str, value: object) -> float:
    """Return ``value`` as a finite float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _type_error(name, "a real number", value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite real number, but got {name}={value!r}.")
    return float(value)


def _check_positive(name: str, value: object) -> float:
    x = _check_real(name, value)
    if x <= 0.0:
        raise ValueError(f"`{name}` must be a real number > 0, but got {name}={value!r}.")
    return x


def _check_beta(name: str, value: object) -> float:
    x = _check_real(name, value)
    if not 0.0 <= x < 1.0:
        raise ValueError(f"`{name}` must be a real number in [0, 1), but got {name}={value!r}.")
    return x


def _check_n_train(n_train: object) -> int:
    n = _check_int("n_train", n_train)
    if n < 2:
        raise ValueError(f"`n_train` must be an integer >= 2, but got n_train={n_train!r}.")
    return n


def _check_batch_size(batch_size: object, n_train: int) -> int:
    """Check ``batch_size`` against an already checked ``n_train``."""
    b = _check_int("batch_size", batch_size)
    if not 1 <= b <= n_train - 1:
        raise ValueError(
            f"`batch_size` must be an integer in [1, n_train - 1] = [1, {n_train - 1}], "
            f"but got batch_size={batch_size!r}."
        )
    return b


def _noise_factor(batch_size: object, n_train: object, momentum: object) -> float:
    """Check B, N and m and return (N/B − 1) / (1 − m), so that g = ϵ · factor."""
    n = _check_n_train(n_train)
    b = _check_batch_size(batch_size, n)
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
    return _check_positive("lr", lr) * _noise_factor(batch_size, n_train, momentum)


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
    g = _check_positive("noise_scale", noise_scale)
    return g / _noise_factor(batch_size, n_train, momentum)


@dataclass(frozen=True)
class Hyperparameters:
    """One point of the (batch size, learning rate, momentum) space, checked on creation.

    For Adam-family optimizers ``momentum`` plays the role of β1, and ``beta2`` and ``eps``
    may be given (keyword-only). Integer and float fields are stored as built-in ``int`` and
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

    def __post_init__(self) -> None:
        n = _check_n_train(self.n_train)
        checked = {
            "n_train": n,
            "batch_size": _check_batch_size(self.batch_size, n),
            "lr": _check_positive("lr", self.lr),
            "momentum": _check_beta("momentum", self.momentum),
        }
        if self.beta2 is not None:
            checked["beta2"] = _check_beta("beta2", self.beta2)
        if self.eps is not None:
            checked["eps"] = _check_positive("eps", self.eps)
        for name, value in checked.items():  # frozen: normalise numpy scalars to built-ins
            object.__setattr__(self, name, value)

    @property
    def noise_scale(self) -> float:
        """The noise scale g = ϵ · (N/B − 1) / (1 − m) of these hyperparameters."""
        return noise_scale(self.lr, self.batch_size, self.n_train, self.momentum)

    def user_attrs(self) -> dict[str, float | int]:
        """Return the values to record on an Optuna trial with ``trial.set_user_attr``.

        Example:
            >>> hp = Hyperparameters(batch_size=64, lr=0.05, momentum=0.0, n_train=1000)
            >>> sorted(hp.user_attrs())
            ['batch_size', 'lr', 'momentum', 'n_train', 'noise_scale']
        """
        attrs: dict[str, float | int] = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "momentum": self.momentum,
            "noise_scale": self.noise_scale,
            "n_train": self.n_train,
        }
        attrs.update(
            (k, v) for k, v in (("beta2", self.beta2), ("eps", self.eps)) if v is not None
        )
        return attrs


def _scale_beta(name: str, beta: float, kappa: float, old_b: int, new_b: int) -> float:
    """Apply 1 − β → κ(1 − β), clamping at 0 with a warning, for β1 (``momentum``) or β2."""
    # Malladi et al. 2022, square-root scaling rule for Adam
    new_beta = 1.0 - kappa * (1.0 - beta)
    symbol = "β1" if name == "momentum" else "β2"
    if new_beta < 0.0:
        # stacklevel=3 points at the user's call of rescale(), one frame above.
        warnings.warn(
            f"`{name}` ({symbol}) would become {new_beta:.6g} < 0 at batch_size={new_b}: the "
            f"Adam square-root rule does not apply beyond batch_size = B / (1 - {symbol}) = "
            f"{old_b / (1.0 - beta):.6g}; clamping {name} to 0.0.",
            UserWarning,
            stacklevel=3,
        )
        return 0.0
    if new_beta >= 1.0:
        raise ValueError(
            f"`{name}` must stay below 1 after rescaling, but {name}={beta!r} rounds to 1.0 "
            f"at batch_size={new_b}; use a smaller {name} or a batch size closer to {old_b}."
        )
    return new_beta


def rescale(
    hparams: Hyperparameters,
    batch_size: int,
    rule: str = "noise-scale",
    *,
    alpha: float | None = None,
) -> Hyperparameters:
    """Move hyperparameters tuned at batch size B to a new batch size B' (κ = B'/B).

    Rules:
        * ``"noise-scale"``: keep g and m, ϵ' = g (1 − m) / (N/B' − 1) (Smith et al. 2018).
        * ``"linear"``: ϵ' = κϵ (Goyal et al. 2017).
        * ``"sqrt"``: ϵ' = √κ ϵ (Hoffer et al. 2017).
        * ``"power"``: ϵ' = κ^alpha ϵ.
        * ``"adam-sqrt"``: ϵ' = √κ ϵ, 1 − β' = κ(1 − β) for β1 (``momentum``) and β2,
          eps' = eps/√κ (Malladi et al. 2022). A missing ``beta2`` or ``eps`` is taken as
          PyTorch's Adam default (0.999, 1e-8).

    Other rules keep ``beta2`` and ``eps`` unchanged.

    Args:
        hparams: The tuned hyperparameters.
        batch_size: New batch size B', an integer in [1, n_train - 1].
        rule: One of :data:`RULES`.
        alpha: The exponent of the ``"power"`` rule; must be None for every other rule.

    Returns:
        New :class:`Hyperparameters` at ``batch_size``.

    Raises:
        TypeError: If an argument has the wrong type, or ``alpha`` is missing for ``"power"``.
        ValueError: If an argument is out of range, the rule is unknown, or ``alpha`` is
            given to a rule other than ``"power"``.

    Warns:
        UserWarning: If B' > N/10, where the rules are not validated, or if the Adam rule
            would push a β below 0 (it is clamped to 0).

    Example:
        >>> hp = Hyperparameters(batch_size=128, lr=0.1, momentum=0.9, n_train=50_000)
        >>> round(rescale(hp, 256, "linear").lr, 6)
        0.2
    """
    if not isinstance(hparams, Hyperparameters):
        raise _type_error("hparams", "a Hyperparameters", hparams)
    if not isinstance(rule, str):
        raise _type_error("rule", "a str", rule)
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {RULES}, but got rule={rule!r}.")
    if rule == "power":
        if alpha is None:
            raise TypeError("`alpha` is required when rule='power', but got alpha=None.")
        alpha = _check_real("alpha", alpha)
    elif alpha is not None:
        raise ValueError(
            f"`alpha` must be None unless rule='power', but got alpha={alpha!r} "
            f"with rule={rule!r}."
        )
    n, old_b = hparams.n_train, hparams.batch_size
    new_b = _check_batch_size(batch_size, n)
    if new_b > n / 10:
        warnings.warn(
            f"batch_size={new_b} is above n_train / 10 = {n / 10:g}: scaling rules are only "
            "validated up to about N/10 (Smith et al. 2018); beyond it the gains stop "
            "(critical batch size), so decay the learning rate instead.",
            UserWarning,
            stacklevel=2,
        )
    kappa = new_b / old_b
    if rule == "noise-scale":  # Smith et al. 2018: keep g and m fixed
        lr = lr_for_noise_scale(hparams.noise_scale, new_b, n, hparams.momentum)
    else:  # Goyal et al. 2017 (1), Hoffer et al. 2017 (1/2), Malladi et al. 2022 (1/2)
        lr = hparams.lr * kappa ** {"linear": 1.0, "sqrt": 0.5, "adam-sqrt": 0.5}.get(rule, alpha)
    new = replace(hparams, batch_size=new_b, lr=lr)
    if rule == "adam-sqrt":  # Malladi et al. 2022; missing values are torch.optim.Adam's defaults
        beta2 = 0.999 if hparams.beta2 is None else hparams.beta2
        eps = 1e-8 if hparams.eps is None else hparams.eps
        new = replace(
            new,
            momentum=_scale_beta("momentum", hparams.momentum, kappa, old_b, new_b),
            beta2=_scale_beta("beta2", beta2, kappa, old_b, new_b),
            eps=eps / math.sqrt(kappa),
        )
    _logger.debug(
        "rescale %s: batch_size %d -> %d, lr %g -> %g", rule, old_b, new_b, hparams.lr, new.lr
    )
    return new
