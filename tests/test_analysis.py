"""analysis.py on synthetic studies whose true scaling rule is known."""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest

from optuna_bs.analysis import (
    NotEnoughTrialsError,
    fit_noise_scale,
    fit_scaling_rule,
    fit_surge,
    pareto_front,
    recommend,
)
from optuna_bs.errors import OptunaBSError
from optuna_bs.rules import Hyperparameters, lr_for_noise_scale

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


@pytest.mark.parametrize("alpha", [0.5, 1.0])
@pytest.mark.parametrize("make", [landscape_study, on_rule_study])
def test_fit_recovers_the_true_exponent(alpha, make):
    study = make(alpha)
    fit = fit_scaling_rule(study, n_bootstrap=300)
    assert fit.alpha == pytest.approx(alpha, abs=0.05)
    assert fit.alpha_low <= alpha <= fit.alpha_high
    assert fit.alpha_high - fit.alpha_low < 0.3
    assert fit.coefficient == pytest.approx(0.01, rel=0.3)
    assert len(fit.batch_sizes) >= 3 and set(fit.batch_sizes) <= set(BATCH_SIZES)
    assert fit.n_trials == len(study.trials)
    assert fit.n_selected == math.ceil(0.25 * len(study.trials))
    assert sum(fit.counts) <= fit.n_selected and min(fit.counts) >= 2
    assert fit.lr_at(128) == pytest.approx(0.01 * 128**alpha, rel=0.1)
    assert "B^" in fit.describe()


def test_best_noise_scale_is_the_constant_g_of_the_linear_rule():
    # lr = c·B means g = c (N - B) / (1 - m) ≈ cN / (1 - m) for B << N (Smith et al. 2018).
    fit = fit_noise_scale(landscape_study(1.0))
    g = 0.01 * N_TRAIN / (1 - 0.9)
    assert fit.best_noise_scale == pytest.approx(g, rel=0.1)
    assert fit.low <= fit.best_noise_scale <= fit.high
    assert "g* = " in fit.describe()


def test_best_noise_scale_needs_no_spread_of_batch_sizes():
    study = landscape_study(1.0, batch_sizes=(64,))
    fit = fit_noise_scale(study, n_bootstrap=200)
    assert fit.best_noise_scale == pytest.approx(0.01 * (N_TRAIN - 64) / 0.1, rel=0.1)
    assert fit.n_selected == 10 and fit.n_trials == 40
    with pytest.raises(NotEnoughTrialsError, match=r"1 batch size\(s\) \[64\] hold at least 2"):
        fit_scaling_rule(study)


def test_fit_is_reproducible_with_its_seed():
    study = landscape_study(0.5, noise=0.01)
    a, b = fit_scaling_rule(study, seed=3), fit_scaling_rule(study, seed=3)
    assert (a.alpha_low, a.alpha_high) == (b.alpha_low, b.alpha_high)
    c, d = fit_noise_scale(study, seed=3), fit_noise_scale(study, seed=3)
    assert (c.low, c.high) == (d.low, d.high)


def test_fit_ignores_pruned_and_failed_trials():
    study = landscape_study(0.5)
    before = fit_scaling_rule(study)
    for b in BATCH_SIZES:  # would drag the fit to lr = 1 if they counted
        add(study, None, b, 1.0, state=optuna.trial.TrialState.PRUNED)
        add(study, None, b, 1.0, state=optuna.trial.TrialState.FAIL)
    after = fit_scaling_rule(study)
    assert after.alpha == before.alpha
    assert after.n_trials == before.n_trials == 40 * len(BATCH_SIZES)
    assert fit_noise_scale(study).best_noise_scale == fit_noise_scale(study).best_noise_scale


def test_too_few_batch_sizes_gives_no_number():
    study = landscape_study(0.5, batch_sizes=(32, 64))
    with pytest.raises(NotEnoughTrialsError, match="needs 3 such batch sizes") as err:
        fit_scaling_rule(study)
    assert isinstance(err.value, OptunaBSError)
    assert "2 batch size(s) [32, 64] hold at least 2" in str(err.value)
    # Batch sizes that only bad trials reached do not count.
    for b in (128, 256):
        add(study, 5.0, b, 0.1)
    with pytest.raises(NotEnoughTrialsError, match=r"\[32, 64\]"):
        fit_scaling_rule(study)


def test_too_few_trials_gives_no_number():
    study = landscape_study(0.5, per_b=1, batch_sizes=(16, 32, 64, 128))
    for fit in (fit_scaling_rule, fit_noise_scale):
        with pytest.raises(NotEnoughTrialsError, match="has 4 usable complete trials"):
            fit(study)
        with pytest.raises(NotEnoughTrialsError, match="has 0 usable"):
            fit(optuna.create_study())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantile": 0.0}, "quantile"),
        ({"quantile": 1.5}, "quantile"),
        ({"confidence": 1.0}, "confidence"),
        ({"n_bootstrap": 0}, "n_bootstrap"),
        ({"min_selected": 2}, "min_selected"),
    ],
)
def test_fit_checks_its_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_scaling_rule(landscape_study(0.5, per_b=3), **kwargs)


def test_fit_refuses_a_maximised_study():
    with pytest.raises(ValueError, match="minimise"):
        fit_scaling_rule(optuna.create_study(direction="maximize"))
    with pytest.raises(TypeError, match="optuna.Study"):
        fit_scaling_rule("study")


def small_study():
    """Four trials, one per batch size: too few to fit anything."""
    study = optuna.create_study()
    for b, lr, error in [(16, 0.01, 0.5), (32, 0.02, 0.4), (64, 0.05, 0.3), (128, 0.09, 0.35)]:
        add(study, error, b, lr)
    return study


def recommend_study(g=80.0, *, rule=None):
    """Near-best trials on g = 80 at B = 16..128 (m = 0.9), and worse ones off it."""
    study = optuna.create_study()
    extra = {} if rule is None else {"parameterisation": rule}
    rng = np.random.default_rng(0)
    for b in (16, 32, 64, 128):
        for factor, error in ((1.0, 0.30), (1.1, 0.31), (1 / 1.1, 0.31), (8.0, 0.6), (1 / 8, 0.6)):
            lr = lr_for_noise_scale(g * factor, b, N_TRAIN, 0.9)
            add(study, error + float(rng.uniform(0, 0.005)), b, lr, **extra)
    return study


def test_recommend_moves_g_star_not_a_lucky_outlier():
    """The single best trial sits at g = 400; the near-best centre, g* = 80, is recommended."""
    study = recommend_study()
    add(study, 0.25, 64, lr_for_noise_scale(400.0, 64, N_TRAIN, 0.9))  # lucky seed
    g_star = fit_noise_scale(study).best_noise_scale
    assert g_star == pytest.approx(80.0, rel=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 128 was explored: no warning
        hp = recommend(study, batch_size=128)
    assert hp.noise_scale == pytest.approx(g_star, rel=1e-9)
    assert hp.lr == pytest.approx(lr_for_noise_scale(g_star, 128, N_TRAIN, 0.9), rel=1e-9)
    assert hp.noise_scale < 100  # the lucky trial's g = 400 would give 5x this lr


def test_recommend_warns_outside_and_refuses_far_beyond_the_explored_sizes():
    study = recommend_study()
    with pytest.warns(UserWarning, match=r"outside the batch sizes .* explored \(16\.\.128\)"):
        hp = recommend(study, batch_size=512)
    assert hp.batch_size == 512 and hp.noise_scale == pytest.approx(80.0, rel=0.05)
    with pytest.raises(ValueError, match=r"over 4x beyond .* \(16\.\.128\).*extrapolate=True"):
        recommend(study, batch_size=1024)
    with pytest.raises(ValueError, match="over 4x beyond"):
        recommend(study, batch_size=2)
    with pytest.warns(UserWarning, match="outside"):
        assert recommend(study, 1024, extrapolate=True).batch_size == 1024


def test_recommend_uses_the_study_rule_unless_told():
    study = recommend_study(rule="linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear = recommend(study, 128)
        sqrt = recommend(study, 128, "sqrt")
        power = recommend(study, 128, "power", alpha=0.75)
    # The near-best lrs at 128 are the centre of each near-best trial moved by the rule.
    near = sorted((t for t in study.trials), key=lambda t: t.value)[:5]
    moved = [t.user_attrs["lr"] * (128 / t.user_attrs["batch_size"]) for t in near]
    assert linear.lr == pytest.approx(math.exp(np.median(np.log(moved))), rel=1e-9)
    assert sqrt.lr < linear.lr and power.lr < linear.lr
    assert recommend(recommend_study(), 128).noise_scale == pytest.approx(80, rel=0.05)


def test_recommend_needs_a_complete_trial_and_a_valid_batch_size():
    with pytest.raises(NotEnoughTrialsError, match="no COMPLETE trial"):
        recommend(optuna.create_study(), 64)
    with pytest.raises(ValueError, match="batch_size"):
        recommend(recommend_study(), N_TRAIN)


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


def surge_study(b_noise=128.0, lr_max=0.01, *, per_b=30, seed=0):
    """Best lr on Adam's surge curve (Li et al. 2024): up as √B, down past B_noise."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study()
    for b in (8, 16, 32, 64, 128, 256, 512, 1024, 2048):
        target = lr_max / (0.5 * (math.sqrt(b_noise / b) + math.sqrt(b / b_noise)))
        for lr in target * np.exp(rng.uniform(-1.0, 1.0, per_b)):
            error = 0.1 + 0.05 * math.log(lr / target) ** 2 + rng.normal(0.0, 0.001)
            add(study, error, b, float(lr))
    return study


def test_surge_fit_finds_b_noise_and_is_preferred_on_a_surge():
    fit = fit_surge(surge_study(b_noise=128.0))
    assert 64 <= fit.noise_batch_size <= 256  # within 2x
    assert fit.preferred and fit.delta_aic >= 2
    assert fit.lr_at(fit.noise_batch_size) == pytest.approx(fit.lr_max)
    assert "surge preferred" in fit.describe()
    # A power law is not taken for a surge.
    plain = fit_surge(landscape_study(0.5))
    assert not plain.preferred and "power law preferred" in plain.describe()


def test_surge_needs_four_batch_sizes():
    with pytest.raises(NotEnoughTrialsError, match="surge needs 4"):
        fit_surge(landscape_study(0.5, batch_sizes=(32, 64, 128)))


def test_a_fit_to_thin_evidence_gets_a_wide_interval_not_a_confident_one():
    """Six near-best trials, one per batch size: no fit at all, rather than a tight α."""
    study = landscape_study(0.5, per_b=2, noise=0.05, seed=3)
    with pytest.raises(NotEnoughTrialsError):
        fit_scaling_rule(study, min_selected=5, quantile=0.1)


def test_with_too_few_trials_the_recommendation_is_the_best_trial_not_a_centre():
    """Two trials, one at chance: a "centre" of both would sit between them."""
    study = optuna.create_study()
    for lr, error in ((0.1, 0.05), (3.0, 0.9)):
        hp = Hyperparameters(64, lr, 0.9, n_train=1000)
        study.add_trial(
            optuna.trial.create_trial(
                value=error, user_attrs={**hp.user_attrs(), "parameterisation": "noise-scale"}
            )
        )
    rec = recommend(study, 64)
    assert rec.lr == pytest.approx(0.1)
    from optuna_bs.report import summarize

    rows = dict(summarize(study).rows())
    assert "the best trial: a centre needs 5 complete trials" in rows["recommendation at B=64"]
