"""analysis.py: the trials as the analysis reads them, the study's rule, the Pareto front."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from optuna_bs.report.analysis import complete_points, pareto_front, study_rule
from optuna_bs.rules.formulas import Hyperparameters

N_TRAIN = 50_000
BATCH_SIZES = (16, 32, 64, 128, 256, 512)


def add(study, error, batch_size, lr, *, momentum=0.9, state=None, **attrs):
    hp = Hyperparameters(batch_size, lr, momentum, N_TRAIN)
    kwargs = {"value": error} if state is None else {"state": state}
    study.add_trial(
        optuna.trial.create_trial(
            user_attrs={**hp.user_attrs(), "n_updates": 100, "train_seconds": 1.0, **attrs},
            **kwargs,
        )
    )


def landscape_study(alpha, *, c=0.01, per_b=40, noise=0.001, seed=0, batch_sizes=BATCH_SIZES):
    """lr sampled log-uniformly around c·B^alpha; the error is lowest exactly on the rule."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study()
    for b in batch_sizes:
        target = c * b**alpha
        for lr in target * np.exp(rng.uniform(-1.0, 1.0, per_b)):
            error = 0.1 + 0.05 * math.log(lr / target) ** 2 + rng.normal(0.0, noise)
            add(study, error, b, float(lr))
    return study


def on_rule_study(alpha, *, c=0.01, per_b=20, seed=0):
    """Every trial has lr = c·B^alpha times small noise; the errors are random."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study()
    for b in BATCH_SIZES:
        for _ in range(per_b):
            lr = c * b**alpha * math.exp(rng.normal(0.0, 0.05))
            add(study, float(rng.uniform(0.1, 0.5)), b, lr)
    return study


def small_study():
    """Four trials, one per batch size, the last worse than the median: too few to fit."""
    study = optuna.create_study()
    for b, lr, error in [(16, 0.01, 0.5), (32, 0.02, 0.4), (64, 0.05, 0.3), (128, 0.09, 0.45)]:
        add(study, error, b, lr)
    return study


def pareto_study(points, directions=("minimize",)):
    study = optuna.create_study(directions=list(directions))
    for seconds, error in points:
        if len(directions) == 2:  # the cost is objective 1, not a user attr
            study.add_trial(
                optuna.trial.create_trial(
                    values=[error, seconds],
                    user_attrs=Hyperparameters(32, 0.1, 0.9, N_TRAIN).user_attrs(),
                )
            )
        else:
            add(study, error, 32, 0.1, train_seconds=seconds, n_updates=int(seconds * 10))
    return study


POINTS = [(1, 0.5), (2, 0.4), (2, 0.45), (3, 0.4), (4, 0.3), (5, 0.35), (0.5, 0.9), (4, 0.3)]


@pytest.mark.parametrize("x", ["train_seconds", "n_updates"])
def test_pareto_front_of_hand_made_points(x):
    front = pareto_front(pareto_study(POINTS), x)
    # #2 and #3 are beaten by #1, #5 by #4, #7 ties #4 and comes later.
    assert [p.number for p in front] == [6, 0, 1, 4]
    assert [p.error for p in front] == [0.9, 0.5, 0.4, 0.3]
    scale = 1 if x == "train_seconds" else 10
    assert [p.cost for p in front] == [0.5 * scale, 1 * scale, 2 * scale, 4 * scale]


def test_pareto_front_of_a_two_objective_study_is_its_best_trials():
    study = pareto_study(POINTS, directions=("minimize", "minimize"))
    front = pareto_front(study, "train_seconds")
    assert {p.number for p in front} <= {t.number for t in study.best_trials}
    assert [p.number for p in front] == [6, 0, 1, 4]


def test_pareto_front_checks_x():
    with pytest.raises(ValueError, match="`x` must be one of"):
        pareto_front(pareto_study(POINTS), "epochs")


def test_complete_points_and_the_study_rule():
    study = pareto_study(POINTS)
    add(study, None, 32, 0.1, state=optuna.trial.TrialState.PRUNED)
    assert [p.number for p in complete_points(study)] == list(range(len(POINTS)))
    assert study_rule(study) == ("noise-scale", None)
    with pytest.raises(ValueError, match="minimise"):
        complete_points(optuna.create_study(direction="maximize"))
    with pytest.raises(TypeError, match="optuna.Study"):
        complete_points("study")
