"""How the best learning rate moves with the batch size, learned from a study's own trials.

docs/design.md §3. The error moves more between batch sizes than a 2× lr miss costs, so the
evidence is read per batch size and never pooled across them:

* ``optima.py`` and ``fits.py``: each B's best lr, and ϵ*(B) and g* fitted to them.
* :func:`transfer` and :func:`recommend`: the configuration at a new batch size, from the
  fitted curve up to :data:`FIT_REACH` times beyond the explored batch sizes, else from the
  study's rule; with which model, the interval, and how far it extrapolates.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace

import optuna

from optuna_bs._validation import check_int
from optuna_bs.errors import NotEnoughTrialsError
from optuna_bs.report.analysis import complete_points, rule_for, study_rule
from optuna_bs.report.fits import (
    FIT_REACH,
    MAX_EXTRAPOLATION,
    ScalingFit,
    _why_no_fit,
    fit_scaling_rule,
)
from optuna_bs.report.optima import TOLERANCE, batch_optima, error_limit
from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.rules.registry import Rule, rescale

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transfer:
    """A configuration at a new batch size, and how far to trust it.

    ``source`` is ``"fit"`` (the fitted curve ``model``) or ``"rule"`` (the study's rule,
    moved from the optimum of ``anchor_batch_size``; ``reason`` says why there is no fit).
    ``lr_interval`` is the fit's bootstrap interval at the new B (None from a rule).
    ``extrapolation`` is how many times beyond the explored batch sizes it lies (1 inside).
    ``prediction_error`` is the curve's leave-one-batch-size-out RMS error in log lr.
    """

    hparams: Hyperparameters
    source: str
    model: str
    anchor_batch_size: int
    lr_interval: tuple[float, float] | None
    extrapolation: float
    reason: str | None = None
    #: The fitted curve's RMS error, in log lr, at predicting a left-out batch size.
    prediction_error: float | None = None

    def describe(self) -> str:
        """One line: where the lr comes from, its interval, and how far it reaches."""
        if self.source == "fit":
            where = f"fitted curve ({self.model})"
        else:
            where = f"the {self.model!r} rule moved from B={self.anchor_batch_size}"
        parts = [where]
        if self.lr_interval is not None:
            low, high = self.lr_interval
            parts.append(f"lr interval {low:.3g}..{high:.3g}")
        if self.prediction_error is not None:
            factor = math.exp(self.prediction_error)
            parts.append(f"a left-out batch size was predicted within x{factor:.2f} (RMS)")
        if self.extrapolation > 1:
            parts.append(f"{self.extrapolation:.3g}x beyond the explored batch sizes")
        else:
            parts.append("inside the explored batch sizes")
        return "; ".join(parts)


def transfer(
    study: optuna.Study,
    batch_size: int | None = None,
    rule: str | Rule | None = None,
    *,
    alpha: float | None = None,
    extrapolate: bool = False,
    noise_batch_size: float | None = None,
    tolerance: float = TOLERANCE,
    fit: ScalingFit | None = None,
) -> Transfer:
    """The configuration to run at ``batch_size``, learned from the study's trials.

    * **The lr.** Within :data:`FIT_REACH` times of the batch sizes the curve was fitted on,
      the fitted ϵ*(B) (:func:`fit_scaling_rule`). Farther out, the study's rule moves the
      curve's value at the nearest fitted batch size. With no fit (fewer than 3 batch sizes
      within tolerance), the rule moves the optimum of the counted batch size nearest to
      ``batch_size``; ``noise_batch_size`` (a critical batch size you trust) then bends it
      (:func:`~optuna_bs.rescale`). B_simple from a short warm-up was 4× off on held-out
      tasks (docs/design.md §3), so nothing bends unless asked.
    * **The rest** moves from that optimum's best trial by :meth:`Rule.transfer`: for SGD the
      rule's momentum; for Adam β1 kept, β2 by its half-life in samples, eps/√κ; λ by the
      kept τ (the ``"independent"`` rule keeps everything).

    Args:
        study: A finished study.
        batch_size: The batch size to run next; ``None``: the best trial's.
        rule: A rule of :data:`~optuna_bs.rules.RULES` to move by instead of the fitted
            curve; ``None``: the fitted curve where there is one, else the study's own rule.
        alpha: The exponent of ``rule="power"``.
        extrapolate: Allow a batch size more than :data:`MAX_EXTRAPOLATION` times beyond
            the explored ones.
        noise_batch_size: A critical batch size to bend the rule at, where no fit answers.
        tolerance: As in :func:`error_limit`.
        fit: A fit already made (:func:`fit_scaling_rule`), to save refitting.

    Raises:
        NotEnoughTrialsError: If the study has no usable complete trial.
        ValueError: For a batch size outside [1, n_train - 1], an unknown rule, or one far
            beyond the explored batch sizes without ``extrapolate``.

    Warns:
        UserWarning: Outside the explored batch sizes, and (from ``rescale``) beyond N/10.
    """
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    points = complete_points(study)
    if not points:
        raise NotEnoughTrialsError(_why_no_fit(study, points, []))
    rule_given = rule is not None
    rule = rule_for(study, rule, alpha)
    family = study_rule(study)[1]
    optima = batch_optima(points, error_limit(study, tolerance))
    best = min(optima, key=lambda o: (o.error, o.batch_size))
    target = best.batch_size if batch_size is None else batch_size
    Hyperparameters(target, best.lr, best.best.momentum, best.best.n_train)  # B' < N
    low, high = optima[0].batch_size, optima[-1].batch_size
    reach = max(target / high, low / target, 1.0)
    if reach > MAX_EXTRAPOLATION and not extrapolate:
        raise ValueError(
            f"batch_size={target} is over {MAX_EXTRAPOLATION:g}x beyond the batch sizes "
            f"study {study.study_name!r} explored ({low}..{high}); a rule extrapolated that "
            "far is a guess: run trials nearer it, or pass extrapolate=True (--extrapolate)."
        )
    reason = None
    if rule_given:
        fit, reason = None, f"the {rule.name!r} rule was asked for"
    elif fit is None:
        try:
            fit = fit_scaling_rule(study, tolerance=tolerance)
        except NotEnoughTrialsError as err:
            reason = str(err)
    counted = [o for o in optima if o.counted] or [best]
    anchor = min(counted, key=lambda o: (abs(math.log(o.batch_size / target)), o.error))
    with warnings.catch_warnings(record=True) as caught:  # re-raised at the caller's line
        warnings.simplefilter("always")
        if fit is not None:
            sizes = fit.batch_sizes
            edge = min(max(target, sizes[0] / FIT_REACH), sizes[-1] * FIT_REACH)
            edge_hp = replace(anchor.hparams(), batch_size=round(edge), lr=fit.lr_at(edge))
            lr = rescale(edge_hp, target, rule, keep_tau=False).lr
            moved_by_rule = edge != target
            model = f"{fit.model}, then the {rule.name!r} rule" if moved_by_rule else fit.model
            interval = None if moved_by_rule else fit.interval_at(target)
        else:
            lr = rescale(anchor.hparams(), target, rule, noise_batch_size=noise_batch_size).lr
            model, interval = rule.name, None
        hp = rule.transfer(anchor.hparams(), target, lr, family)
    result = Transfer(
        hparams=hp,
        source="rule" if fit is None else "fit",
        model=model,
        anchor_batch_size=anchor.batch_size,
        lr_interval=interval,
        extrapolation=reach,
        reason=reason,
        prediction_error=None if fit is None else fit.scores[fit.model],
    )
    if not low <= target <= high:
        warnings.warn(
            f"batch_size={target} is outside the batch sizes study {study.study_name!r} "
            f"explored ({low}..{high}): {result.describe()}; check it with a short run.",
            UserWarning,
            stacklevel=2,
        )
    for w in {str(w.message): w for w in caught}.values():  # each once, in order
        warnings.warn(w.message, w.category, stacklevel=2)
    _logger.info("study %r at B=%d: %s", study.study_name, target, result.describe())
    return result


def recommend(
    study: optuna.Study,
    batch_size: int | None = None,
    rule: str | Rule | None = None,
    *,
    alpha: float | None = None,
    extrapolate: bool = False,
    noise_batch_size: float | None = None,
    tolerance: float = TOLERANCE,
) -> Hyperparameters:
    """The hyperparameters to run at ``batch_size``: :func:`transfer`'s, without the account
    of where they come from (which it logs at INFO level).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = transfer(
            study,
            batch_size,
            rule,
            alpha=alpha,
            extrapolate=extrapolate,
            noise_batch_size=noise_batch_size,
            tolerance=tolerance,
        )
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    return result.hparams
