"""Tests for optuna_bs.rules: the scaling formulas, their inverses and their input checks."""

from __future__ import annotations

import dataclasses
import doctest
import math
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optuna_bs import rules
from optuna_bs.rules import batch, formulas, registry
from optuna_bs.rules.formulas import Hyperparameters, lr_for_noise_scale, noise_scale
from optuna_bs.rules.registry import RULES, rescale

REL = 1e-12


def close(a: float, b: float, rel: float = REL, abs_tol: float = 0.0) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


# --- hypothesis strategies over wide inputs ------------------------------------------------

n_trains = st.one_of(st.integers(2, 1000), st.integers(2, 10**7))
lrs = st.floats(-6, 1).map(lambda e: 10.0**e)  # log-uniform-ish in [1e-6, 10]
noise_scales = st.floats(-3, 6).map(lambda e: 10.0**e)
momenta = st.one_of(st.just(0.0), st.floats(0.0, 0.999))


@st.composite
def sgd_points(draw: st.DrawFn) -> tuple[float, int, int, float]:
    n = draw(n_trains)
    return draw(lrs), draw(st.integers(1, n - 1)), n, draw(momenta)


@st.composite
def two_batch_sizes(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(n_trains)
    return n, draw(st.integers(1, n - 1)), draw(st.integers(1, n - 1))


def quiet_rescale(hp: Hyperparameters, batch_size: int, rule: str, **kw) -> Hyperparameters:
    """rescale() with its N/10 warning silenced, for property tests over every batch size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return rescale(hp, batch_size, rule, **kw)


# --- formulas against hand-computed numbers ------------------------------------------------


def test_noise_scale_hand_computed() -> None:
    # 0.1 * (3200/128 - 1) / (1 - 0.9) = 0.1 * 24 / 0.1 = 24
    assert close(noise_scale(0.1, 128, 3200, 0.9), 24.0)
    # 0.01 * (1000/100 - 1) / 1 = 0.09; momentum defaults to 0
    assert close(noise_scale(0.01, 100, 1000), 0.09)


def test_lr_for_noise_scale_hand_computed() -> None:
    assert close(lr_for_noise_scale(24.0, 128, 3200, 0.9), 0.1)
    assert close(lr_for_noise_scale(0.09, 100, 1000), 0.01)


def test_hyperparameters_noise_scale_property() -> None:
    hp = Hyperparameters(batch_size=128, lr=0.1, momentum=0.9, n_train=3200)
    assert close(hp.noise_scale, 24.0)


def test_rescale_noise_scale_hand_computed() -> None:
    hp = Hyperparameters(batch_size=128, lr=0.1, momentum=0.9, n_train=50_000)
    new = rescale(hp, 256)  # default rule is noise-scale
    # g = 0.1 * 389.625 / 0.1; lr' = g * 0.1 / (50000/256 - 1) = 0.1 * 389.625 / 194.3125
    assert close(new.lr, 0.1 * 389.625 / 194.3125)
    assert new.batch_size == 256 and new.momentum == 0.9 and new.n_train == 50_000


@pytest.mark.parametrize(
    ("rule", "alpha", "factor"),
    [("linear", None, 2.0), ("sqrt", None, math.sqrt(2.0)), ("power", 0.75, 2.0**0.75)],
)
def test_rescale_lr_rules_double_batch(rule: str, alpha: float | None, factor: float) -> None:
    hp = Hyperparameters(128, 0.1, 0.9, 50_000, beta2=0.99, eps=1e-6)
    new = rescale(hp, 256, rule, alpha=alpha)
    assert close(new.lr, 0.1 * factor)
    # Only B and lr move; momentum, beta2 and eps are kept as they are.
    assert (new.momentum, new.beta2, new.eps, new.n_train) == (0.9, 0.99, 1e-6, 50_000)


def test_rescale_linear_halves_lr_when_batch_halves() -> None:
    hp = Hyperparameters(128, 0.1, 0.0, 50_000)
    assert close(rescale(hp, 64, "linear").lr, 0.05)


def test_rescale_adam_sqrt_transforms_betas_and_eps() -> None:
    hp = Hyperparameters(64, 1e-3, 0.9, 100_000, beta2=0.999, eps=1e-8)
    new = rescale(hp, 256, "adam-sqrt")  # kappa = 4
    assert close(new.lr, 2e-3)
    assert close(new.momentum, 1.0 - 4 * 0.1)  # 1 - beta1' = kappa (1 - beta1)
    assert close(new.beta2, 1.0 - 4 * 0.001)
    assert close(new.eps, 1e-8 / 2.0)
    smaller = rescale(hp, 16, "adam-sqrt")  # kappa = 1/4
    assert close(smaller.lr, 5e-4)
    assert close(smaller.momentum, 1.0 - 0.1 / 4)
    assert close(smaller.beta2, 1.0 - 0.001 / 4)
    assert close(smaller.eps, 2e-8)


def test_rescale_adam_sqrt_uses_pytorch_defaults() -> None:
    hp = Hyperparameters(64, 1e-3, 0.9, 100_000)
    new = rescale(hp, 256, "adam-sqrt")
    assert close(new.beta2, 1.0 - 4 * (1.0 - 0.999))
    assert close(new.eps, 1e-8 / 2.0)


def test_rules_constant() -> None:
    assert tuple(RULES) == ("noise-scale", "linear", "sqrt", "power", "adam-sqrt", "independent")


# --- round-trip properties over wide random inputs ------------------------------------------


@given(sgd_points())
def test_lr_noise_scale_round_trip(point: tuple[float, int, int, float]) -> None:
    lr, b, n, m = point
    assert close(lr_for_noise_scale(noise_scale(lr, b, n, m), b, n, m), lr)


@given(noise_scales, sgd_points())
def test_noise_scale_lr_round_trip(g: float, point: tuple[float, int, int, float]) -> None:
    _, b, n, m = point
    assert close(noise_scale(lr_for_noise_scale(g, b, n, m), b, n, m), g)


@settings(max_examples=200)
@given(
    two_batch_sizes(),
    lrs,
    momenta,
    st.sampled_from(["noise-scale", "linear", "sqrt", "power"]),
    st.floats(-2.0, 2.0),
)
def test_rescale_there_and_back(
    sizes: tuple[int, int, int], lr: float, m: float, rule: str, alpha: float
) -> None:
    n, b, b_new = sizes
    hp = Hyperparameters(b, lr, m, n, beta2=0.95, eps=1e-7)
    kw = {"alpha": alpha} if rule == "power" else {}
    moved = quiet_rescale(hp, b_new, rule, **kw)
    back = quiet_rescale(moved, b, rule, **kw)
    assert back.batch_size == b and back.momentum == m
    assert (back.beta2, back.eps) == (0.95, 1e-7)
    assert close(back.lr, lr)
    if rule == "noise-scale":
        assert close(moved.noise_scale, hp.noise_scale)
        assert close(back.noise_scale, hp.noise_scale)


@settings(max_examples=200)
@given(two_batch_sizes(), lrs, st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), lrs)
def test_rescale_adam_sqrt_there_and_back(
    sizes: tuple[int, int, int], lr: float, u1: float, u2: float, eps: float
) -> None:
    n, b, b_new = sizes
    # Choose 1 - beta <= B/B' (with a margin), so that no beta is clamped at 0 on the way.
    room = min(1.0, b / b_new) * (1.0 - 1e-9)
    beta1, beta2 = 1.0 - u1 * room, 1.0 - u2 * room
    hp = Hyperparameters(b, lr, beta1, n, beta2=beta2, eps=eps)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a clamp would warn: there must be none
        warnings.filterwarnings("ignore", message=".*n_train / 10")
        warnings.filterwarnings("ignore", message=".*small-\\(1 - β\\) regime")
        back = rescale(rescale(hp, b_new, "adam-sqrt"), b, "adam-sqrt")
    assert close(back.lr, lr) and close(back.eps, eps)
    # beta' = 1 - kappa (1 - beta) is stored next to 1.0, so its last bit (1.1e-16) is
    # amplified by B/B' on the way back: an absolute tolerance that follows that ratio.
    beta_tol = 1e-15 * max(1.0, b / b_new)
    assert close(back.momentum, beta1, abs_tol=beta_tol)
    assert close(back.beta2, beta2, abs_tol=beta_tol)


# --- warnings ------------------------------------------------------------------------------


def test_rescale_warns_beyond_n_over_10() -> None:
    hp = Hyperparameters(128, 0.1, 0.9, 3200)
    for rule in ("noise-scale", "linear", "sqrt", "adam-sqrt"):
        with pytest.warns(UserWarning, match=r"batch_size=512 .*n_train / 10") as record:
            rescale(hp, 512, rule)
        assert record[0].filename == __file__  # stacklevel points at the caller


def test_rescale_does_not_warn_up_to_n_over_10() -> None:
    hp = Hyperparameters(128, 0.1, 0.9, 3200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rescale(hp, 320, "linear").batch_size == 320


def test_adam_sqrt_warns_and_clamps_beta1_below_zero() -> None:
    hp = Hyperparameters(64, 1e-3, 0.9, 1_000_000, beta2=0.999)
    # kappa = 20: 1 - beta1' = 2, so beta1' = -1; the rule stops at B / (1 - beta1) = 640.
    with pytest.warns(UserWarning, match=r"`momentum` \(β1\) would become -1 .*640") as record:
        new = rescale(hp, 1280, "adam-sqrt")
    assert record[0].filename == __file__
    assert new.momentum == 0.0
    assert close(new.beta2, 1.0 - 20 * 0.001)


def test_adam_sqrt_warns_and_clamps_beta2_below_zero() -> None:
    hp = Hyperparameters(8, 1e-3, 0.9999, 1_000_000, beta2=0.999)
    # kappa = 2000: 1 - beta2' = 2, so beta2' = -1; beta1' = 1 - 0.2 stays valid.
    with pytest.warns(UserWarning, match=r"`beta2` \(β2\) would become -1 .*8000"):
        new = rescale(hp, 16_000, "adam-sqrt")
    assert new.beta2 == 0.0
    assert close(new.momentum, 0.8, rel=1e-9)


def test_adam_sqrt_beta_rounding_to_one_is_an_error() -> None:
    hp = Hyperparameters(1000, 1e-3, 0.9, 1_000_000, beta2=1.0 - 2.0**-52)
    with pytest.raises(ValueError, match="beta2"):
        rescale(hp, 1, "adam-sqrt")


# --- bad input -----------------------------------------------------------------------------

HP = Hyperparameters(128, 0.1, 0.9, 3200)

BAD_INPUTS = [
    (lambda: noise_scale(0.1, 3200, 3200), ValueError, r"batch_size.*n_train"),
    (lambda: noise_scale(0.1, 5000, 3200), ValueError, r"batch_size.*n_train"),
    (lambda: noise_scale(0.1, 0, 3200), ValueError, "batch_size"),
    (lambda: noise_scale(0.1, 64.0, 3200), TypeError, "batch_size"),
    (lambda: noise_scale(0.1, True, 3200), TypeError, "batch_size"),
    (lambda: noise_scale(0.1, 64, 3200.0), TypeError, "n_train"),
    (lambda: noise_scale(0.1, 1, 1), ValueError, "n_train"),
    (lambda: noise_scale(0.1, 64, 3200, 1.0), ValueError, "momentum"),
    (lambda: noise_scale(0.1, 64, 3200, -0.1), ValueError, "momentum"),
    (lambda: noise_scale(0.1, 64, 3200, math.nan), ValueError, "momentum"),
    (lambda: noise_scale(0.0, 64, 3200), ValueError, "lr"),
    (lambda: noise_scale(-0.1, 64, 3200), ValueError, "lr"),
    (lambda: noise_scale(math.nan, 64, 3200), ValueError, "lr"),
    (lambda: noise_scale(math.inf, 64, 3200), ValueError, "lr"),
    (lambda: noise_scale("0.1", 64, 3200), TypeError, "lr"),
    (lambda: lr_for_noise_scale(0.0, 64, 3200), ValueError, "noise_scale"),
    (lambda: lr_for_noise_scale(math.inf, 64, 3200), ValueError, "noise_scale"),
    (lambda: lr_for_noise_scale(10.0, 64, 64), ValueError, r"batch_size.*n_train"),
    (lambda: rescale(HP, 256, "cubic"), ValueError, r"rule.*noise-scale.*adam-sqrt"),
    (lambda: rescale(HP, 256, None), TypeError, "rule"),
    (lambda: rescale(HP, 256, "power"), TypeError, "alpha"),
    (lambda: rescale(HP, 256, "power", alpha=math.nan), ValueError, "alpha"),
    (lambda: rescale(HP, 256, "linear", alpha=0.5), ValueError, "alpha"),
    (lambda: rescale(HP, 3200), ValueError, r"batch_size.*n_train"),
    (lambda: rescale(HP, 0), ValueError, "batch_size"),
    (lambda: rescale(HP, 256.0), TypeError, "batch_size"),
    (lambda: rescale({"batch_size": 128}, 256), TypeError, "hparams"),
    (lambda: Hyperparameters(128, 0.1, 1.0, 3200), ValueError, "momentum"),
    (lambda: Hyperparameters(4000, 0.1, 0.9, 3200), ValueError, r"batch_size.*n_train"),
    (lambda: Hyperparameters(128, 0.1, 0.9, 3200, beta2=1.0), ValueError, "beta2"),
    (lambda: Hyperparameters(128, 0.1, 0.9, 3200, beta2=-0.5), ValueError, "beta2"),
    (lambda: Hyperparameters(128, 0.1, 0.9, 3200, eps=0.0), ValueError, "eps"),
    (lambda: Hyperparameters(128, 0.1, 0.9, 3200, eps="1e-8"), TypeError, "eps"),
    (lambda: Hyperparameters(128, -1.0, 0.9, 3200), ValueError, "lr"),
]


@pytest.mark.parametrize(("call", "exc", "match"), BAD_INPUTS)
def test_bad_input_raises(call, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_error_message_follows_template() -> None:
    expected = (
        "`batch_size` must be an integer in [1, n_train - 1] = [1, 3199], but got batch_size=5000."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        noise_scale(0.1, 5000, 3200)


def test_numpy_scalars_are_accepted_and_stored_as_builtins() -> None:
    hp = Hyperparameters(np.int64(128), np.float32(0.5), np.float64(0.9), np.int32(3200))
    assert type(hp.batch_size) is int and type(hp.n_train) is int
    assert type(hp.lr) is float and type(hp.momentum) is float
    assert close(noise_scale(np.float64(0.1), np.int64(128), np.int64(3200), 0.9), 24.0)


# --- Hyperparameters ----------------------------------------------------------------------


def test_hyperparameters_is_frozen() -> None:
    hp = Hyperparameters(128, 0.1, 0.9, 3200)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.lr = 0.2  # type: ignore[misc]


def test_user_attrs() -> None:
    hp = Hyperparameters(batch_size=128, lr=0.1, momentum=0.9, n_train=3200)
    attrs = hp.user_attrs()
    assert set(attrs) == {"batch_size", "lr", "momentum", "noise_scale", "n_train"}
    assert attrs["batch_size"] == 128 and attrs["n_train"] == 3200
    assert attrs["lr"] == 0.1 and attrs["momentum"] == 0.9
    assert close(attrs["noise_scale"], 24.0)


def test_user_attrs_with_adam_fields() -> None:
    hp = Hyperparameters(128, 1e-3, 0.9, 3200, beta2=0.98, eps=1e-6)
    attrs = hp.user_attrs()
    assert set(attrs) == {"batch_size", "lr", "momentum", "noise_scale", "n_train", "beta2", "eps"}
    assert (attrs["beta2"], attrs["eps"]) == (0.98, 1e-6)


# --- module hygiene ------------------------------------------------------------------------


def test_rules_does_not_import_torch_or_optuna() -> None:
    # Through the package, as a user imports it: its __init__ resolves names lazily.
    code = (
        "import sys\n"
        "import optuna_bs.rules as rules\n"
        "rules.plan_batch(64), rules.get_rule('sqrt'), rules.beta2_for_half_life(0.999, 8, 16)\n"
        "assert round(rules.noise_scale(0.1, 128, 3200, 0.9), 6) == 24.0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'optuna')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_docstring_examples_run() -> None:
    attempted = 0
    for module in (formulas, registry, batch):
        result = doctest.testmod(module)
        assert result.failed == 0
        attempted += result.attempted
    assert attempted >= 5


# --- AdamW's weight-decay timescale (Wang & Aitchison 2024) -----------------------------------


@settings(max_examples=200, deadline=None)
@given(
    b=st.integers(1, 1_000),
    factor=st.sampled_from([2, 4, 8, 16]),
    lr=st.floats(1e-5, 1.0),
    wd=st.floats(1e-5, 1.0),
    rule=st.sampled_from(["adam-sqrt", "sqrt", "linear", "noise-scale", "independent"]),
)
def test_rescale_keeps_tau_and_round_trips(b, factor, lr, wd, rule):
    hp = Hyperparameters(b, lr, 0.9, 1_000_000, beta2=0.999, eps=1e-8, weight_decay=wd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moved = rescale(hp, b * factor, rule)
        back = rescale(moved, b, rule)
    if rule == "independent":  # "keep the lr" keeps λ as it is, so τ grows with B
        assert moved.weight_decay == wd
        assert moved.tau_epochs == pytest.approx(hp.tau_epochs * factor, rel=1e-12)
    else:
        assert moved.tau_epochs == pytest.approx(hp.tau_epochs, rel=1e-12)
    assert back.weight_decay == pytest.approx(wd, rel=1e-12)
    assert back.lr == pytest.approx(lr, rel=1e-12)


def test_tau_moves_weight_decay_as_the_rule_says():
    hp = Hyperparameters(64, 1e-3, 0.9, 50_000, beta2=0.999, eps=1e-8, weight_decay=0.1)
    assert hp.tau_epochs == pytest.approx(64 / (1e-3 * 0.1 * 50_000), rel=1e-12)
    assert rules.weight_decay_timescale(1e-3, 0.1, 64, 50_000) == hp.tau_epochs
    assert rules.weight_decay_for_timescale(hp.tau_epochs, 1e-3, 64, 50_000) == pytest.approx(0.1)
    # Under the square-root rules λ grows as √κ; under the linear rule it stays.
    assert rescale(hp, 256, "adam-sqrt").weight_decay == pytest.approx(0.2, rel=1e-12)
    assert rescale(hp, 256, "linear").weight_decay == pytest.approx(0.1, rel=1e-12)
    assert rescale(hp, 256, "adam-sqrt", keep_tau=False).weight_decay == 0.1
    assert Hyperparameters(64, 1e-3, 0.9, 50_000).tau_epochs is None
    attrs = hp.user_attrs()
    assert attrs["weight_decay"] == 0.1 and attrs["tau_epochs"] == hp.tau_epochs
    with pytest.raises(ValueError, match="weight_decay"):
        Hyperparameters(64, 1e-3, 0.9, 50_000, weight_decay=-1.0)


def test_adam_sqrt_warns_when_beta1_leaves_the_small_step_regime():
    hp = Hyperparameters(32, 1e-3, 0.9, 50_000)
    with pytest.warns(UserWarning, match=r"β1 from 0.9 to 0.2 .*rule='sqrt' keeps β1") as record:
        rescale(hp, 256, "adam-sqrt")
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rescale(hp, 128, "adam-sqrt")  # 1 - β1 = 0.4: no warning


def test_adam_sqrt_moves_lr_betas_eps_and_keeps_tau():
    hp = Hyperparameters(32, 1e-3, 0.9, 50_000, beta2=0.999, eps=1e-8, weight_decay=0.05)
    new = rescale(hp, 128, "adam-sqrt")  # κ = 4
    assert new.lr == pytest.approx(2e-3, rel=1e-12)
    assert 1 - new.momentum == pytest.approx(4 * 0.1, rel=1e-12)
    assert 1 - new.beta2 == pytest.approx(4 * 0.001, rel=1e-9)
    assert new.eps == pytest.approx(0.5e-8, rel=1e-12)
    assert new.tau_epochs == pytest.approx(hp.tau_epochs, rel=1e-12)


# --- the registry ----------------------------------------------------------------------------


def test_a_rule_added_through_the_registry_works_everywhere():
    """One class and one registry line: the space, rescale and recommend all know it."""
    import optuna

    from optuna_bs.report.fits import fit_scaling_rule
    from optuna_bs.report.scaling import recommend
    from optuna_bs.search.space import BatchScalingSpace

    @rules.register_rule
    class QuarterPower(rules.Rule):  # ϵ ∝ B^¼
        name = "quarter"

        def __init__(self, alpha=None):
            super().__init__(alpha)
            self.alpha = 0.25

    try:
        assert "quarter" in RULES
        space = BatchScalingSpace("quarter", n_train=50_000, batch_size=(16, 256), lr=(0.01, 0.1))
        # Seeded: an unseeded draw put 6 trials on 2 batch sizes once in CI (the fit needs 3).
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(6):
            trial = study.ask()
            hp = space.suggest(trial)
            ref = trial.params["reference_lr"]
            assert hp.lr == pytest.approx(ref * (hp.batch_size / 128) ** 0.25, rel=1e-12)
            study.tell(trial, 0.1)
        assert trial.user_attrs["parameterisation"] == "quarter"
        hp = Hyperparameters(16, 0.01, 0.9, 50_000)
        assert rescale(hp, 256, "quarter").lr == pytest.approx(0.02, rel=1e-12)
        top = max(t.user_attrs["batch_size"] for t in study.trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            at_top = recommend(study, top, "quarter")
            far = recommend(study, 16 * top, "quarter", extrapolate=True)
            assert far.lr == pytest.approx(2 * at_top.lr, rel=1e-9)
        assert "quarter rule" in fit_scaling_rule(study).scores
    finally:
        del RULES["quarter"]


def test_a_known_critical_batch_size_bends_the_lr():
    """McCandlish et al. 2018 for the SGD rules, Li et al. 2024's surge for the sqrt rules."""
    hp = Hyperparameters(32, 0.05, 0.9, 1_000_000, beta2=0.999, eps=1e-8)
    # Far below B_noise the rules are unchanged; at B_noise the SGD lr has half its reach.
    far = rescale(hp, 64, "linear", noise_batch_size=1e9).lr
    assert far == pytest.approx(rescale(hp, 64, "linear").lr, rel=1e-6)
    bent = rescale(hp, 256, "linear", noise_batch_size=256).lr
    assert bent == pytest.approx(0.05 * (1 + 256 / 32) / (1 + 256 / 256), rel=1e-12)
    # Far above it the lr stops growing.
    flat = rescale(
        Hyperparameters(4096, 0.05, 0.9, 1_000_000), 32768, "noise-scale", noise_batch_size=16
    )
    assert flat.lr == pytest.approx(0.05, rel=0.01)
    # Adam: the best lr peaks at B_noise and falls past it.
    up = rescale(hp, 128, "adam-sqrt", noise_batch_size=128).lr
    down = rescale(hp, 2048, "adam-sqrt", noise_batch_size=128).lr
    assert down < up and up == pytest.approx(0.05 * (0.5 * (2 + 0.5)), rel=1e-12)
    # Rules without a curve ignore it.
    assert rescale(hp, 128, "independent", noise_batch_size=64).lr == 0.05
    with pytest.raises(ValueError, match="noise_batch_size"):
        rescale(hp, 128, "linear", noise_batch_size=0)
