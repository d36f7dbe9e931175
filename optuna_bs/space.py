"""What a trial samples and records: the coupled search space over B, ϵ and m.

:class:`BatchScalingSpace` turns an Optuna trial into :class:`~optuna_bs.rules.Hyperparameters`.
Its distributions are static (the same names and ranges in every trial), so multivariate TPE
and optuna-dashboard's plots work; the values that are derived, above all the learning rate,
are recorded on the trial as user attrs ``batch_size``, ``lr``, ``momentum``, ``noise_scale``
and ``n_train``.

Parameterisations (DESIGN §2):

* ``"noise-scale"`` (default): B a power of two, log g sampled, m fixed unless given a range;
  ϵ = g (1 − m) / (N/B − 1). DESIGN §1: the best g barely moves with B and m, so the search
  is over the one quantity that matters plus B.
* ``"linear"``, ``"sqrt"``, ``"power"``: a reference lr at a reference batch size, moved to B
  by ϵ = ϵ_ref (B / B_ref)^α with α = 1, ½ or ``alpha``.
* ``"adam-sqrt"``: the square-root rule for Adam (Malladi et al. 2022): ϵ, β1, β2 and eps
  move from the reference batch size to B together.
* ``"independent"``: B, ϵ and m each searched on their own; the naive baseline.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from typing import TYPE_CHECKING

import optuna

from optuna_bs.rules import Hyperparameters, lr_for_noise_scale, rescale

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = ["BatchScalingSpace", "OOMAwareSampler", "PARAMETERISATIONS"]

_logger = logging.getLogger(__name__)

PARAMETERISATIONS = ("noise-scale", "linear", "sqrt", "power", "adam-sqrt", "independent")
_ALPHAS = {"linear": 1.0, "sqrt": 0.5}


class BatchScalingSpace:
    """A search space over batch size, learning rate and momentum, coupled by a scaling rule.

    Args:
        parameterisation: One of :data:`PARAMETERISATIONS`.
        n_train: The number of training samples N (the noise scale depends on it).
        batch_size: ``(low, high)``: B is a power of two in that range; or one fixed integer.
        noise_scale: ``(low, high)`` of g, sampled on a log scale (``"noise-scale"`` only).
        momentum: A fixed m, or ``(low, high)`` to search it (β1 for ``"adam-sqrt"``).
        lr: ``(low, high)`` of ϵ, log scale: the reference lr for the rule-based
            parameterisations, ϵ itself for ``"independent"``.
        reference_batch_size: B_ref of the rule-based parameterisations.
        alpha: The exponent of ``"power"``.

    Raises:
        TypeError: For an argument of the wrong type.
        ValueError: For a bad range: low > high, B >= N, m outside [0, 1), a non-positive lr
            or g, a batch range holding no power of two, or an Adam β pushed below 0.

    Example:
        >>> import optuna
        >>> space = BatchScalingSpace(n_train=3200, batch_size=(16, 128))
        >>> study = optuna.create_study()
        >>> hp = space.suggest(study.ask())
        >>> hp.batch_size in (16, 32, 64, 128), hp.momentum
        (True, 0.9)
    """

    def __init__(
        self,
        parameterisation: str = "noise-scale",
        *,
        n_train: int,
        batch_size: tuple[int, int] | int = (16, 512),
        noise_scale: tuple[float, float] = (1.0, 1000.0),
        momentum: tuple[float, float] | float = 0.9,
        lr: tuple[float, float] = (1e-4, 1.0),
        reference_batch_size: int = 128,
        alpha: float | None = None,
    ) -> None:
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(
                f"`parameterisation` must be one of {', '.join(PARAMETERISATIONS)}, "
                f"but got parameterisation={parameterisation!r}."
            )
        _check_int("n_train", n_train, 2, math.inf)
        if isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool):
            _check_int("batch_size", batch_size, 1, n_train - 1)
            self._log2_batch = None
        else:
            low, high = _check_range("batch_size", batch_size, integer=True)
            if high >= n_train:
                raise ValueError(
                    f"`batch_size` must lie in [1, n_train - 1] = [1, {n_train - 1}], "
                    f"but got batch_size=({low}, {high})."
                )
            self._log2_batch = (math.ceil(math.log2(low)), math.floor(math.log2(high)))
            if self._log2_batch[0] > self._log2_batch[1]:
                raise ValueError(
                    f"`batch_size` must hold a power of two, but got batch_size=({low}, {high})."
                )
        self._noise_scale = _check_range("noise_scale", noise_scale, positive=True)
        self._lr = _check_range("lr", lr, positive=True)
        if isinstance(momentum, numbers.Real) and not isinstance(momentum, bool):
            _check_momentum(momentum)
        else:
            for m in _check_range("momentum", momentum):
                _check_momentum(m)
        if parameterisation not in ("noise-scale", "independent"):
            _check_int("reference_batch_size", reference_batch_size, 1, n_train - 1)
        if parameterisation == "power":
            if (
                isinstance(alpha, bool)
                or not isinstance(alpha, numbers.Real)
                or not math.isfinite(alpha)
            ):
                raise TypeError(f"`alpha` must be a real number for 'power', but got {alpha!r}.")
        elif alpha is not None:
            raise ValueError(f"`alpha` applies to 'power' only, but got alpha={alpha!r}.")

        self.parameterisation = parameterisation
        self.n_train = int(n_train)
        self.batch_size = batch_size
        self.noise_scale = noise_scale
        self.momentum = momentum
        self.lr = lr
        self.reference_batch_size = reference_batch_size
        self.alpha = _ALPHAS.get(parameterisation, alpha)
        if parameterisation == "adam-sqrt":
            self._check_adam_betas()

    @property
    def batch_sizes(self) -> list[int]:
        """Every batch size this space can propose, smallest first."""
        if self._log2_batch is None:
            return [int(self.batch_size)]
        return [2**k for k in range(self._log2_batch[0], self._log2_batch[1] + 1)]

    def suggest(self, trial: BaseTrial) -> Hyperparameters:
        """Sample one configuration and record its derived values as the trial's user attrs.

        Args:
            trial: An Optuna trial (``study.ask()``, an objective's trial, or a FixedTrial).

        Returns:
            The trial's hyperparameters.
        """
        if self._log2_batch is None:
            batch_size = int(self.batch_size)
        else:
            batch_size = 2 ** trial.suggest_int("log2_batch_size", *self._log2_batch)
        if isinstance(self.momentum, numbers.Real):
            momentum = float(self.momentum)
        else:
            momentum = trial.suggest_float("momentum", *self.momentum)

        kind = self.parameterisation
        if kind == "noise-scale":
            g = trial.suggest_float("noise_scale", *self._noise_scale, log=True)
            lr = lr_for_noise_scale(g, batch_size, self.n_train, momentum)
            hp = Hyperparameters(batch_size, lr, momentum, self.n_train)
        elif kind == "independent":
            lr = trial.suggest_float("lr", *self._lr, log=True)
            hp = Hyperparameters(batch_size, lr, momentum, self.n_train)
        else:
            ref_lr = trial.suggest_float("reference_lr", *self._lr, log=True)
            hp = self._from_reference(ref_lr, momentum, batch_size)

        for key, value in hp.user_attrs().items():
            trial.set_user_attr(key, value)
        return hp

    def _from_reference(self, ref_lr: float, momentum: float, batch_size: int) -> Hyperparameters:
        ref = Hyperparameters(self.reference_batch_size, ref_lr, momentum, self.n_train)
        if self.parameterisation != "adam-sqrt":
            ratio = batch_size / self.reference_batch_size
            return Hyperparameters(batch_size, ref_lr * ratio**self.alpha, momentum, self.n_train)
        with warnings.catch_warnings():
            # The N/10 warning is for hand-rescaling; here B's range is the user's choice.
            warnings.simplefilter("ignore")
            return rescale(ref, batch_size, rule="adam-sqrt")

    def _check_adam_betas(self) -> None:
        kappa = self.batch_sizes[-1] / self.reference_batch_size
        # 1 − β → κ(1 − β): the lowest β1 of a range is the first to cross 0.
        m_low = self.momentum if isinstance(self.momentum, numbers.Real) else self.momentum[0]
        for name, beta in (("momentum", m_low), ("beta2", 0.999)):
            if kappa * (1 - beta) > 1:
                raise ValueError(
                    f"'adam-sqrt' would push {name} = {beta} below 0 at batch_size="
                    f"{self.batch_sizes[-1]} (κ = {kappa:g} from reference_batch_size="
                    f"{self.reference_batch_size}): the rule does not apply; lower the batch "
                    "range or raise reference_batch_size."
                )

    def __repr__(self) -> str:
        fields = {
            "batch_size": self.batch_size,
            "momentum": self.momentum,
            **(
                {"noise_scale": self.noise_scale} if self.parameterisation == "noise-scale" else {}
            ),
            **({"lr": self.lr} if self.parameterisation != "noise-scale" else {}),
            "n_train": self.n_train,
        }
        args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"BatchScalingSpace({self.parameterisation!r}, {args})"


def _check_int(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, but got {name}={value!r}.")
    if not low <= value <= high:
        raise ValueError(f"`{name}` must be in [{low}, {high}], but got {name}={value!r}.")


def _check_momentum(m: float) -> None:
    if not 0 <= m < 1:
        raise ValueError(f"`momentum` must be in [0, 1), but got momentum={m!r}.")


def _check_range(
    name: str, value: object, *, integer: bool = False, positive: bool = False
) -> tuple[float, float]:
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


class OOMAwareSampler(optuna.samplers.BaseSampler):
    """A sampler that never proposes a batch size at or above one that ran out of memory.

    It wraps any Optuna sampler. Before a trial's ``log2_batch_size`` is used, it looks up the
    smallest batch size of the study's trials that ended with ``stop_reason = "oom"`` under
    the same ``memory_key`` user attr (model, precision, device), and moves a proposal at or
    above it to the largest power of two below it. The distributions stay static (no dynamic
    ranges that would break multivariate TPE); only the proposed value changes.

    Args:
        base: The sampler that proposes.
        memory_key: What shares a memory limit; trials record it as the ``memory_key`` attr.
        param: The batch-size parameter of :class:`BatchScalingSpace`.
    """

    def __init__(
        self,
        base: optuna.samplers.BaseSampler,
        *,
        memory_key: str,
        param: str = "log2_batch_size",
    ) -> None:
        self.base = base
        self.memory_key = memory_key
        self.param = param

    def oom_batch_size(self, study: optuna.Study) -> int | None:
        """The smallest batch size that ran out of memory under this key, or ``None``."""
        pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
        failed = [
            t.user_attrs["batch_size"]
            for t in pruned
            if t.user_attrs.get("stop_reason") == "oom"
            and t.user_attrs.get("memory_key") == self.memory_key
            and "batch_size" in t.user_attrs
        ]
        return min(failed, default=None)

    def _cap(self, study: optuna.Study, value: int, low: int) -> int:
        limit = self.oom_batch_size(study)
        if limit is None or 2**value < limit:
            return value
        capped = max(low, math.ceil(math.log2(limit)) - 1)
        if 2**capped >= limit:
            _logger.warning("Every batch size of the space ran out of memory (%d).", limit)
        return capped

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        params = self.base.sample_relative(study, trial, search_space)
        if self.param in params:
            low = search_space[self.param].low
            params[self.param] = self._cap(study, int(params[self.param]), low)
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self.base.sample_independent(study, trial, param_name, param_distribution)
        if param_name == self.param:
            return self._cap(study, int(value), param_distribution.low)
        return value

    def before_trial(self, study, trial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
