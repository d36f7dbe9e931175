"""The rules: one class per parameterisation, registered by name.

Each :class:`Rule` says what a trial samples, how a configuration moves to another batch
size, which optimizer families it is valid for and what a report shows.
:func:`register_rule` adds one; :func:`rescale` and
:class:`~optuna_bs.search.BatchScalingSpace` dispatch through :data:`RULES`. Like the
formulas it builds on, it imports neither torch nor Optuna.
"""

from __future__ import annotations

import logging
import math
import numbers
import statistics
import warnings
from dataclasses import replace

from optuna_bs._validation import check_positive, check_real
from optuna_bs.rules.formulas import (
    ADAM_DEFAULTS,
    MAX_ONE_MINUS_BETA1,
    Hyperparameters,
    _beta_median,
    _check_sizes,
    _log_median,
    _scale_beta,
    _type_error,
    beta2_for_half_life,
    largest_valid_batch,
    lr_for_noise_scale,
    mccandlish,
    surge,
    weight_decay_for_timescale,
)

_logger = logging.getLogger(__name__)


class Rule:
    """One parameterisation of the space: how a trial's learning rate (and Adam's betas) is
    sampled, how a configuration moves to another batch size, which optimizer families it
    is valid for, and which columns a report shows.

    A new rule is a subclass with a ``name``, registered with :func:`register_rule`; the
    space, :func:`rescale`, the analysis and the report then know it with no other edit.

    Example:
        >>> class Cubic(Rule):  # ϵ ∝ B^(1/3)
        ...     name = "cubic-root"
        ...     def move_lr(self, hp, batch_size):
        ...         return replace(hp, batch_size=batch_size,
        ...                        lr=hp.lr * (batch_size / hp.batch_size) ** (1 / 3))
        >>> _ = register_rule(Cubic)
        >>> hp = Hyperparameters(batch_size=64, lr=0.1, momentum=0.9, n_train=50_000)
        >>> round(rescale(hp, 512, "cubic-root").lr, 6)
        0.2
        >>> del RULES["cubic-root"]
    """

    #: The name of the rule in study files, ``rescale(rule=...)`` and ``report --rule``.
    name: str = ""
    #: The optimizer families (``"sgd"``, ``"adam"``) the rule is derived for.
    optimizers: tuple[str, ...] = ("sgd", "adam")
    #: The trial parameter that carries the learning rate (the dashboard shows it).
    lr_param: str = "reference_lr"
    #: Whether a move keeps the weight decay λ as it is, rather than AdamW's timescale τ.
    keeps_weight_decay: bool = False
    #: α of ϵ' = ϵ κ^α when B → κB; ``None`` where the rule has no one power (the noise-scale
    #: rule is exact, about κ^1 for B ≪ N) or takes it as an option (:attr:`takes_alpha`).
    exponent: float | None = None
    #: Whether the rule takes its α as an option (``alpha=``).
    takes_alpha: bool = False
    #: Whether the rule samples a reference lr at a reference batch size.
    uses_reference_batch: bool = True
    #: Whether the rule ties ϵ to B at all: the ladder climbs B only along a coupled rule.
    couples_batch: bool = True
    #: Whether a trial samples SGD's noise scale g, and ϵ follows from it (``lr_param``).
    searches_noise_scale: bool = False

    def __init__(self, alpha: float | None = None) -> None:
        if alpha is not None:
            raise ValueError(
                f"`alpha` must be None unless rule='power', but got alpha={alpha!r} "
                f"with rule={self.name!r}."
            )
        self.alpha: float | None = self.exponent

    # -- what a trial samples -------------------------------------------------------------
    def suggest_lr(self, trial, space, batch_size: int, momentum: float) -> Hyperparameters:
        """Sample the learning rate (and what moves with it) of one trial at ``batch_size``.

        The default samples a reference lr at ``space.reference_batch_size`` on a log scale
        in ``space.lr`` and moves it to ``batch_size`` with :meth:`move_lr`.
        """
        ref_lr = trial.suggest_float(self.lr_param, *space.lr, log=True)
        ref = Hyperparameters(
            space.reference_batch_size,
            ref_lr,
            momentum,
            space.n_train,
            beta2=space.beta2,
            eps=space.eps,
        )
        with warnings.catch_warnings():  # what the space's range implies is said once, by
            warnings.simplefilter("ignore")  # check_space, not in every trial
            return self.move_lr(ref, batch_size)

    def check_space(self, space) -> None:
        """Raise ``ValueError`` if the space cannot hold this rule (the default checks nothing)."""

    # -- how a configuration moves --------------------------------------------------------
    def move_lr(self, hp: Hyperparameters, batch_size: int) -> Hyperparameters:
        """``hp`` at ``batch_size``: its learning rate (and betas) moved; weight decay kept."""
        kappa = batch_size / hp.batch_size
        return replace(hp, batch_size=batch_size, lr=hp.lr * kappa**self.alpha)

    def lr_curve(self, batch_size: float, noise_batch_size: float) -> float | None:
        """The best lr against B, up to a constant, given the critical batch size B_noise;
        ``None`` for a rule that has none (then B_noise changes nothing).

        The default is SGD's, McCandlish et al. 2018: ϵ_opt(B) ∝ 1 / (1 + B_noise / B),
        linear in B well below B_noise and flat well above it.
        """
        return mccandlish(batch_size, noise_batch_size)

    def rescale(
        self,
        hp: Hyperparameters,
        batch_size: int,
        *,
        keep_tau: bool = True,
        noise_batch_size: float | None = None,
    ) -> Hyperparameters:
        """``hp`` at ``batch_size``, by this rule. With ``keep_tau`` and a weight decay, λ
        moves so that AdamW's timescale τ_epoch = B/(ϵλN) stays (Wang & Aitchison 2024).
        With ``noise_batch_size`` (B_noise, e.g. ``optuna-bs noise-scale``'s B_simple), the
        lr follows :meth:`lr_curve` instead of the rule's own power of B, which holds only
        well below B_noise."""
        new = self.move_lr(hp, batch_size)
        if noise_batch_size is not None:
            bn = check_positive("noise_batch_size", noise_batch_size)
            curve = self.lr_curve(batch_size, bn)
            if curve is not None:
                new = replace(new, lr=hp.lr * curve / self.lr_curve(hp.batch_size, bn))
        return self._keep_tau(hp, new) if keep_tau else new

    def _keep_tau(self, hp: Hyperparameters, new: Hyperparameters) -> Hyperparameters:
        """``new`` with λ moved so that τ_epoch of ``hp`` stays, unless the rule keeps λ."""
        if self.keeps_weight_decay or not hp.weight_decay:
            return new
        lam = weight_decay_for_timescale(hp.tau_epochs, new.lr, new.batch_size, new.n_train)
        return replace(new, weight_decay=lam)

    def transfer(
        self, hp: Hyperparameters, batch_size: int, lr: float, family: str | None
    ) -> Hyperparameters:
        """``hp`` at ``batch_size`` with the learning rate ``lr`` (a fitted curve's, or this
        rule's own), and what moves with it (docs/design.md §3).

        SGD: the rule's momentum, λ by the kept τ. Adam family: β1 kept (Malladi's
        1 − β1 ∝ κ lost 18+ points at κ = 8, BENCHMARKS.md P8), β2 by its half-life in samples
        (:func:`beta2_for_half_life`), eps/√κ, λ by the kept τ.
        """
        if family == "adam":
            kappa = batch_size / hp.batch_size
            beta2 = ADAM_DEFAULTS["beta2"] if hp.beta2 is None else hp.beta2
            eps = ADAM_DEFAULTS["eps"] if hp.eps is None else hp.eps
            new = replace(
                hp,
                batch_size=batch_size,
                lr=lr,
                beta2=beta2_for_half_life(beta2, hp.batch_size, batch_size),
                eps=eps / math.sqrt(kappa),
            )
        else:
            with warnings.catch_warnings():  # only its momentum is taken
                warnings.simplefilter("ignore")
                new = replace(self.move_lr(hp, batch_size), lr=lr)
        return self._keep_tau(hp, new)

    def center(self, hps: list[Hyperparameters]) -> Hyperparameters:
        """The centre of configurations at one batch size: the median of each value, on a
        log scale for lr, eps and weight decay, and of 1 − β for β1 and β2."""

        def optional(name, center):
            values = [getattr(h, name) for h in hps]
            return None if any(v is None for v in values) else center(values)

        return replace(
            hps[0],
            lr=_log_median([h.lr for h in hps]),
            momentum=_beta_median([h.momentum for h in hps]),
            beta2=optional("beta2", _beta_median),
            eps=optional("eps", _log_median),
            weight_decay=optional(
                "weight_decay",
                lambda v: _log_median(v) if all(x > 0 for x in v) else statistics.median(v),
            ),
        )

    # -- what a report shows --------------------------------------------------------------
    def columns(self, family: str | None) -> tuple[str, ...]:
        """The :class:`Hyperparameters` fields a table shows beside B, for an optimizer family.

        SGD studies show the noise scale g; Adam-family studies show β1 (``momentum``), β2,
        eps, the weight decay and its timescale τ, and no g, which means nothing for Adam.
        """
        if family == "adam":
            return ("lr", "momentum", "beta2", "eps", "weight_decay", "tau_epochs")
        return ("lr", "momentum", "noise_scale")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


#: How tables label a :class:`Hyperparameters` field (β1 is ``momentum``).
COLUMN_LABELS = {
    "lr": "lr",
    "momentum": "m",
    "noise_scale": "g",
    "beta2": "beta2",
    "eps": "eps",
    "weight_decay": "wd",
    "tau_epochs": "tau_ep",
}


def column_label(column: str, family: str | None) -> str:
    """A table's label of ``column``: ``momentum`` is "beta1" for the Adam family, else "m"."""
    return "beta1" if column == "momentum" and family == "adam" else COLUMN_LABELS[column]


def format_value(column: str, value: float, digits: int = 3) -> str:
    """``value`` of ``column`` for a table: ``digits`` significant digits, and a β (momentum,
    β2) near 1 with enough for its 1 − β to show: 0.9995, never "1".

    Example:
        >>> format_value("beta2", 0.9995), format_value("lr", 0.123456)
        ('0.9995', '0.123')
    """
    if column in ("momentum", "beta2") and 0 < value < 1:
        digits = max(digits, 2 + math.ceil(-math.log10(1 - value)))
    return f"{value:.{digits}g}"


#: The registered rules by name; :func:`register_rule` adds one.
RULES: dict[str, type[Rule]] = {}


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Register a :class:`Rule` subclass under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Rule)) or not cls.name:
        raise TypeError(f"`cls` must be a Rule subclass with a name, but got {cls!r}.")
    RULES[cls.name] = cls
    return cls


def get_rule(rule: str | Rule, alpha: float | None = None) -> Rule:
    """The :class:`Rule` named ``rule`` (``alpha`` for ``"power"``); a Rule passes through."""
    if isinstance(rule, Rule):
        return rule
    if not isinstance(rule, str):
        raise _type_error("rule", "a str", rule)
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {tuple(RULES)}, but got rule={rule!r}.")
    return RULES[rule](alpha=alpha)


@register_rule
class NoiseScaleRule(Rule):
    """Keep g = ϵ(N/B − 1)/(1 − m) and m (Smith et al. 2018); the space samples log g."""

    name = "noise-scale"
    optimizers = ("sgd",)
    lr_param = "noise_scale"
    uses_reference_batch = False
    searches_noise_scale = True

    def suggest_lr(self, trial, space, batch_size, momentum):
        g = trial.suggest_float(self.lr_param, *space.noise_scale, log=True)
        lr = lr_for_noise_scale(g, batch_size, space.n_train, momentum)
        return Hyperparameters(batch_size, lr, momentum, space.n_train)

    def move_lr(self, hp, batch_size):
        lr = lr_for_noise_scale(hp.noise_scale, batch_size, hp.n_train, hp.momentum)
        return replace(hp, batch_size=batch_size, lr=lr)

    def center(self, hps):
        """g* (the median g) at the median m: the centre in the space's own coordinates."""
        centre = super().center(hps)
        g = _log_median([h.noise_scale for h in hps])
        lr = lr_for_noise_scale(g, centre.batch_size, centre.n_train, centre.momentum)
        return replace(centre, lr=lr)


@register_rule
class LinearRule(Rule):
    """ϵ ∝ B (Goyal et al. 2017), from a reference lr at a reference batch size."""

    name = "linear"
    optimizers = ("sgd",)
    exponent = 1.0


@register_rule
class SqrtRule(Rule):
    """ϵ ∝ √B (Hoffer et al. 2017), from a reference lr at a reference batch size."""

    name = "sqrt"
    exponent = 0.5

    def lr_curve(self, batch_size, noise_batch_size):
        return surge(batch_size, noise_batch_size)


@register_rule
class PowerRule(Rule):
    """ϵ ∝ B^α with a given α (for example a fitted one)."""

    name = "power"
    takes_alpha = True

    def lr_curve(self, batch_size, noise_batch_size):
        return None

    def __init__(self, alpha: float | None = None) -> None:
        if alpha is None:
            raise TypeError("`alpha` is required when rule='power', but got alpha=None.")
        self.alpha = check_real("alpha", alpha)


@register_rule
class AdamSqrtRule(SqrtRule):
    """Malladi et al. 2022 for Adam-family optimizers: ϵ' = √κ ϵ, 1 − β' = κ(1 − β) for β1
    and β2, eps' = eps/√κ. A missing β2 or eps is torch's Adam default."""

    name = "adam-sqrt"
    optimizers = ("adam",)

    def move_lr(self, hp, batch_size):
        kappa = batch_size / hp.batch_size
        if MAX_ONE_MINUS_BETA1 < kappa * (1 - hp.momentum) <= 1:  # above 1 it is clamped
            # stacklevel=4: the user's call of rescale(), above Rule.rescale and move_lr.
            warnings.warn(
                f"adam-sqrt moves β1 from {hp.momentum:.3g} to {1 - kappa * (1 - hp.momentum):.3g}"
                f" at batch_size={batch_size}: far outside the small-(1 - β) regime the rule is "
                "derived in (benchmark P8: β1 0.9 -> 0.2 cost 18+ points of test error); "
                "rule='sqrt' keeps β1.",
                UserWarning,
                stacklevel=4,
            )
        beta2 = ADAM_DEFAULTS["beta2"] if hp.beta2 is None else hp.beta2
        eps = ADAM_DEFAULTS["eps"] if hp.eps is None else hp.eps
        return replace(
            hp,
            batch_size=batch_size,
            lr=hp.lr * math.sqrt(kappa),
            momentum=_scale_beta("momentum", hp.momentum, kappa, hp.batch_size, batch_size),
            beta2=_scale_beta("beta2", beta2, kappa, hp.batch_size, batch_size),
            eps=eps / math.sqrt(kappa),
        )

    def check_space(self, space) -> None:
        top, ref = space.batch_sizes[-1], space.reference_batch_size
        kappa = top / ref
        where = f"at batch_size={top} (κ = {kappa:g} from reference_batch_size={ref})"
        # 1 − β → κ(1 − β): the lowest β1 of a range is the first to cross 0.
        m = space.momentum
        m_low = m if isinstance(m, numbers.Real) else m[0]
        for name, beta in (("momentum", m_low), ("beta2", space.beta2)):
            if kappa * (1 - beta) > 1:
                raise ValueError(
                    f"'adam-sqrt' would push {name} = {beta} below 0 {where}: the rule does not "
                    "apply; lower the batch range or raise reference_batch_size."
                )
        if kappa * (1 - m_low) > MAX_ONE_MINUS_BETA1:
            warnings.warn(
                f"'adam-sqrt' moves β1 to {1 - kappa * (1 - m_low):.3g} {where}: far outside "
                "the small-(1 - β) regime the rule is derived in; benchmark P8 lost 18+ points "
                "there. Narrow the batch range around reference_batch_size, or use 'sqrt', which "
                "keeps β1.",
                UserWarning,
                stacklevel=3,  # the user's BatchScalingSpace(...)
            )


@register_rule
class IndependentRule(Rule):
    """No rule: B, ϵ and m searched on their own (the baseline); rescaling keeps ϵ."""

    name = "independent"
    lr_param = "lr"
    keeps_weight_decay = True
    exponent = 0.0
    uses_reference_batch = False
    couples_batch = False

    def transfer(self, hp, batch_size, lr, family):
        """Keep everything: the "keep the learning rate" baseline keeps β, eps and λ too."""
        return replace(hp, batch_size=batch_size, lr=lr)

    def lr_curve(self, batch_size, noise_batch_size):
        return None

    def suggest_lr(self, trial, space, batch_size, momentum):
        lr = trial.suggest_float(self.lr_param, *space.lr, log=True)
        return Hyperparameters(
            batch_size, lr, momentum, space.n_train, beta2=space.beta2, eps=space.eps
        )


def rescale(
    hparams: Hyperparameters,
    batch_size: int,
    rule: str | Rule = "noise-scale",
    *,
    alpha: float | None = None,
    keep_tau: bool = True,
    noise_batch_size: float | None = None,
) -> Hyperparameters:
    """Move hyperparameters tuned at batch size B to a new batch size B' (κ = B'/B).

    Rules (:data:`RULES`; :func:`register_rule` adds more):
        * ``"noise-scale"``: keep g and m, ϵ' = g (1 − m) / (N/B' − 1) (Smith et al. 2018).
        * ``"linear"``: ϵ' = κϵ (Goyal et al. 2017).
        * ``"sqrt"``: ϵ' = √κ ϵ (Hoffer et al. 2017).
        * ``"power"``: ϵ' = κ^alpha ϵ.
        * ``"adam-sqrt"``: ϵ' = √κ ϵ, 1 − β' = κ(1 − β) for β1 (``momentum``) and β2,
          eps' = eps/√κ (Malladi et al. 2022). A missing ``beta2`` or ``eps`` is taken as
          PyTorch's Adam default (0.999, 1e-8).
        * ``"independent"``: keep ϵ and λ (the "keep the learning rate" baseline).

    Other rules keep ``beta2`` and ``eps`` unchanged. A weight decay λ moves so that the
    timescale τ_epoch = B/(ϵλN) stays (Wang & Aitchison 2024): λ' = B'/(ϵ'τN), so λ stays
    under the linear rule and grows as √κ under the square-root rules; ``keep_tau=False``
    (and the ``"independent"`` rule) keeps λ instead.

    Args:
        hparams: The tuned hyperparameters.
        batch_size: New batch size B', an integer in [1, n_train - 1].
        rule: A name of :data:`RULES`, or a :class:`Rule`.
        alpha: The exponent of the ``"power"`` rule; must be None for every other rule.
        keep_tau: Keep AdamW's weight-decay timescale (the default) rather than λ.
        noise_batch_size: The critical batch size B_noise, where known (``optuna-bs
            noise-scale`` measures B_simple): the lr then follows McCandlish et al.'s
            ϵ ∝ 1/(1 + B_noise/B) for the SGD rules and Li et al.'s surge for the square-root
            rules, which bend the rule's power of B as B nears B_noise.

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
    rule = get_rule(rule, alpha)
    n, old_b = hparams.n_train, hparams.batch_size
    new_b, _ = _check_sizes(batch_size, n)
    if new_b > largest_valid_batch(n):
        warnings.warn(
            f"batch_size={new_b} is above n_train / 10 = {largest_valid_batch(n):g}: scaling "
            "rules are only validated up to about N/10 (Smith et al. 2018); beyond it the "
            "gains stop (critical batch size), so decay the learning rate instead.",
            UserWarning,
            stacklevel=2,
        )
    new = rule.rescale(hparams, new_b, keep_tau=keep_tau, noise_batch_size=noise_batch_size)
    _logger.debug(
        "rescale %s: batch_size %d -> %d, lr %g -> %g", rule.name, old_b, new_b, hparams.lr, new.lr
    )
    return new
