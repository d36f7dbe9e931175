"""Tests for optuna_bs.search.space: what a trial samples and records, driven through real
studies."""

from __future__ import annotations

import doctest
import math
import warnings

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FixedTrial, TrialState

import optuna_bs.search.space
from optuna_bs import rules
from optuna_bs.rules.formulas import Hyperparameters, lr_for_noise_scale
from optuna_bs.rules.registry import RULES as PARAMETERISATIONS
from optuna_bs.search.space import BatchScalingSpace

N = 3200
USER_ATTRS = {"lr", "momentum", "noise_scale", "batch_size", "n_train"}
REL = 1e-12

optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective_value(hp: Hyperparameters) -> float:
    """A smooth stand-in for validation error, best near g = 50 (docs/design.md §1)."""
    return (math.log(hp.noise_scale) - math.log(50.0)) ** 2 + 1e-3 * math.log2(hp.batch_size)


def run_study(
    space: BatchScalingSpace, n_trials: int, sampler: optuna.samplers.BaseSampler | None = None
) -> tuple[optuna.Study, list[Hyperparameters]]:
    """Ask, suggest and tell ``n_trials`` times; return the study and every trial's hparams."""
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    hps = []
    for _ in range(n_trials):
        trial = study.ask()
        hp = space.suggest(trial)
        hps.append(hp)
        study.tell(trial, objective_value(hp))
    return study, hps


def quiet_rescale(hp: Hyperparameters, batch_size: int, rule: str, **kw) -> Hyperparameters:
    """rules.rescale() with its N/10 warning silenced: the space's range is the user's choice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return rules.rescale(hp, batch_size, rule, **kw)


def powers_of_two_in(low: int, high: int) -> list[int]:
    return [2**k for k in range(40) if low <= 2**k <= high]


# --- noise-scale (the default) -------------------------------------------------------------


def test_noise_scale_default_batch_power_of_two_and_lr_exact() -> None:
    space = BatchScalingSpace(n_train=N, batch_size=(16, 512), noise_scale=(1.0, 1000.0))
    assert space.parameterisation == "noise-scale"
    study, hps = run_study(space, 40)
    seen = set()
    for frozen, hp in zip(study.trials, hps, strict=True):
        assert frozen.state == TrialState.COMPLETE
        b = frozen.user_attrs["batch_size"]
        assert isinstance(b, int) and b & (b - 1) == 0 and 16 <= b <= 512
        assert b == 2 ** frozen.params["log2_batch_size"] == hp.batch_size
        seen.add(b)
        g = frozen.params["noise_scale"]
        assert 1.0 <= g <= 1000.0
        # The contract: the recorded lr is exactly what lr_for_noise_scale gives.
        assert frozen.user_attrs["lr"] == lr_for_noise_scale(g, b, N, 0.9)
        assert hp.lr == frozen.user_attrs["lr"]
        # ... and it is the inverse of docs/design.md §1's g = ϵ (N/B − 1) / (1 − m).
        assert math.isclose(g, hp.lr * (N / b - 1) / (1 - 0.9), rel_tol=1e-9)
        assert USER_ATTRS <= set(frozen.user_attrs)
        assert math.isclose(frozen.user_attrs["noise_scale"], g, rel_tol=1e-9)
        assert frozen.user_attrs["n_train"] == N
        assert frozen.user_attrs["momentum"] == 0.9 == hp.momentum
        assert "momentum" not in frozen.params
        assert set(frozen.params) == {"log2_batch_size", "noise_scale"}
    assert len(seen) > 1, "40 random trials should visit more than one batch size"


def test_noise_scale_with_momentum_range() -> None:
    space = BatchScalingSpace(n_train=N, batch_size=(32, 256), momentum=(0.5, 0.99))
    study, hps = run_study(space, 30)
    momenta = set()
    for frozen, hp in zip(study.trials, hps, strict=True):
        m = frozen.params["momentum"]
        assert 0.5 <= m <= 0.99
        momenta.add(m)
        assert frozen.user_attrs["momentum"] == m == hp.momentum
        b, g = frozen.user_attrs["batch_size"], frozen.params["noise_scale"]
        assert frozen.user_attrs["lr"] == lr_for_noise_scale(g, b, N, m)
        assert USER_ATTRS <= set(frozen.user_attrs)
    assert len(momenta) > 1


def test_custom_fixed_momentum_is_used_and_not_searched() -> None:
    space = BatchScalingSpace(n_train=N, batch_size=(16, 64), momentum=0.0)
    study, _ = run_study(space, 5)
    for frozen in study.trials:
        assert "momentum" not in frozen.params
        assert frozen.user_attrs["momentum"] == 0.0
        b, g = frozen.user_attrs["batch_size"], frozen.params["noise_scale"]
        assert frozen.user_attrs["lr"] == lr_for_noise_scale(g, b, N, 0.0)


# --- static distributions ------------------------------------------------------------------

SPACES = {
    "noise-scale": dict(parameterisation="noise-scale"),
    "noise-scale-m": dict(parameterisation="noise-scale", momentum=(0.5, 0.99)),
    "linear": dict(parameterisation="linear"),
    "sqrt-m": dict(parameterisation="sqrt", momentum=(0.0, 0.95)),
    "power": dict(parameterisation="power", alpha=0.75),
    "adam-sqrt": dict(parameterisation="adam-sqrt", batch_size=(16, 256), momentum=(0.8, 0.95)),
    "independent": dict(parameterisation="independent"),
    "independent-m": dict(parameterisation="independent", momentum=(0.0, 0.99)),
}


def expected_distributions(space: BatchScalingSpace) -> dict[str, object]:
    """The distributions the space promises, from its constructor arguments alone."""
    log2 = [int(math.log2(b)) for b in powers_of_two_in(*space.batch_size)]
    dists: dict[str, object] = {"log2_batch_size": IntDistribution(log2[0], log2[-1])}
    if not isinstance(space.momentum, float):
        dists["momentum"] = FloatDistribution(*space.momentum)
    if space.parameterisation == "noise-scale":
        dists["noise_scale"] = FloatDistribution(*space.noise_scale, log=True)
    elif space.parameterisation == "independent":
        dists["lr"] = FloatDistribution(*space.lr, log=True)
    else:
        dists["reference_lr"] = FloatDistribution(*space.lr, log=True)
    return dists


@pytest.mark.parametrize("kwargs", list(SPACES.values()), ids=list(SPACES))
def test_distributions_are_static_under_tpe(kwargs: dict) -> None:
    space = BatchScalingSpace(n_train=N, **kwargs)
    study, _ = run_study(space, 30, optuna.samplers.TPESampler(seed=1, n_startup_trials=5))
    expected = expected_distributions(space)
    for frozen in study.trials:
        assert frozen.distributions == expected, f"trial {frozen.number}"
    # Every parameter is in the intersection space, so multivariate TPE models them jointly.
    assert optuna.search_space.intersection_search_space(study.trials) == expected


def test_tpe_multivariate_default_has_no_dynamic_space_warning() -> None:
    space = BatchScalingSpace(n_train=N, momentum=(0.5, 0.99))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # A sampler may flag its own experimental features; that says nothing about the space.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
        study = optuna.create_study(sampler=sampler)
        for _ in range(20):
            trial = study.ask()
            study.tell(trial, objective_value(space.suggest(trial)))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 20
    # After the start-up trials, TPE samples all parameters jointly (relative sampling).
    relative = sampler.infer_relative_search_space(study, study.trials[-1])
    assert set(relative) == {"log2_batch_size", "noise_scale", "momentum"}


# --- rule-based parameterisations ----------------------------------------------------------


@pytest.mark.parametrize(
    ("parameterisation", "kwargs", "alpha"),
    [
        ("linear", {}, 1.0),
        ("sqrt", {}, 0.5),
        ("power", {"alpha": 0.75}, 0.75),
        ("power", {"alpha": -0.5}, -0.5),
    ],
)
def test_reference_rules_lr(parameterisation: str, kwargs: dict, alpha: float) -> None:
    b_ref = 64
    space = BatchScalingSpace(
        parameterisation,
        n_train=N,
        batch_size=(16, 512),
        lr=(1e-3, 0.5),
        reference_batch_size=b_ref,
        **kwargs,
    )
    study, hps = run_study(space, 25)
    for frozen, hp in zip(study.trials, hps, strict=True):
        assert set(frozen.params) == {"log2_batch_size", "reference_lr"}
        ref_lr = frozen.params["reference_lr"]
        b = frozen.user_attrs["batch_size"]
        assert 1e-3 <= ref_lr <= 0.5
        assert math.isclose(frozen.user_attrs["lr"], ref_lr * (b / b_ref) ** alpha, rel_tol=REL)
        assert hp.lr == frozen.user_attrs["lr"]
        # The same move through the public rule.
        rule_kw = {"alpha": alpha} if parameterisation == "power" else {}
        moved = quiet_rescale(
            Hyperparameters(b_ref, ref_lr, 0.9, N), b, parameterisation, **rule_kw
        )
        assert math.isclose(hp.lr, moved.lr, rel_tol=REL)
        assert math.isclose(
            frozen.user_attrs["noise_scale"], rules.noise_scale(hp.lr, b, N, 0.9), rel_tol=REL
        )
        assert frozen.user_attrs["momentum"] == 0.9
        assert USER_ATTRS <= set(frozen.user_attrs)


def test_reference_batch_size_gets_reference_lr() -> None:
    space = BatchScalingSpace("sqrt", n_train=N, batch_size=128, reference_batch_size=128)
    hp = space.suggest(FixedTrial({"reference_lr": 0.03}))
    assert hp.lr == 0.03


def test_adam_sqrt_follows_malladi() -> None:
    b_ref = 64
    space = BatchScalingSpace(
        "adam-sqrt",
        n_train=N,
        batch_size=(16, 256),
        momentum=(0.8, 0.95),
        lr=(1e-4, 1e-2),
        reference_batch_size=b_ref,
    )
    study, hps = run_study(space, 25)
    kappas = set()
    for frozen, hp in zip(study.trials, hps, strict=True):
        ref_lr, beta1 = frozen.params["reference_lr"], frozen.params["momentum"]
        b = frozen.user_attrs["batch_size"]
        kappa = b / b_ref
        kappas.add(kappa)
        expected = quiet_rescale(Hyperparameters(b_ref, ref_lr, beta1, N), b, "adam-sqrt")
        assert math.isclose(hp.lr, expected.lr, rel_tol=REL)
        assert math.isclose(hp.momentum, expected.momentum, rel_tol=REL)
        assert math.isclose(hp.beta2, expected.beta2, rel_tol=REL)
        assert math.isclose(hp.eps, expected.eps, rel_tol=REL)
        # docs/design.md §1 directly: ϵ → √κ ϵ, 1 − β → κ(1 − β), eps → eps/√κ (from torch's
        # defaults).
        assert math.isclose(hp.lr, ref_lr * math.sqrt(kappa), rel_tol=REL)
        assert math.isclose(1 - hp.momentum, kappa * (1 - beta1), rel_tol=1e-9)
        assert math.isclose(1 - hp.beta2, kappa * (1 - 0.999), rel_tol=1e-9)
        assert math.isclose(hp.eps, 1e-8 / math.sqrt(kappa), rel_tol=REL)
        attrs = frozen.user_attrs
        assert USER_ATTRS - {"noise_scale"} | {"beta2", "eps"} <= set(attrs)
        assert (attrs["lr"], attrs["momentum"], attrs["beta2"], attrs["eps"]) == (
            hp.lr,
            hp.momentum,
            hp.beta2,
            hp.eps,
        )
    assert len(kappas) > 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # κ = 16: 1 − β1 = 16 · 0.1 > 1.
        (dict(n_train=50_000, batch_size=(16, 2048), momentum=0.9), "momentum"),
        # A momentum range: its *lowest* β1 is the first to cross 0 (κ = 4, 4 · 0.5 > 1).
        (dict(n_train=N, batch_size=(16, 512), momentum=(0.0, 0.95)), "momentum"),
        (dict(n_train=N, batch_size=(16, 512), momentum=(0.5, 0.95)), "momentum"),
        # β1 survives κ = 1024 but β2 = 0.999 does not.
        (dict(n_train=200_000, batch_size=(128, 131072), momentum=0.9999), "beta2"),
    ],
)
def test_adam_sqrt_beta_below_zero_raises_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BatchScalingSpace("adam-sqrt", reference_batch_size=128, **kwargs)


def test_adam_sqrt_beta_exactly_zero_is_allowed() -> None:
    # κ = 2 and β1 = 0.5: 1 − β1' = 1, so β1' = 0, the edge where the rule still applies.
    space = BatchScalingSpace(
        "adam-sqrt", n_train=N, batch_size=(64, 256), momentum=(0.5, 0.9), reference_batch_size=128
    )
    hp = space.suggest(FixedTrial({"log2_batch_size": 8, "momentum": 0.5, "reference_lr": 1e-3}))
    assert hp.momentum == 0.0


# --- independent ---------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.9, (0.0, 0.99)])
def test_independent(momentum: float | tuple[float, float]) -> None:
    space = BatchScalingSpace("independent", n_train=N, lr=(1e-3, 1.0), momentum=momentum)
    study, hps = run_study(space, 25)
    ranged = isinstance(momentum, tuple)
    for frozen, hp in zip(study.trials, hps, strict=True):
        expected = {"log2_batch_size", "lr"} | ({"momentum"} if ranged else set())
        assert set(frozen.params) == expected
        assert frozen.user_attrs["lr"] == frozen.params["lr"] == hp.lr
        assert 1e-3 <= hp.lr <= 1.0
        m = frozen.params["momentum"] if ranged else momentum
        assert frozen.user_attrs["momentum"] == m
        b = frozen.user_attrs["batch_size"]
        assert b == 2 ** frozen.params["log2_batch_size"]
        assert math.isclose(
            frozen.user_attrs["noise_scale"], rules.noise_scale(hp.lr, b, N, m), rel_tol=REL
        )
        assert USER_ATTRS <= set(frozen.user_attrs)


# --- batch sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [(16, 128), (20, 100), (1, 1), (1, 3199), (3, 5), (64, 64)])
def test_batch_sizes_are_the_powers_of_two_in_range(batch_size: tuple[int, int]) -> None:
    space = BatchScalingSpace(n_train=N, batch_size=batch_size)
    assert space.batch_sizes == powers_of_two_in(*batch_size)


def test_batch_sizes_cover_what_trials_propose() -> None:
    space = BatchScalingSpace(n_train=N, batch_size=(20, 100))
    study, _ = run_study(space, 30)
    assert {t.user_attrs["batch_size"] for t in study.trials} == {32, 64}


def test_fixed_batch_size() -> None:
    space = BatchScalingSpace(n_train=N, batch_size=100)
    assert space.batch_sizes == [100]
    study, hps = run_study(space, 10)
    for frozen, hp in zip(study.trials, hps, strict=True):
        assert set(frozen.params) == {"noise_scale"}
        assert frozen.user_attrs["batch_size"] == hp.batch_size == 100
        g = frozen.params["noise_scale"]
        assert frozen.user_attrs["lr"] == lr_for_noise_scale(g, 100, N, 0.9)


# --- bad input -----------------------------------------------------------------------------

BAD = [
    # low > high
    (dict(batch_size=(128, 16)), ValueError, "`batch_size`"),
    (dict(noise_scale=(100.0, 1.0)), ValueError, "`noise_scale`"),
    (dict(lr=(1.0, 1e-3)), ValueError, "`lr`"),
    (dict(momentum=(0.9, 0.5)), ValueError, "`momentum`"),
    # B >= N
    (dict(batch_size=(16, N)), ValueError, "`batch_size`"),
    (dict(batch_size=N), ValueError, "`batch_size`"),
    (dict(batch_size=(0, 16)), ValueError, "`batch_size`"),
    (
        dict(parameterisation="linear", reference_batch_size=N),
        ValueError,
        "`reference_batch_size`",
    ),
    # momentum outside [0, 1)
    (dict(momentum=1.0), ValueError, "`momentum`"),
    (dict(momentum=-0.1), ValueError, "`momentum`"),
    (dict(momentum=(0.5, 1.0)), ValueError, "`momentum`"),
    (dict(momentum=(-0.1, 0.5)), ValueError, "`momentum`"),
    # non-positive or non-finite lr and g
    (dict(lr=(0.0, 1.0)), ValueError, "`lr`"),
    (dict(lr=(-1.0, 1.0)), ValueError, "`lr`"),
    (dict(noise_scale=(0.0, 10.0)), ValueError, "`noise_scale`"),
    (dict(noise_scale=(-5.0, 10.0)), ValueError, "`noise_scale`"),
    (dict(noise_scale=(1.0, math.inf)), ValueError, "`noise_scale`"),
    # no power of two in the range
    (dict(batch_size=(17, 31)), ValueError, "`batch_size`"),
    # parameterisation and alpha
    (dict(parameterisation="cosine"), ValueError, "`parameterisation`"),
    (dict(parameterisation="linear", alpha=0.5), ValueError, "`alpha`"),
    (dict(parameterisation="sqrt", alpha=0.5), ValueError, "`alpha`"),
    (dict(parameterisation="power"), TypeError, "`alpha`"),
    (dict(parameterisation="power", alpha="0.5"), TypeError, "`alpha`"),
    (dict(parameterisation="power", alpha=True), TypeError, "`alpha`"),
    (dict(parameterisation="power", alpha=math.nan), (TypeError, ValueError), "`alpha`"),
    # bool or str where numbers are expected
    (dict(batch_size=(16.0, 128.0)), TypeError, "`batch_size`"),
    (dict(batch_size=True), TypeError, "`batch_size`"),
    (dict(batch_size="64"), TypeError, "`batch_size`"),
    (dict(momentum="0.9"), TypeError, "`momentum`"),
    (dict(momentum=True), TypeError, "`momentum`"),
    (dict(noise_scale=("1", "10")), TypeError, "`noise_scale`"),
    (dict(noise_scale=(1.0, 10.0, 100.0)), TypeError, "`noise_scale`"),
    (dict(lr=(True, 1.0)), TypeError, "`lr`"),
    (dict(n_train="3200"), TypeError, "`n_train`"),
    (dict(n_train=True), TypeError, "`n_train`"),
    (
        dict(parameterisation="sqrt", reference_batch_size=128.0),
        TypeError,
        "`reference_batch_size`",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD, ids=[repr(k) for k, _, _ in BAD])
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    kwargs = {"n_train": N, **kwargs}
    with pytest.raises(error, match=match):
        BatchScalingSpace(**kwargs)


def test_error_message_names_the_value() -> None:
    with pytest.raises(ValueError, match=r"batch_size=\(17, 31\)"):
        BatchScalingSpace(n_train=N, batch_size=(17, 31))


def test_every_parameterisation_constructs_with_defaults() -> None:
    for parameterisation in PARAMETERISATIONS:
        kwargs = {"alpha": 0.75} if parameterisation == "power" else {}
        if parameterisation == "adam-sqrt":
            kwargs["batch_size"] = (16, 256)
        space = BatchScalingSpace(parameterisation, n_train=N, **kwargs)
        hp = space.suggest(optuna.create_study().ask())
        assert hp.batch_size in space.batch_sizes


# --- FixedTrial and doctest ----------------------------------------------------------------


@pytest.mark.parametrize("kwargs", list(SPACES.values()), ids=list(SPACES))
def test_fixed_trial_replays_a_trial(kwargs: dict) -> None:
    space = BatchScalingSpace(n_train=N, **kwargs)
    study, hps = run_study(space, 8)
    for frozen, hp in zip(study.trials, hps, strict=True):
        fixed = FixedTrial(frozen.params)
        assert space.suggest(fixed) == hp
        assert fixed.user_attrs == frozen.user_attrs


def test_module_doctests() -> None:
    result = doctest.testmod(optuna_bs.search.space)
    assert result.attempted > 0
    assert result.failed == 0


def test_an_sgd_rule_with_an_adam_optimizer_is_refused_unless_allowed():
    for rule in ("noise-scale", "linear"):
        with pytest.raises(ValueError, match=r"SGD rule.*Adam-family: use 'adam-sqrt'"):
            BatchScalingSpace(rule, n_train=N, optimizer="adamw")
    space = BatchScalingSpace(
        "noise-scale", n_train=N, optimizer="AdamW", allow_sgd_rule_for_adam=True
    )
    assert space.family == "adam"
    BatchScalingSpace("adam-sqrt", n_train=N, batch_size=(16, 256), optimizer="adam")
    BatchScalingSpace("sqrt", n_train=N, optimizer="adamw")  # the sqrt rule holds for both
    BatchScalingSpace("noise-scale", n_train=N, optimizer="sgd")


def test_adam_family_trials_record_no_noise_scale():
    """g = ϵ(N/B − 1)/(1 − m) is SGD's; for Adam it is a number with no meaning, which the
    report, its plots and the analysis never read (they compute g where a trial lacks it)."""
    spaces = {
        "adam-sqrt": BatchScalingSpace("adam-sqrt", n_train=N, batch_size=(32, 128)),
        "sqrt, adamw": BatchScalingSpace("sqrt", n_train=N, optimizer="adamw"),
        "sqrt, sgd": BatchScalingSpace("sqrt", n_train=N, optimizer="sgd"),
        "noise-scale": BatchScalingSpace(n_train=N),
    }
    recorded = {}
    for name, space in spaces.items():
        trial = optuna.create_study().ask()
        space.suggest(trial)
        recorded[name] = "noise_scale" in trial.user_attrs
    assert recorded == {
        "adam-sqrt": False,
        "sqrt, adamw": False,
        "sqrt, sgd": True,
        "noise-scale": True,
    }


def test_adam_space_records_betas_eps_weight_decay_and_tau():
    space = BatchScalingSpace(
        "adam-sqrt",
        n_train=N,
        batch_size=(16, 256),
        lr=(1e-4, 1e-2),
        reference_batch_size=32,
        beta2=0.99,
        eps=1e-6,
        tau_epochs=(1.0, 100.0),
        optimizer="adamw",
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        hp = space.suggest(trial)
        kappa = hp.batch_size / 32
        a = trial.user_attrs
        assert a["beta2"] == pytest.approx(1 - kappa * 0.01, rel=1e-9)
        assert a["eps"] == pytest.approx(1e-6 / math.sqrt(kappa), rel=1e-9)
        assert a["tau_epochs"] == pytest.approx(trial.params["tau_epochs"], rel=1e-9)
        assert a["weight_decay"] == pytest.approx(
            hp.batch_size / (hp.lr * trial.params["tau_epochs"] * N), rel=1e-9
        )
        assert (a["parameterisation"], a["optimizer"]) == ("adam-sqrt", "adamw")
        study.tell(trial, 0.5)
    with pytest.raises(ValueError, match="not both"):
        BatchScalingSpace("adam-sqrt", n_train=N, weight_decay=0.1, tau_epochs=10.0)


def test_an_sgd_space_records_no_adam_values():
    trial = optuna.create_study().ask()
    space = BatchScalingSpace("linear", n_train=N, weight_decay=5e-4, optimizer="sgd")
    space.suggest(trial)
    assert "beta2" not in trial.user_attrs and "eps" not in trial.user_attrs
    assert trial.user_attrs["weight_decay"] == 5e-4


def test_adam_space_warns_once_when_its_range_pushes_beta1_far():
    with pytest.warns(UserWarning, match=r"moves β1 to 0.2 at batch_size=256") as record:
        space = BatchScalingSpace(
            "adam-sqrt", n_train=N, batch_size=(16, 256), reference_batch_size=32
        )
    assert len(record) == 1 and record[0].filename == __file__
    study = optuna.create_study()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not again in every trial
        for _ in range(5):
            space.suggest(study.ask())


def test_an_adam_rule_with_sgd_says_so_the_right_way_round():
    with pytest.raises(
        ValueError,
        match="'adam-sqrt' is a rule for Adam-family optimizers, and "
        "optimizer 'sgd' is SGD: use one of",
    ):
        BatchScalingSpace("adam-sqrt", n_train=1000, optimizer="sgd")


def test_adam_family_spaces_search_adams_lr_range_by_default(tmp_path):
    """SGD's default range reaches lr = 1: an AdamW search there wastes its trials."""
    from optuna_bs.study.config import load_config
    from optuna_bs.study.plan import space_from_config
    from optuna_bs.vocabulary import LR_RANGES

    assert LR_RANGES == {"sgd": (1e-4, 1.0), "adam": (1e-5, 1e-2)}
    adam = [
        BatchScalingSpace("adam-sqrt", n_train=N),
        BatchScalingSpace("adam-sqrt", n_train=N, optimizer="adamw"),
        BatchScalingSpace("sqrt", n_train=N, optimizer="Adam"),
        BatchScalingSpace("independent", n_train=N, optimizer="nadam"),
    ]
    assert [s.lr for s in adam] == [LR_RANGES["adam"]] * 4
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    lrs = [adam[3].suggest(study.ask()).lr for _ in range(20)]
    assert all(1e-5 <= lr <= 1e-2 for lr in lrs)
    for sgd in (BatchScalingSpace("linear", n_train=N), BatchScalingSpace("sqrt", n_train=N)):
        assert sgd.lr == LR_RANGES["sgd"]
    assert BatchScalingSpace("adam-sqrt", n_train=N, lr=(1e-3, 0.1)).lr == (1e-3, 0.1)
    # A study file that names no lr gets its optimizer's range, through the same default.
    study_file = tmp_path / "adamw.toml"
    study_file.write_text('[space]\nparameterisation = "sqrt"\n[train]\noptimizer = "adamw"\n')
    config = load_config(study_file)
    assert config.space.lr is None
    assert space_from_config(config, N).lr == LR_RANGES["adam"]
    assert space_from_config(config, N, optimizer="sgd").lr == LR_RANGES["sgd"]
