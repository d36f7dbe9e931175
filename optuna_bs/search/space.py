"""What a trial samples and records: the coupled search space over B, ϵ and m.

:class:`BatchScalingSpace` turns an Optuna trial into :class:`~optuna_bs.rules.Hyperparameters`.
Its distributions are static (the same names and ranges in every trial), so multivariate TPE
and optuna-dashboard's plots work; the values that are derived, above all the learning rate,
are recorded on the trial as user attrs ``batch_size``, ``lr``, ``momentum``, ``noise_scale``
(SGD only: it means nothing for Adam) and ``n_train``.

Parameterisations (docs/design.md §2):

* ``"noise-scale"`` (default): B a power of two, log g sampled, m fixed unless given a range;
  ϵ = g (1 − m) / (N/B − 1). docs/design.md §1: the best g barely moves with B and m, so the search
  is over the one quantity that matters plus B.
* ``"linear"``, ``"sqrt"``, ``"power"``: a reference lr at a reference batch size, moved to B
  by ϵ = ϵ_ref (B / B_ref)^α with α = 1, ½ or ``alpha``.
* ``"adam-sqrt"``: the square-root rule for Adam (Malladi et al. 2022): ϵ, β1, β2 and eps
  move from the reference batch size to B together.
* ``"independent"``: B, ϵ and m each searched on their own; the naive baseline.

Each parameterisation is a :class:`~optuna_bs.rules.Rule` of the registry
:data:`~optuna_bs.rules.RULES`; the space samples B and m, the rule samples the learning rate,
and the space adds the weight decay, given as λ or searched as AdamW's timescale τ_epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
from dataclasses import replace
from typing import TYPE_CHECKING

import optuna

from optuna_bs._validation import check_int, check_range, check_real
from optuna_bs.rules.formulas import Hyperparameters, optimizer_family, weight_decay_for_timescale
from optuna_bs.rules.registry import RULES, get_rule
from optuna_bs.vocabulary import DEFAULTS, LR_RANGES

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

_logger = logging.getLogger(__name__)


class BatchScalingSpace:
    """A search space over batch size, learning rate and momentum, coupled by a scaling rule.

    Args:
        parameterisation: A rule of :data:`~optuna_bs.rules.RULES`.
        n_train: The number of training samples N (the noise scale depends on it).
        batch_size: ``(low, high)``: B is a power of two in that range; or one fixed integer.
        noise_scale: ``(low, high)`` of g, sampled on a log scale (``"noise-scale"`` only).
        momentum: A fixed m, or ``(low, high)`` to search it (β1 for ``"adam-sqrt"``).
        lr: ``(low, high)`` of ϵ, log scale: the reference lr for the rule-based
            parameterisations, ϵ itself for ``"independent"``. ``None``: the optimizer
            family's range of :data:`~optuna_bs.vocabulary.LR_RANGES`, (1e-5, 1e-2) for the
            Adam family (an ``optimizer`` of it, or ``"adam-sqrt"``), else (1e-4, 1.0).
        reference_batch_size: B_ref of the rule-based parameterisations.
        alpha: The exponent of ``"power"``.
        beta2: Adam's β2 at ``reference_batch_size`` (``"adam-sqrt"`` moves it with B).
        eps: Adam's eps at ``reference_batch_size``.
        weight_decay: λ, fixed, or ``(low, high)`` to search it on a log scale.
        tau_epochs: AdamW's weight-decay timescale τ_epoch = B/(ϵλN), fixed or
            ``(low, high)`` (log scale): λ then follows from τ in every trial (Wang &
            Aitchison 2024). Give ``weight_decay`` or ``tau_epochs``, not both.
        optimizer: The optimizer the trials train with (``"sgd"``, ``"adamw"``, a class
            name), recorded on every trial so that the report reads the study right. A rule
            derived for another family is refused (the SGD noise scale means nothing for
            Adam) unless ``allow_sgd_rule_for_adam``.
        allow_sgd_rule_for_adam: Run an SGD rule with an Adam-family optimizer anyway.

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
        batch_size: tuple[int, int] | int = DEFAULTS["batch_size"],
        noise_scale: tuple[float, float] = DEFAULTS["noise_scale"],
        momentum: tuple[float, float] | float = DEFAULTS["momentum"],
        lr: tuple[float, float] | None = DEFAULTS["lr"],
        reference_batch_size: int = DEFAULTS["reference_batch_size"],
        alpha: float | None = None,
        beta2: float = DEFAULTS["beta2"],
        eps: float = DEFAULTS["eps"],
        weight_decay: tuple[float, float] | float = 0.0,
        tau_epochs: tuple[float, float] | float | None = None,
        optimizer: str | None = None,
        allow_sgd_rule_for_adam: bool = False,
    ) -> None:
        if parameterisation not in RULES:
            raise ValueError(
                f"`parameterisation` must be one of {', '.join(RULES)}, "
                f"but got parameterisation={parameterisation!r}."
            )
        check_int("n_train", n_train, 2)
        if isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool):
            check_int("batch_size", batch_size, 1, n_train - 1)
            self._log2_batch = None
        else:
            self._log2_batch = _log2_range(batch_size, n_train)
        check_range("noise_scale", noise_scale, positive=True)
        real = isinstance(momentum, numbers.Real) and not isinstance(momentum, bool)
        for m in (momentum,) if real else check_range("momentum", momentum):
            if not 0 <= m < 1:
                raise ValueError(f"`momentum` must be in [0, 1), but got momentum={m!r}.")
        self.rule = get_rule(parameterisation, alpha)
        if self.rule.uses_reference_batch:
            check_int("reference_batch_size", reference_batch_size, 1, n_train - 1)
        self.optimizer = optimizer
        self.family = optimizer_family(optimizer)
        if self.family is not None and self.family not in self.rule.optimizers:
            if not (self.family == "adam" and allow_sgd_rule_for_adam):
                valid = [n for n, r in RULES.items() if self.family in r.optimizers]
                if self.family == "adam":
                    raise ValueError(
                        f"parameterisation {parameterisation!r} is an SGD rule, and optimizer "
                        f"{optimizer!r} is Adam-family: use 'adam-sqrt' (Malladi et al. 2022; "
                        f"valid: {', '.join(valid)}), or set allow_sgd_rule_for_adam."
                    )
                raise ValueError(
                    f"parameterisation {parameterisation!r} is a rule for Adam-family "
                    f"optimizers, and optimizer {optimizer!r} is {self.family.upper()}: use one "
                    f"of {', '.join(valid)}."
                )
        self._adam = self.family == "adam" or "sgd" not in self.rule.optimizers
        if lr is None:
            lr = LR_RANGES["adam" if self._adam else "sgd"]
        check_range("lr", lr, positive=True)
        if not 0 <= check_real("beta2", beta2) < 1:
            raise ValueError(f"`beta2` must be in [0, 1), but got beta2={beta2!r}.")
        if check_real("eps", eps) <= 0:
            raise ValueError(f"`eps` must be > 0, but got eps={eps!r}.")
        if tau_epochs is not None and weight_decay:
            raise ValueError(
                "give `weight_decay` or `tau_epochs`, not both: λ follows from τ = B/(ϵλN), "
                f"but got weight_decay={weight_decay!r} and tau_epochs={tau_epochs!r}."
            )
        if isinstance(weight_decay, numbers.Real) and not isinstance(weight_decay, bool):
            if weight_decay < 0:
                raise ValueError(f"`weight_decay` must be >= 0, but got {weight_decay!r}.")
        else:
            check_range("weight_decay", weight_decay, positive=True)
        if tau_epochs is not None:
            if isinstance(tau_epochs, numbers.Real) and not isinstance(tau_epochs, bool):
                if not tau_epochs > 0:
                    raise ValueError(f"`tau_epochs` must be > 0, but got {tau_epochs!r}.")
            else:
                check_range("tau_epochs", tau_epochs, positive=True)

        self.parameterisation = parameterisation
        self.n_train = int(n_train)
        self.batch_size = batch_size
        self.noise_scale = noise_scale
        self.momentum = momentum
        self.lr = lr
        self.reference_batch_size = reference_batch_size
        self.alpha = self.rule.alpha
        self.beta2 = float(beta2)
        self.eps = float(eps)
        self.weight_decay = weight_decay
        self.tau_epochs = tau_epochs
        self.rule.check_space(self)

    @property
    def batch_sizes(self) -> list[int]:
        """Every batch size this space can propose, smallest first."""
        if self._log2_batch is None:
            return [int(self.batch_size)]
        return [2**k for k in range(self._log2_batch[0], self._log2_batch[1] + 1)]

    def with_ranges(
        self,
        *,
        batch_size: tuple[int, int] | None = None,
        noise_scale: tuple[float, float] | None = None,
        lr: tuple[float, float] | None = None,
    ) -> BatchScalingSpace:
        """A copy of this space over other ranges of B, g or the (reference) lr, checked as the
        constructor checks them: what a range that widens draws from
        (:class:`~optuna_bs.RangeWidening`).

        Example:
            >>> space = BatchScalingSpace(n_train=1000, noise_scale=(30.0, 450.0))
            >>> space.with_ranges(noise_scale=(7.7, 450.0)).noise_scale
            (7.7, 450.0)
        """
        other = copy.copy(self)
        if batch_size is not None:
            other._log2_batch = _log2_range(batch_size, self.n_train)
            other.batch_size = tuple(batch_size)
        for name, value in (("noise_scale", noise_scale), ("lr", lr)):
            if value is not None:
                check_range(name, value, positive=True)
                setattr(other, name, tuple(value))
        return other

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
        momentum = _fixed_or_drawn(trial, "momentum", self.momentum)

        hp = self.rule.suggest_lr(trial, self, batch_size, momentum)
        if self._adam:
            beta2 = self.beta2 if hp.beta2 is None else hp.beta2
            hp = replace(hp, beta2=beta2, eps=self.eps if hp.eps is None else hp.eps)
        else:  # SGD, or an optimizer not named: no Adam values to record
            hp = replace(hp, beta2=None, eps=None)
        if self.tau_epochs is None:
            decay = _fixed_or_drawn(trial, "weight_decay", self.weight_decay, log=True)
        else:
            tau = _fixed_or_drawn(trial, "tau_epochs", self.tau_epochs, log=True)
            decay = weight_decay_for_timescale(tau, hp.lr, hp.batch_size, self.n_train)
        hp = replace(hp, weight_decay=decay)
        attrs = hp.user_attrs()
        if self._adam:  # SGD's noise scale g means nothing for Adam (docs/design.md §3)
            del attrs["noise_scale"]
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("parameterisation", self.parameterisation)
        if self.rule.takes_alpha:
            trial.set_user_attr("alpha", self.alpha)
        if self.optimizer is not None:
            trial.set_user_attr("optimizer", self.optimizer)
        return hp

    def __repr__(self) -> str:
        adam, g = self.family == "adam", self.rule.searches_noise_scale
        shown = {
            "batch_size": True,
            "momentum": True,
            "noise_scale": g,
            "lr": not g,
            "reference_batch_size": self.rule.uses_reference_batch,
            "beta2": adam,
            "eps": adam,
            "weight_decay": bool(self.weight_decay),
            "tau_epochs": self.tau_epochs is not None,
            "optimizer": self.optimizer is not None,
            "n_train": True,
        }
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k, show in shown.items() if show)
        return f"BatchScalingSpace({self.parameterisation!r}, {args})"


def _fixed_or_drawn(trial: BaseTrial, name: str, value, log: bool = False) -> float:
    """A fixed ``value``, or one drawn from its ``(low, high)`` range as parameter ``name``."""
    if isinstance(value, numbers.Real):
        return float(value)
    return trial.suggest_float(name, *value, log=log)


def _log2_range(batch_size: tuple[int, int], n_train: int) -> tuple[int, int]:
    """The powers of two a ``(low, high)`` batch range holds, as log2 bounds; checked against
    N (the constructor's and :meth:`BatchScalingSpace.with_ranges`' one check)."""
    low, high = check_range("batch_size", batch_size, integer=True)
    if high >= n_train:
        raise ValueError(
            f"`batch_size` must lie in [1, n_train - 1] = [1, {n_train - 1}], "
            f"but got batch_size=({low}, {high})."
        )
    log2 = (math.ceil(math.log2(low)), math.floor(math.log2(high)))
    if log2[0] > log2[1]:
        raise ValueError(
            f"`batch_size` must hold a power of two, but got batch_size=({low}, {high})."
        )
    return log2


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
