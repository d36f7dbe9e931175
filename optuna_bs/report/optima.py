"""Each batch size's best learning rate: the evidence a transfer is learned from (docs/design.md
§3).

Never pooled across batch sizes: each B's best lr is the vertex of a quadratic of the error in
log lr through its best few trials (else its best trial's lr), and a batch size counts only if
its best trial beats the study's median trial (:func:`error_limit`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import optuna

from optuna_bs._validation import check_real
from optuna_bs.report.analysis import TrialPoint, complete_points
from optuna_bs.rules.formulas import Hyperparameters, weight_decay_for_timescale

#: g* needs this many usable complete trials.
MIN_TRIALS = 3


#: A batch size's quadratic goes through at most this many of its best trials.
VERTEX_TRIALS = 5


#: A batch size counts when its best error is below this fraction of the way from the
#: study's best to its median trial (:func:`error_limit`).
TOLERANCE = 1.0


@dataclass(frozen=True)
class BatchOptimum:
    """What one batch size's own trials say: its best lr and its best error.

    ``method`` is ``"vertex"`` (a quadratic of the error in log lr through its best
    :data:`VERTEX_TRIALS` trials, with its minimum inside them) or ``"best trial"`` (fewer
    than three lrs, or no minimum inside). ``counted`` says whether its best error beats the
    limit of :func:`error_limit`, so that it enters a fit.
    """

    batch_size: int
    lr: float
    error: float
    n_trials: int
    method: str
    counted: bool
    best: TrialPoint

    @property
    def weight(self) -> float:
        """Its weight in a fit: the trials behind it, up to 3."""
        return float(min(self.n_trials, 3))

    def hparams(self) -> Hyperparameters:
        """Its best trial's hyperparameters at the estimated best lr, AdamW's τ kept."""
        hp = self.best.hparams()
        if not hp.weight_decay:
            return replace(hp, lr=self.lr)
        lam = weight_decay_for_timescale(hp.tau_epochs, self.lr, hp.batch_size, hp.n_train)
        return replace(hp, lr=self.lr, weight_decay=lam)


def _optimum_lr(points: list[TrialPoint]) -> tuple[float, str]:
    """The best lr of one batch size's trials, and how it was found."""
    ranked = sorted(points, key=lambda p: (p.error, p.number))[:VERTEX_TRIALS]
    x = np.log([p.lr for p in ranked])
    y = np.array([p.error for p in ranked])
    if len(np.unique(np.round(x, 9))) >= 3:
        a, b, _ = np.polyfit(x, y, 2)
        if a > 0 and x.min() <= -b / (2 * a) <= x.max():
            return math.exp(-b / (2 * a)), "vertex"
    return ranked[0].lr, "best trial"


def error_limit(study: optuna.Study, tolerance: float = TOLERANCE) -> float:
    """The error a batch size's best trial must beat to count: ``tolerance`` of the way from
    the study's best complete trial to its median trial (complete trials, and pruned ones at
    their best reported value). At the default 1, a batch size counts when its best trial
    beats the study's median trial, on any metric's scale."""
    check_real("tolerance", tolerance, low=0.0)
    errors = [p.error for p in complete_points(study)]
    if not errors:
        return math.inf
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    values = errors + [
        min(v for v in t.intermediate_values.values() if math.isfinite(v))
        for t in pruned
        if any(math.isfinite(v) for v in t.intermediate_values.values())
    ]
    best = min(errors)
    return best + tolerance * (float(np.median(values)) - best)


def batch_optima(points: list[TrialPoint], limit: float = math.inf) -> list[BatchOptimum]:
    """Each batch size's best lr and error from its own trials, smallest B first.

    A batch size is ``counted`` when its best error is below ``limit``
    (:func:`error_limit`), or is the best of all: a batch size whose best trial is no
    better than the study's median trial (a trial at chance among them) never counts.

    Example:
        >>> batch_optima([])
        []
    """
    if not points:
        return []
    best = min(p.error for p in points)
    by_size: dict[int, list[TrialPoint]] = {}
    for p in points:
        by_size.setdefault(p.batch_size, []).append(p)
    optima = []
    for b in sorted(by_size):
        mine = by_size[b]
        top = min(mine, key=lambda p: (p.error, p.number))
        lr, method = _optimum_lr(mine)
        counted = top.error < limit or top.error == best
        optima.append(BatchOptimum(b, lr, top.error, len(mine), method, counted, top))
    return optima
