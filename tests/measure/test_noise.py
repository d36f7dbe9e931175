"""Tests for optuna_bs.measure.noise: the two-batch-size noise-scale estimator and the batch
range; the range test of g and the noise-scale range."""

from __future__ import annotations

import dataclasses
import doctest
import math
import re

import numpy as np
import pytest
import torch

from optuna_bs.data.datasets import Data
from optuna_bs.measure import noise
from optuna_bs.measure.noise import NoiseScaleEstimate, estimate_noise_scale, recommend_batch_sizes
from optuna_bs.measure.range_test import RangeTest, lr_range_test, recommend_noise_scales
from optuna_bs.study.plan import search_batch_size

D, N, SIGMA = 10, 20_000, 1.0


def linear_problem(n: int = N, d: int = D, sigma: float = SIGMA, seed: int = 0):
    """y = x·w* + ε with x ~ N(0, I), ε ~ N(0, σ²); a linear model held at w = w* + δ."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w_star = torch.randn(d, 1, generator=g)
    y = x @ w_star + sigma * torch.randn(n, 1, generator=g)
    delta = torch.full((d, 1), 1.0 / math.sqrt(d))  # |δ|² = 1
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_((w_star + delta).T)
    data = Data(x, y, x[:10], y[:10], x[:10], y[:10], n_outputs=1, task="regression", name="lin")
    return model, data, delta


def analytic_b_simple(d: int, sigma: float, delta_sq: float) -> float:
    """tr(Σ)/|G|² of the MSE loss (x·w − y)² at w = w* + δ, worked out by hand.

    The per-example gradient is g = 2 (x·δ − ε) x, so G = E[g] = 2 E[x xᵀ] δ = 2δ and
    E|g|² = 4 (E[(x·δ)² |x|²] + σ² E|x|²) = 4 ((d + 2)|δ|² + σ² d) (Gaussian fourth moments),
    hence tr(Σ) = E|g|² − |G|² = 4 ((d + 1)|δ|² + σ² d) and B_simple = d + 1 + σ² d / |δ|².
    """
    return d + 1 + sigma**2 * d / delta_sq


def test_recovers_the_analytic_noise_scale_within_10_percent() -> None:
    model, data, delta = linear_problem()
    true = analytic_b_simple(D, SIGMA, float(delta.pow(2).sum()))
    assert true == pytest.approx(21.0)
    # The finite data set is the population the estimator samples: it must match theory too.
    w = model.weight.detach().T.double()
    per_example = 2 * (data.x_train.double() @ w - data.y_train.double()) * data.x_train.double()
    mean = per_example.mean(dim=0)
    finite = float(((per_example - mean) ** 2).sum(dim=1).mean() / mean.pow(2).sum())
    assert finite == pytest.approx(true, rel=0.03)
    est = estimate_noise_scale(model, data, batch_sizes=(16, 256), n_batches=200, device="cpu")
    assert est.b_simple == pytest.approx(true, rel=0.10)
    assert est.grad_sq_norm == pytest.approx(4.0, rel=0.10)  # |G|² = 4|δ|²
    assert est.trace_sigma == pytest.approx(4.0 * ((D + 1) + SIGMA**2 * D), rel=0.10)
    assert abs(est.b_simple - true) < 4 * est.standard_error  # the error bar is honest
    assert (est.batch_sizes, est.n_batches, est.n_train) == ((16, 256), 200, N)


def test_noisier_data_gives_a_larger_noise_scale() -> None:
    quiet = estimate_noise_scale(*linear_problem(sigma=0.5)[:2], batch_sizes=(8, 128))
    loud = estimate_noise_scale(*linear_problem(sigma=2.0)[:2], batch_sizes=(8, 128))
    # analytic: 11 + 0.25·10 = 13.5 against 11 + 4·10 = 51
    assert quiet.b_simple == pytest.approx(13.5, rel=0.2)
    assert loud.b_simple == pytest.approx(51.0, rel=0.2)


def test_standard_error_is_positive_and_shrinks_with_more_batches() -> None:
    model, data, _ = linear_problem(n=5000)
    few = estimate_noise_scale(model, data, batch_sizes=(8, 64), n_batches=8, seed=1)
    many = estimate_noise_scale(model, data, batch_sizes=(8, 64), n_batches=256, seed=1)
    assert 0 < many.standard_error < few.standard_error / 2.5  # ≈ 1/√32 ≈ 0.18 of it
    assert math.isfinite(few.standard_error)


def test_same_seed_same_estimate_and_the_callers_model_and_rng_are_untouched() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(dim=1)
    data = Data(x, y, x[:5], y[:5], x[:5], y[:5], n_outputs=3, task="classification", name="toy")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    before = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    a = estimate_noise_scale(model, data, batch_sizes=(8, 64), n_batches=10, warmup_epochs=2)
    b = estimate_noise_scale(model, data, batch_sizes=(8, 64), n_batches=10, warmup_epochs=2)
    assert a == b and a.warmup_epochs == 2
    assert math.isfinite(a.b_simple) and a.b_simple > 0 and a.trace_sigma > 0
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    assert torch.equal(rng, torch.get_rng_state())
    cold = estimate_noise_scale(model, data, batch_sizes=(8, 64), n_batches=10)
    assert cold.grad_sq_norm > 2 * a.grad_sq_norm  # training shrinks the mean gradient...
    assert cold.b_simple < a.b_simple  # ... so the noise scale grows (docs/design.md §1)


def test_a_pair_of_tensors_works_like_data() -> None:
    model, data, _ = linear_problem(n=3000)
    kwargs = {"batch_sizes": (4, 32), "n_batches": 5, "seed": 3}
    via_data = estimate_noise_scale(model, data, **kwargs)
    via_pair = estimate_noise_scale(model, (data.x_train, data.y_train), **kwargs)
    assert via_data == via_pair


def test_warmup_that_diverges_raises() -> None:
    model, data, _ = linear_problem(n=500)
    with pytest.raises(ValueError, match="warm-up diverged.*lr"):
        estimate_noise_scale(model, data, batch_sizes=(4, 32), warmup_epochs=1, lr=1e6)


def test_signal_lost_in_noise_warns() -> None:
    model, data, _ = linear_problem(n=2000, sigma=100.0)
    with pytest.warns(UserWarning, match="n_batches"):
        est = estimate_noise_scale(model, data, batch_sizes=(1, 2), n_batches=2, seed=0)
    assert est.grad_sq_norm <= 0 and est.b_simple == est.standard_error == math.inf


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"batch_sizes": (64, 64)}, ValueError, r"small < big < n_train = 500"),
        ({"batch_sizes": (128, 64)}, ValueError, "batch_sizes"),
        ({"batch_sizes": (8, 500)}, ValueError, r"batch_sizes=\(8, 500\)"),
        ({"batch_sizes": (0, 8)}, ValueError, "batch_sizes"),
        ({"batch_sizes": (8.0, 64)}, TypeError, "batch_sizes"),
        ({"batch_sizes": 64}, TypeError, "batch_sizes"),
        ({"n_batches": 1}, ValueError, r"n_batches.*>= 2"),
        ({"warmup_epochs": -1}, ValueError, "warmup_epochs"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"device": "tpu"}, ValueError, "device"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, match) -> None:
    model, data, _ = linear_problem(n=500)
    with pytest.raises(exc, match=match):
        estimate_noise_scale(model, data, **{"batch_sizes": (8, 64), **kwargs})


def test_bad_model_and_data() -> None:
    model, data, _ = linear_problem(n=500)
    with pytest.raises(TypeError, match="model"):
        estimate_noise_scale(lambda x: x, data, batch_sizes=(8, 64))
    with pytest.raises(TypeError, match="data"):
        estimate_noise_scale(model, data.x_train, batch_sizes=(8, 64))
    with pytest.raises(ValueError, match="len"):
        estimate_noise_scale(model, (data.x_train, data.y_train[:-1]), batch_sizes=(8, 64))
    frozen = torch.nn.Linear(D, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="requires a gradient"):
        estimate_noise_scale(frozen, data, batch_sizes=(8, 64))


def powers_of_two(x: int) -> bool:
    return x >= 1 and x & (x - 1) == 0


@pytest.mark.parametrize("n_train", [2, 9, 10, 100, 4000, 50_000, 1_281_167])
def test_recommended_range_is_powers_of_two_within_bounds_and_monotone(n_train) -> None:
    grid = [0.5, 1, 3, 8, 20, 100, 255, 256, 1000, 1e4, 1e6, math.inf]
    ranges = [recommend_batch_sizes(b, n_train) for b in grid]
    for low, high in ranges:
        assert powers_of_two(low) and powers_of_two(high)
        assert 1 <= low <= high <= max(1, n_train - 1) and high <= max(1, n_train / 10)
    for (l1, h1), (l2, h2) in zip(ranges, ranges[1:], strict=False):
        assert l1 <= l2 and h1 <= h2


def test_recommended_range_values() -> None:
    assert recommend_batch_sizes(300.0, 50_000) == (32, 256)  # below N/10
    assert recommend_batch_sizes(256, 50_000) == (32, 256)
    assert recommend_batch_sizes(1e5, 50_000) == (512, 4096)  # capped at N/10 = 5000
    assert recommend_batch_sizes(math.inf, 50_000) == (512, 4096)
    assert recommend_batch_sizes(12.0, 4000) == (1, 8)
    est = NoiseScaleEstimate(600.0, 1.0, 600.0, 10.0, (32, 512), 100, 4000)
    assert recommend_batch_sizes(est) == (32, 256)  # N/10 = 400 from the estimate's N
    assert recommend_batch_sizes(est, n_train=100_000) == (64, 512)
    assert dataclasses.is_dataclass(est) and est.warmup_epochs == 0


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((0.0, 100), ValueError, "b_simple"),
        ((math.nan, 100), ValueError, "b_simple"),
        ((10.0, 1), ValueError, "n_train"),
        ((10.0, None), ValueError, "n_train"),
        (("10", 100), TypeError, "estimate"),
    ],
)
def test_recommend_bad_input(args, exc, match) -> None:
    with pytest.raises(exc, match=match):
        recommend_batch_sizes(*args)


def test_doctests() -> None:
    assert doctest.testmod(noise).failed == 0


NOISE_STUDY = """
[data]
name = "synthetic"
n_samples = 400
n_features = 6
[model]
hidden = [8]
[space]
batch_size = "auto"
"""


def test_noise_scale_command_prints_the_estimate_and_range(tmp_path, capsys):
    from optuna_bs.cli import main

    path = tmp_path / "s.toml"
    path.write_text(NOISE_STUDY)
    assert main(["noise-scale", str(path), "--batch-sizes", "8,64", "--n-batches", "20"]) == 0
    out = capsys.readouterr().out
    assert "B_simple" in out and "recommended batch_size" in out
    assert not list(tmp_path.glob("*.db"))  # a measurement writes no study


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--batch-sizes", "64,8"], "SMALL < BIG"),
        (["--batch-sizes", "8,8"], "SMALL < BIG"),
        (["--batch-sizes", "8,4096"], "n_train"),
        (["--batch-sizes", "x"], "SMALL,BIG"),
    ],
)
def test_noise_scale_command_bad_batch_sizes(tmp_path, capsys, args, word):
    from optuna_bs.cli import main

    path = tmp_path / "s.toml"
    path.write_text(NOISE_STUDY)
    assert main(["noise-scale", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and word in err


def test_noise_scale_command_bad_file(tmp_path, capsys):
    from optuna_bs.cli import main

    path = tmp_path / "s.toml"
    path.write_text("[space]\nbatch_size = 'automatic'\n")
    assert main(["noise-scale", str(path)]) == 2
    assert "'auto'" in capsys.readouterr().err
    assert main(["noise-scale", str(tmp_path / "missing.toml")]) == 2


def test_auto_batch_size_bounds_the_space_by_the_estimate(tmp_path):
    from optuna_bs.study.config import load_config
    from optuna_bs.study.runner import prepare

    path = tmp_path / "s.toml"
    path.write_text(NOISE_STUDY)
    prepared = prepare(load_config(path), storage=f"sqlite:///{tmp_path / 's.db'}")
    low, high = prepared.space.batch_size
    assert high <= prepared.data.n_train // 10 and low == max(1, high // 8)
    assert high & (high - 1) == 0  # a power of two


# --- the range test of g ---------------------------------------------------------------------


def digits_mlp(seed: int = 0):
    from optuna_bs.data.datasets import load_data
    from optuna_bs.data.models import build_model

    data = load_data("digits", seed=0)
    torch.manual_seed(seed)
    return build_model("mlp", data.input_shape, data.n_outputs, hidden=[64]), data


def test_the_range_test_finds_the_steepest_descent_before_the_loss_turns():
    model, data = digits_mlp()
    test = lr_range_test(model, data, batch_size=32, momentum=0.9, seed=0)
    g, loss = np.array(test.noise_scales), np.array(test.losses)
    assert np.all(np.diff(np.log(g)) > 0) and len(g) == len(loss) <= 100
    assert g[0] == pytest.approx(0.1)
    turn = int(np.argmin(loss))
    at = int(np.searchsorted(g, test.g_steep))
    assert g[at] == test.g_steep and 0 < at < turn  # on the way down, not at the bottom
    assert loss[at + 1] < loss[at - 1] < loss[0]  # where it falls
    slopes = np.gradient(loss[: turn + 1], np.log(g[: turn + 1]))
    assert slopes[at] == pytest.approx(slopes.min())  # and falls fastest
    # The sweep goes on until the loss blows up (4x its lowest), then stops.
    assert test.diverged and g[-1] < 1e4
    assert (test.batch_size, test.momentum, test.n_train) == (32, 0.9, data.n_train)


def test_the_range_test_leaves_the_model_and_the_random_state_alone_and_repeats_by_seed():
    model, data = digits_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    state = torch.random.get_rng_state()
    first = lr_range_test(model, data, batch_size=32, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert torch.equal(state, torch.random.get_rng_state())
    assert lr_range_test(model, data, batch_size=32, seed=3) == first
    assert isinstance(first, RangeTest)


def test_the_range_test_takes_datasets_as_fit_does_and_finds_the_same_g():
    """Your own Datasets (or a (train, val) pair) give the first epoch's batches in the
    tensors' order (later epochs draw theirs after the DataLoader's worker seed)."""
    from torch.utils.data import TensorDataset

    from optuna_bs.train.sources import Datasets

    model, data = digits_mlp()
    train = TensorDataset(data.x_train, data.y_train)
    val = TensorDataset(data.x_val, data.y_val)
    on_tensors = lr_range_test(model, data, batch_size=32, seed=1)
    for given in (Datasets(train, val), (train, val)):
        test = lr_range_test(model, given, batch_size=32, seed=1)
        epoch = data.n_train // 32 - 6  # the centred mean reaches 5 steps into the next
        assert test.losses[:epoch] == pytest.approx(on_tensors.losses[:epoch], rel=1e-5)
        step = math.log(test.noise_scales[1] / test.noise_scales[0])
        assert abs(math.log(test.g_steep / on_tensors.g_steep)) <= 2 * step + 1e-9


def test_the_range_test_sweeps_in_units_of_g_through_the_rule():
    """Each step's learning rate is lr_for_noise_scale(g, B, N, m): the optimizer sees it."""
    from optuna_bs.rules.formulas import lr_for_noise_scale

    model, data = digits_mlp()
    seen = []
    step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append((self.param_groups[0]["lr"], self.param_groups[0]["momentum"]))
        return step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", spy)
        test = lr_range_test(model, data, batch_size=64, momentum=0.5, steps=20)
    assert len(seen) >= len(test.losses)
    for g, (lr, m) in zip(test.noise_scales, seen, strict=False):
        assert m == 0.5
        assert lr == pytest.approx(lr_for_noise_scale(g, 64, data.n_train, 0.5))


def test_a_loss_below_zero_gives_the_same_g_steep():
    """The stop rule works for a loss that goes below 0 (the same gradients, shifted)."""
    model, data = digits_mlp()

    def shifted(out, y):
        return torch.nn.functional.cross_entropy(out, y) - 5

    plain = lr_range_test(model, data, batch_size=32)
    assert lr_range_test(model, data, batch_size=32, loss=shifted).g_steep == plain.g_steep


def test_a_range_test_whose_loss_only_rises_says_what_to_do():
    model, data = digits_mlp()
    with pytest.raises(ValueError, match="lower `noise_scales\\[0\\]`"):
        lr_range_test(model, data, batch_size=32, noise_scales=(1e5, 1e7), steps=20)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"batch_size": 10_000}, ValueError, "`batch_size` must be < n_train"),
        ({"momentum": 1.0}, ValueError, "`momentum`"),
        ({"noise_scales": (10.0, 1.0)}, ValueError, "`noise_scales`"),
        ({"noise_scales": (0.0, 1.0)}, ValueError, "`noise_scales`"),
        ({"noise_scales": 5}, TypeError, "`noise_scales`"),
        ({"steps": 5}, ValueError, "`steps`"),
        ({"loss": "mse"}, TypeError, "`loss`"),
    ],
)
def test_range_test_bad_input_names_the_argument(kwargs, exc, match):
    model, data = digits_mlp()
    with pytest.raises(exc, match=match):
        lr_range_test(model, data, **{"batch_size": 32, **kwargs})


def test_the_recommended_noise_scales_straddle_g_steep_lopsidedly():
    assert recommend_noise_scales(60.0) == (12.0, 180.0)
    assert recommend_noise_scales(53.4, below=2, above=2) == (26.7, 107.0)  # 3 digits
    model, data = digits_mlp()
    test = lr_range_test(model, data, batch_size=32)
    low, high = recommend_noise_scales(test)
    assert low < test.g_steep < high and high / low == pytest.approx(15, rel=0.01)
    for bad, exc in [(0.0, ValueError), (math.inf, ValueError), ("60", TypeError)]:
        with pytest.raises(exc):
            recommend_noise_scales(bad)
    with pytest.raises(ValueError, match="`above`"):
        recommend_noise_scales(60.0, above=1.0)


# --- noise_scale = "auto" in study files -------------------------------------------------------

AUTO_G_STUDY = """
[study]
name = "auto-g"
[data]
name = "digits"
[model]
hidden = [64]
[space]
batch_size = [8, 128]
noise_scale = "auto"
"""


def test_auto_noise_scale_centres_the_space_on_the_range_test_at_the_middle_batch(tmp_path):
    from optuna_bs.study.config import load_config
    from optuna_bs.study.runner import prepare

    path = tmp_path / "s.toml"
    path.write_text(AUTO_G_STUDY)
    config = load_config(path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    prepared = prepare(config, storage=url)
    test = prepared.plan.range_test(prepared.space)
    assert (test.batch_size, test.momentum) == (32, 0.9)  # where the ladder searches g
    assert prepared.space.noise_scale == recommend_noise_scales(test)
    assert prepared.space.noise_scale != (1.0, 1000.0)
    # Workers started together (launch gives each its own seed) measure the same range: the
    # probe model is seeded with 0 whatever the worker's seed.
    other = prepare(config, storage=url, seed=1000)
    assert other.space.noise_scale == prepared.space.noise_scale
    # The study keeps what "auto" resolved to from its creation on: later workers read it.
    from optuna_bs.study.auto import AUTO_RANGES_ATTR
    from optuna_bs.study.runner import open_study

    study = open_study(prepared)
    assert study.user_attrs[AUTO_RANGES_ATTR] == {"noise_scale": list(prepared.space.noise_scale)}


def test_auto_noise_scale_measures_where_the_ladder_searches_for_any_batch_range():
    from optuna.distributions import IntDistribution

    from optuna_bs.search.ladder import BatchLadderSampler
    from optuna_bs.search.space import BatchScalingSpace

    ladder = BatchLadderSampler()
    for low, high in [(48, 1024), (8, 128), (16, 16), (3, 100), (100, 1000)]:
        space = BatchScalingSpace(n_train=4000, batch_size=(low, high))
        sizes = space.batch_sizes
        dist = IntDistribution(int(math.log2(sizes[0])), int(math.log2(sizes[-1])))
        assert search_batch_size(space.batch_sizes) == 2 ** ladder._search_log2(dist)
        assert low <= search_batch_size(space.batch_sizes) <= high


def test_a_study_with_trials_keeps_the_ranges_its_trials_were_drawn_from(tmp_path, monkeypatch):
    """A second worker, or a resumed study, takes 'auto' from the stored trials: it measures
    nothing, and its distributions match the study's."""
    import optuna

    from optuna_bs.study import auto, runner
    from optuna_bs.study.config import load_config

    path = tmp_path / "s.toml"
    path.write_text(AUTO_G_STUDY.replace("[8, 128]", '"auto"'))
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="auto-g", storage=url)
    study.add_trial(
        optuna.trial.create_trial(
            params={"log2_batch_size": 4, "noise_scale": 20.0},
            distributions={
                "log2_batch_size": optuna.distributions.IntDistribution(3, 6),
                "noise_scale": optuna.distributions.FloatDistribution(7.0, 99.0, log=True),
            },
            value=0.1,
        )
    )

    def no_probe(*args, **kwargs):  # pragma: no cover (fails the test if called)
        raise AssertionError("a study with trials must not be measured again")

    monkeypatch.setattr(auto, "lr_range_test", no_probe)
    monkeypatch.setattr(auto, "estimate_noise_scale", no_probe)
    prepared = runner.prepare(load_config(path), storage=url)
    assert prepared.space.batch_size == (8, 64)
    assert prepared.space.noise_scale == (7.0, 99.0)


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ('noise_scale = "automatic"', "'auto'"),
        ('noise_scale = "auto"\nparameterisation = "independent"', "parameterisation"),
    ],
)
def test_a_bad_auto_noise_scale_is_one_line_and_exit_2(tmp_path, capsys, change, word):
    from optuna_bs.cli import main

    path = tmp_path / "s.toml"
    path.write_text(AUTO_G_STUDY.replace('noise_scale = "auto"', change))
    assert main(["run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and word in err
    assert not (tmp_path / "s.db").exists()


def test_auto_noise_scale_refuses_adam_in_one_line(tmp_path, capsys):
    from optuna_bs.cli import main

    path = tmp_path / "s.toml"
    text = AUTO_G_STUDY + 'allow_sgd_rule_for_adam = true\n[train]\noptimizer = "adam"\n'
    path.write_text(text)
    assert main(["run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer 'sgd'" in err
    assert not (tmp_path / "s.db").exists()  # refused before the store is opened


def _rows(out: str) -> dict[str, str]:
    """The ``noise-scale`` command's table: each row's label and its value."""
    pairs = (line.split("  ", 1) for line in out.splitlines() if "  " in line)
    return {k.strip(): v.strip() for k, v in pairs}


def test_noise_scale_command_prints_the_range_test_too(tmp_path, capsys):
    from optuna_bs.cli import main

    path = tmp_path / "s.toml"
    path.write_text(AUTO_G_STUDY)
    assert main(["noise-scale", str(path), "--n-batches", "10"]) == 0
    rows = _rows(capsys.readouterr().out)
    g_steep = float(rows["steepest descent g_steep"])
    low, high = (float(v) for v in rows["recommended noise_scale"].strip("[]").split(","))
    assert (low, high) == recommend_noise_scales(g_steep)
    assert re.fullmatch(r"\d+ steps at B = 32, m = 0\.9(, stopped where .*)?", rows["range test"])


# --- probes on data or models that give NaN, inf or no gradient ------------------------------


class _Flat(torch.nn.Module):
    """Outputs that do not depend on the parameters: every gradient is zero."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.linear(x) * 0


def _synthetic(change=None):
    from optuna_bs.data.datasets import load_data

    data = load_data("synthetic", n_samples=400)
    x = data.x_train.clone()
    if change is not None:
        x = change(x)
    torch.manual_seed(0)
    return torch.nn.Linear(x.shape[1], data.n_outputs), dataclasses.replace(data, x_train=x)


def _poke(value):
    def change(x):
        x[::25, 0] = value
        return x

    return change


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_gradient_is_an_error_naming_the_data(value):
    model, data = _synthetic(_poke(value))
    with pytest.raises(ValueError, match="gradients are NaN or inf: the inputs hold 11 NaN or"):
        estimate_noise_scale(model, data, batch_sizes=(8, 64), n_batches=5)
    with pytest.raises(ValueError, match="training data holds NaN or inf"):
        lr_range_test(model, data, batch_size=16, steps=20)


def test_a_zero_gradient_is_an_error_naming_it():
    _, data = _synthetic()
    flat = _Flat(data.input_shape[0], data.n_outputs)
    with pytest.raises(ValueError, match="Every gradient of the noise-scale estimate is zero"):
        estimate_noise_scale(flat, data, batch_sizes=(8, 64), n_batches=5)
    with pytest.raises(ValueError, match="Every gradient of the range test is zero"):
        lr_range_test(flat, data, batch_size=16, steps=20)


def test_a_range_test_on_huge_inputs_says_to_standardise_them():
    model, data = _synthetic(lambda x: x * 1e30)
    with pytest.raises(ValueError, match=r"inputs reach \|x\| = 3.*e\+30: standardise them"):
        lr_range_test(model, data, batch_size=16, steps=20)


NON_FINITE_CODE = """
import dataclasses

import optuna_bs


def make(value=float("nan")):
    data = optuna_bs.load_data("synthetic", n_samples=400)
    x = data.x_train.clone()
    x[5, 0] = value
    return dataclasses.replace(data, x_train=x)
"""

NON_FINITE_STUDY = """
[study]
name = "nan"
n_trials = 1
[data]
name = "nonfinite_code:make"
[model]
hidden = [8]
[space]
batch_size = {batch_size}
noise_scale = {noise_scale}
[train]
max_epochs = 1
"""


@pytest.mark.parametrize(
    ("batch_size", "noise_scale", "word"),
    [
        ('"auto"', "[1.0, 1000.0]", "[space] batch_size = 'auto': The noise-scale estimate's"),
        ("[8, 64]", '"auto"', "[space] noise_scale = 'auto': The range test's loss is nan"),
    ],
)
def test_auto_on_nan_data_is_one_line_exit_2_and_writes_no_database(
    tmp_path, monkeypatch, capsys, batch_size, noise_scale, word
):
    import optuna

    from optuna_bs.cli import main

    (tmp_path / "nonfinite_code.py").write_text(NON_FINITE_CODE)
    path = tmp_path / "s.toml"
    path.write_text(NON_FINITE_STUDY.format(batch_size=batch_size, noise_scale=noise_scale))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and word in err and "NaN or inf" in err, err
    assert not (tmp_path / "optuna_bs.db").exists()  # the default store was never created
    # A store that exists already gets no study, and so no 'auto' ranges.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    optuna.create_study(study_name="other", storage=url)
    assert main(["run", str(path), "-q", "--storage", url]) == 2
    assert optuna.get_all_study_names(url) == ["other"]


def test_noise_scale_command_prints_adams_range_test_for_an_adam_study(tmp_path, capsys):
    """An Adam study file: ``noise-scale`` prints the lr range test ``lr = "auto"`` runs, at
    the reference batch size, and the reference lr range it gives."""
    from optuna_bs.cli import main
    from optuna_bs.measure import recommend_lrs

    path = tmp_path / "s.toml"
    study = AUTO_G_STUDY.replace(
        'noise_scale = "auto"', 'parameterisation = "adam-sqrt"\nlr = "auto"'
    )
    path.write_text(study + 'reference_batch_size = 16\n[train]\noptimizer = "adamw"\n')
    assert main(["noise-scale", str(path), "--n-batches", "10"]) == 0
    rows = _rows(capsys.readouterr().out)
    lr_steep = float(rows["steepest descent lr_steep (adamw)"])
    low, high = (float(v) for v in rows["recommended lr (at B = 16)"].strip("[]").split(","))
    assert (low, high) == recommend_lrs(lr_steep)
    assert re.fullmatch(
        r"\d+ steps at B = 16, beta1 = 0\.9(, stopped where .*)?", rows["range test"]
    )
