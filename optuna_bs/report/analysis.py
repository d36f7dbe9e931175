"""What a finished study learned: the fitted scaling rule, the best noise scale, the Pareto front.

Every function reads the COMPLETE trials of a study and the user attrs that
:class:`~optuna_bs.search.BatchScalingSpace` and :func:`~optuna_bs.train.fit` record on them
(``batch_size``, ``lr``, ``momentum``, ``n_train``, ``noise_scale``, ``train_seconds``,
``n_updates``). The error is the study's objective 0, to be minimised: one objective, or the
first of a two-objective study (``[val_error, train_seconds]``).

* :func:`complete_points`: the trials as the analysis reads them.
* :func:`pareto_front`: the trials no other trial beats on both error and cost (training
  seconds or parameter updates).
* :func:`study_rule`: the rule and optimizer family a study was run with (its attrs).

How the best lr moves with B (the fitted curve, g*, the recommendation) is
:mod:`optuna_bs.report.scaling`'s.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import optuna

from optuna_bs.rules.formulas import Hyperparameters, noise_scale, optimizer_family
from optuna_bs.rules.registry import RULES, Rule, get_rule
from optuna_bs.vocabulary import SECOND_OBJECTIVES

_logger = logging.getLogger(__name__)

#: The costs a Pareto front is drawn over: the second objectives of the vocabulary.
PARETO_COSTS = SECOND_OBJECTIVES
_REQUIRED = ("batch_size", "lr", "momentum", "n_train")


@dataclass(frozen=True)
class TrialPoint:
    """One COMPLETE trial as the analysis sees it: its error and its recorded user attrs."""

    number: int
    error: float
    batch_size: int
    lr: float
    momentum: float
    n_train: int
    noise_scale: float
    train_seconds: float | None = None
    n_updates: int | None = None
    beta2: float | None = None
    eps: float | None = None
    weight_decay: float | None = None

    @property
    def tau_epochs(self) -> float | None:
        """AdamW's weight-decay timescale B/(ϵλN); ``None`` without weight decay."""
        return self.hparams().tau_epochs

    def hparams(self) -> Hyperparameters:
        """The trial's hyperparameters."""
        return Hyperparameters(
            self.batch_size,
            self.lr,
            self.momentum,
            self.n_train,
            beta2=self.beta2,
            eps=self.eps,
            weight_decay=self.weight_decay,
        )


@dataclass(frozen=True)
class ParetoPoint:
    """A trial on the Pareto front: nothing has both a lower error and a lower ``cost``."""

    number: int
    error: float
    cost: float
    batch_size: int
    lr: float


def complete_points(study: optuna.Study) -> list[TrialPoint]:
    """The study's COMPLETE trials that carry the user attrs of optuna-bs, in trial order.

    Trials without ``batch_size``, ``lr``, ``momentum`` or ``n_train``, or with a non-finite
    error, are left out (logged at debug level). A missing ``noise_scale`` is computed.

    Raises:
        TypeError: If ``study`` is not an ``optuna.Study``.
        ValueError: If the study maximises its first objective (an error is minimised).
    """
    if not isinstance(study, optuna.Study):
        raise TypeError(
            f"`study` must be an optuna.Study, but got study={study!r} of type "
            f"{type(study).__name__}."
        )
    if study.directions[0] != optuna.study.StudyDirection.MINIMIZE:
        raise ValueError(
            "`study` must minimise its first objective (a validation error or loss), but "
            f"its directions are {[d.name.lower() for d in study.directions]}."
        )
    points = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = t.user_attrs
        error = t.values[0] if t.values else math.nan
        if any(a.get(k) is None for k in _REQUIRED) or not math.isfinite(error):
            _logger.debug("trial %d left out: no finite value or no %s", t.number, _REQUIRED)
            continue
        g = a.get("noise_scale")
        if g is None:
            g = noise_scale(a["lr"], a["batch_size"], a["n_train"], a["momentum"])
        seconds = a.get("train_seconds")
        if seconds is None and len(t.values) == 2:  # [val_error, train_seconds] studies
            seconds = t.values[1]
        points.append(
            TrialPoint(
                number=t.number,
                error=float(error),
                batch_size=int(a["batch_size"]),
                lr=float(a["lr"]),
                momentum=float(a["momentum"]),
                n_train=int(a["n_train"]),
                noise_scale=float(g),
                train_seconds=None if seconds is None else float(seconds),
                n_updates=None if a.get("n_updates") is None else int(a["n_updates"]),
                beta2=a.get("beta2"),
                eps=a.get("eps"),
                weight_decay=a.get("weight_decay"),
            )
        )
    return points


def study_rule(study: optuna.Study) -> tuple[str, str | None]:
    """The rule a study was searched with, and its optimizer family (``"sgd"``, ``"adam"``).

    Read from the study's user attrs ``parameterisation`` and ``optimizer`` (what
    ``optuna-bs run`` records), else from its trials' (what
    :class:`~optuna_bs.search.BatchScalingSpace` and :func:`~optuna_bs.fit` record), else
    ``"noise-scale"``. An adam-sqrt study with no optimizer recorded is taken as Adam.

    Example:
        >>> study_rule(optuna.create_study())
        ('noise-scale', None)
    """
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))

    def recorded(key: str) -> str | None:
        value = study.user_attrs.get(key)
        if isinstance(value, str):
            return value
        seen = [t.user_attrs[key] for t in trials if isinstance(t.user_attrs.get(key), str)]
        return max(set(seen), key=seen.count) if seen else None

    rule = recorded("parameterisation") or "noise-scale"
    family = optimizer_family(recorded("optimizer"))
    known = RULES.get(rule)
    if family is None and known is not None and "sgd" not in known.optimizers:
        family = "adam"  # a rule for Adam alone
    return rule, family


def rule_for(study: optuna.Study, rule: str | None = None, alpha: float | None = None) -> Rule:
    """The :class:`~optuna_bs.rules.Rule` named ``rule``, by default the study's own; a
    ``"power"`` rule without ``alpha`` takes the α its trials recorded."""
    name = rule or study_rule(study)[0]
    known = RULES.get(name)
    if known is not None and known.takes_alpha and alpha is None:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if isinstance(t.user_attrs.get("alpha"), int | float):
                alpha = t.user_attrs["alpha"]
                break
    return get_rule(name, alpha)


def why_no_points(study: optuna.Study, attr: str | None = None) -> str | None:
    """Why the study has no trial to plot (with the user attr ``attr``), in words; or ``None``.

    Example:
        >>> why_no_points(optuna.create_study())
        'the study has no COMPLETE trial yet.'
    """
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return "the study has no COMPLETE trial yet."
    points = complete_points(study)
    if not points:
        missing = sorted({k for t in done for k in _REQUIRED if t.user_attrs.get(k) is None})
        return (
            f"no COMPLETE trial records {', '.join(missing)}: sample the trials with "
            "BatchScalingSpace.suggest(trial), which records them."
        )
    if attr is not None and all(getattr(p, attr) is None for p in points):
        return (
            f"no COMPLETE trial records `{attr}`: train with optuna_bs.fit, or in your own loop "
            "pass updates= (and samples=) to TrialMonitor.step and end the run inside "
            "`with TrialMonitor(...)` or with monitor.finish()."
        )
    return None


def objective_name(study: optuna.Study) -> str:
    """The name of objective 0: the study's metric name, else the trials' ``metric`` attr."""
    if study.metric_names:
        return study.metric_names[0]
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if isinstance(t.user_attrs.get("metric"), str):
            return t.user_attrs["metric"]
    return "val_error"


def pareto_front(study: optuna.Study, x: str = "train_seconds") -> list[ParetoPoint]:
    """The trials that no other trial beats on both the error and the cost ``x``.

    Both are minimised. A trial that ties another on both is kept once (the lower trial
    number). Trials without the user attr ``x`` are left out.

    Args:
        study: A finished study.
        x: The cost: ``"train_seconds"`` (wall-clock of the fit) or ``"n_updates"``
            (parameter updates).

    Returns:
        The front, cheapest first (so the error falls along it).

    Raises:
        ValueError: If ``x`` is not one of :data:`PARETO_COSTS`.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> pareto_front(study, "n_updates")
        []
    """
    if x not in PARETO_COSTS:
        raise ValueError(f"`x` must be one of {PARETO_COSTS}, but got x={x!r}.")
    candidates = [p for p in complete_points(study) if getattr(p, x) is not None]
    candidates.sort(key=lambda p: (getattr(p, x), p.error, p.number))
    front: list[ParetoPoint] = []
    for p in candidates:
        if not front or p.error < front[-1].error:
            front.append(ParetoPoint(p.number, p.error, float(getattr(p, x)), p.batch_size, p.lr))
    return front
