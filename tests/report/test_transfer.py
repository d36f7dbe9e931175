"""transfer.py on synthetic studies whose best lr against B, ϵ*(B), is known."""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest

from optuna_bs.errors import NotEnoughTrialsError
from optuna_bs.report.analysis import complete_points
from optuna_bs.report.fits import fit_noise_scale, fit_scaling_rule
from optuna_bs.report.optima import batch_optima, error_limit
from optuna_bs.report.scaling import recommend, transfer
from optuna_bs.rules.formulas import Hyperparameters, beta2_for_half_life, lr_for_noise_scale
from optuna_bs.rules.registry import rescale

N_TRAIN = 50_000
SIZES = (16, 32, 64, 128, 256, 512)


def add(study, error, batch_size, lr, *, momentum=0.9, n_train=N_TRAIN, **attrs):
    extra = {k: attrs.pop(k) for k in ("beta2", "eps", "weight_decay") if k in attrs}
    hp = Hyperparameters(batch_size, lr, momentum, n_train, **extra)
    study.add_trial(
        optuna.trial.create_trial(
            value=error, user_attrs={**hp.user_attrs(), "n_updates": 100, **attrs}
        )
    )


def optima_of(study):
    return batch_optima(complete_points(study), error_limit(study))


def power(b):
    return 0.001 * b**0.7


def mccandlish(b):
    return 0.5 / (1 + 300 / b)


def surge(b):
    return 0.01 / (0.5 * (math.sqrt(128 / b) + math.sqrt(b / 128)))


def landscape(curve, *, sizes=SIZES, per_b=12, seed=0, noise=0.003, steep=1.0, **attrs):
    """Trials log-uniform around ϵ*(B); the error is lowest on it (``steep``x steeper above)."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study()
    for b in sizes:
        target = curve(b)
        for lr in target * np.exp(rng.uniform(-1.2, 1.2, per_b)):
            d = math.log(lr / target)
            error = 0.1 + 0.05 * d * d * (steep if d > 0 else 1.0) + rng.normal(0.0, noise)
            add(study, error, b, float(lr), **attrs)
    return study


@pytest.mark.parametrize(
    ("curve", "model", "attrs"),
    [
        (power, "power", {}),
        (mccandlish, "mccandlish", {}),
        (surge, "surge", {"optimizer": "adamw", "parameterisation": "adam-sqrt"}),
    ],
)
def test_a_known_curve_is_recovered_within_10_percent_and_chosen(curve, model, attrs):
    fit = fit_scaling_rule(landscape(curve, **attrs))
    assert fit.model == model
    assert fit.scores[model] == min(fit.scores.values())  # chosen by leaving one B out
    for b in (16, 48, 128, 512, 1024):  # inside, and 2x beyond
        assert fit.lr_at(b) == pytest.approx(curve(b), rel=0.1), b
        low, high = fit.interval_at(b)
        assert low <= fit.lr_at(b) <= high
    assert set(fit.batch_sizes) == set(SIZES)
    if model != "power":
        true_bn = {"mccandlish": 300, "surge": 128}[model]
        assert true_bn / 2 <= fit.noise_batch_size <= true_bn * 2
    assert fit.model in fit.describe() and "leave-one-batch-size-out" in fit.describe()


def test_a_study_crowded_on_one_batch_size_still_fits_from_the_others():
    """60 trials at B = 64, all near-best, and 4 at each other B: a pool of the best 25%
    would hold only B = 64; per-batch-size evidence fits from all of them."""
    study = landscape(power, sizes=(64,), per_b=60, noise=0.0005)
    rng = np.random.default_rng(1)
    for b in (16, 32, 128, 256):
        for f in (0.6, 0.9, 1.1, 1.6):
            # These batch sizes train a little worse, as small and large B often do.
            add(study, 0.11 + 0.05 * math.log(f) ** 2 + rng.normal(0, 0.0005), b, power(b) * f)
    fit = fit_scaling_rule(study)
    assert set(fit.batch_sizes) == {16, 32, 64, 128, 256}
    assert fit.lr_at(512) == pytest.approx(power(512), rel=0.1)


def test_each_batch_size_has_its_vertex_not_the_median_of_its_best_trials():
    """The error rises 4x as steeply above the optimum: the median of the best trials runs
    low, the quadratic's vertex does not."""
    study = landscape(power, sizes=(64,), per_b=40, noise=0.0, steep=4.0, seed=2)
    (optimum,) = optima_of(study)
    assert optimum.method == "vertex"
    assert optimum.lr == pytest.approx(power(64), rel=0.1)
    best5 = sorted(complete_points(study), key=lambda p: p.error)[:10]
    median = math.exp(np.median(np.log([p.lr for p in best5])))
    assert abs(math.log(optimum.lr / power(64))) < abs(math.log(median / power(64)))


def test_a_batch_size_at_chance_or_beyond_the_tolerance_never_counts():
    """The failure of pooled near-best trials: with 7 trials, a batch size whose best is
    31% error, where the study's best is 1.7%, steered the recommendation."""
    study = optuna.create_study()
    for b, lr, error in [
        (16, 0.010, 0.017),
        (16, 0.020, 0.020),
        (32, 0.020, 0.019),
        (64, 0.040, 0.0195),
        (64, 0.080, 0.025),
        (128, 0.500, 0.31),
        (256, 0.900, 0.90),  # at chance
    ]:
        add(study, error, b, lr, n_train=1000)
    optima = {o.batch_size: o for o in optima_of(study)}
    assert not optima[128].counted and not optima[256].counted
    assert optima[16].counted and optima[32].counted and optima[64].counted
    fit = fit_scaling_rule(study)
    assert 128 not in fit.batch_sizes and 256 not in fit.batch_sizes
    assert transfer(study, 64).anchor_batch_size == 64
    # Resampled within each batch size, 7 trials still bound the interval.
    low, high = fit.interval_at(64)
    assert 0 < low <= fit.lr_at(64) <= high < math.inf


def test_with_fewer_than_three_batch_sizes_it_says_what_is_missing_and_uses_the_rule():
    study = landscape(power, sizes=(64,), per_b=10)
    with pytest.raises(NotEnoughTrialsError, match=r"explored 1 batch size\(s\) \[64\]"):
        fit_scaling_rule(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moved = transfer(study, 128)
    assert moved.source == "rule" and moved.model == "noise-scale"
    assert "explored 1 batch size" in moved.reason
    assert "'noise-scale' rule moved from B=64" in moved.describe()
    vertex = optima_of(study)[0].hparams()
    assert moved.hparams.noise_scale == pytest.approx(vertex.noise_scale, rel=1e-9)
    # Batch sizes that trained too badly are named apart.
    for b in (256, 512):
        add(study, 0.9, b, 0.1)
    with pytest.raises(NotEnoughTrialsError, match=r"1 \[64\] beat its median trial"):
        fit_scaling_rule(study)


def test_transfer_says_which_model_its_interval_and_how_far_it_reaches():
    study = landscape(mccandlish)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the explored sizes: nothing to warn
        inside = transfer(study, 100)
    assert inside.source == "fit" and inside.model == "mccandlish"
    assert inside.extrapolation == 1.0 and "inside the explored" in inside.describe()
    fit = fit_scaling_rule(study)
    assert inside.prediction_error == fit.scores["mccandlish"]
    assert f"predicted within x{math.exp(fit.scores['mccandlish']):.2f}" in inside.describe()
    low, high = inside.lr_interval
    assert low <= inside.hparams.lr <= high and low <= mccandlish(100) <= high
    with pytest.warns(UserWarning, match=r"outside the batch sizes .*2x beyond"):
        near = transfer(study, 1024)
    assert near.extrapolation == 2 and near.hparams.lr == pytest.approx(mccandlish(1024), 0.1)
    with pytest.raises(ValueError, match=r"over 4x beyond .* \(16\.\.512\).*extrapolate=True"):
        transfer(study, 4096)
    with pytest.warns(UserWarning, match="outside"):
        far = transfer(study, 4096, extrapolate=True)
    # Beyond the fit's reach the study's rule moves the curve's value at its edge.
    assert far.model == "mccandlish, then the 'noise-scale' rule" and far.lr_interval is None
    edge = Hyperparameters(2048, mccandlish(2048), 0.9, N_TRAIN)
    expected = rescale(edge, 4096, "noise-scale").lr
    assert far.hparams.lr == pytest.approx(expected * transfer_ratio(study, 2048), rel=1e-6)


def transfer_ratio(study, b):
    """The fitted curve's lr at ``b`` over the true one."""
    return fit_scaling_rule(study).lr_at(b) / mccandlish(b)


def test_a_named_rule_replaces_the_fitted_curve():
    study = landscape(power)
    by_rule = transfer(study, 128, "sqrt")
    assert by_rule.source == "rule" and by_rule.reason == "the 'sqrt' rule was asked for"
    anchor = optima_of(study)[3]  # B = 128 itself
    assert by_rule.hparams.lr == pytest.approx(anchor.lr, rel=1e-9)
    assert recommend(study, 128) == transfer(study, 128).hparams


def test_best_noise_scale_comes_from_the_per_batch_size_optima():
    """ϵ* on a constant g: g* is that g, at every spread of batch sizes."""
    g = 300.0
    study = landscape(lambda b: lr_for_noise_scale(g, b, N_TRAIN, 0.9))
    fit = fit_noise_scale(study)
    assert fit.best_noise_scale == pytest.approx(g, rel=0.1)
    assert fit.low <= fit.best_noise_scale <= fit.high
    assert fit_noise_scale(study, seed=3) == fit_noise_scale(study, seed=3)
    assert fit_scaling_rule(study).model == "noise-scale rule"
    with pytest.raises(NotEnoughTrialsError, match="g\\* needs 3"):
        fit_noise_scale(landscape(power, sizes=(64,), per_b=2))


def test_a_bad_batch_size_is_refused_before_anything_else():
    with pytest.raises(ValueError, match="batch_size"):
        recommend(optuna.create_study(), -1)
    with pytest.raises(NotEnoughTrialsError, match="no usable COMPLETE trial"):
        recommend(optuna.create_study(), 64)
    with pytest.raises(ValueError, match="batch_size"):
        recommend(landscape(power), N_TRAIN)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tolerance": -1}, "tolerance"),
        ({"confidence": 1.0}, "confidence"),
        ({"n_bootstrap": 0}, "n_bootstrap"),
    ],
)
def test_fit_checks_its_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_scaling_rule(landscape(power, per_b=3), **kwargs)


# --- Adam -----------------------------------------------------------------------------------


def test_beta2_keeps_its_half_life_in_samples_and_comes_back():
    beta2 = beta2_for_half_life(0.999, 64, 512)
    assert beta2 == pytest.approx(0.999**8)
    steps = math.log(0.5) / math.log(0.999)  # half-life in steps of 64 samples
    assert math.log(0.5) / math.log(beta2) * 512 == pytest.approx(steps * 64)
    assert beta2_for_half_life(beta2, 512, 64) == pytest.approx(0.999)
    assert beta2_for_half_life(0.999, 64, 64 * 200) == 0.95  # clipped
    assert beta2_for_half_life(0.99999, 512, 64) == 0.99999  # not moved further out
    assert beta2_for_half_life(0.9, 64, 64) == 0.9  # a β2 outside the clip is kept


def test_adam_keeps_beta1_moves_beta2_by_half_life_eps_by_sqrt_and_keeps_tau():
    attrs = {"optimizer": "adamw", "parameterisation": "adam-sqrt"}
    study = landscape(surge, beta2=0.999, eps=1e-8, weight_decay=0.01, **attrs)
    moved = transfer(study, 64)
    hp, anchor = moved.hparams, optima_of(study)[2]  # B = 64 itself
    assert moved.source == "fit" and hp.lr == pytest.approx(surge(64), rel=0.1)
    assert hp.momentum == anchor.best.momentum == 0.9
    with pytest.warns(UserWarning, match="outside"):
        far = transfer(study, 1024).hparams
    assert far.momentum == 0.9  # Malladi's rule would give 1 - 8 (1 - 0.9) < 0
    assert far.beta2 == pytest.approx(0.999 ** (1024 / 512))
    assert far.eps == pytest.approx(1e-8 / math.sqrt(2))
    near = optima_of(study)[-1].hparams()
    assert far.tau_epochs == pytest.approx(near.tau_epochs)


def test_keeping_the_lr_keeps_the_weight_decay_too():
    hp = Hyperparameters(64, 1e-3, 0.9, N_TRAIN, beta2=0.999, eps=1e-8, weight_decay=0.1)
    kept = rescale(hp, 512, "independent")
    assert (kept.lr, kept.weight_decay, kept.beta2, kept.eps) == (1e-3, 0.1, 0.999, 1e-8)
    study = landscape(power, weight_decay=0.1)
    kept = transfer(study, 128, "independent").hparams
    assert kept.weight_decay == pytest.approx(0.1) and kept.batch_size == 128
