"""Tests for optuna_bs.train.schedules: the noise-scale path of each schedule, caps and update
counts."""

from __future__ import annotations

import doctest
import math
import warnings

import pytest

from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.train import schedules
from optuna_bs.train.schedules import (
    SCHEDULES,
    BatchRamp,
    Compose,
    Constant,
    Cosine,
    LrDecay,
    MomentumRamp,
    Warmup,
    count_updates,
    make_schedule,
)


def g_of(lr: float, b: int, n: int, m: float) -> float:
    """The noise scale written out here, independently of rules.noise_scale."""
    return lr * (n / b - 1.0) / (1.0 - m)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# (n_train, B0, lr0, m0, milestones, factor, max_batch_size, max_epochs)
CONFIGS = {
    "no-cap": (1_000_000, 64, 0.1, 0.9, [3, 6], 2.0, None, 10),
    "n10-cap-last": (50_000, 128, 0.1, 0.9, [60, 120, 160], 5.0, None, 200),
    "n10-cap-midway": (4000, 32, 0.1, 0.9, [10, 15, 18], 5.0, None, 20),
    "max-batch-cap": (50_000, 128, 0.05, 0.0, [3, 6, 9], 2.0, 512, 12),
    "odd-factor": (12_345, 100, 0.3, 0.5, [2, 4, 6, 8], 3.0, None, 10),
    "repeated-milestone": (60_000, 64, 0.02, 0.95, [2, 2, 5], 4.0, 3000, 7),
}


def expected_batch(b0: int, factor: float, k: int, n: int, max_b: int | None) -> int:
    cap = n // 10 if max_b is None else min(n // 10, max_b)
    return max(b0, min(int(round(b0 * factor**k, 6) // 1), cap))


@pytest.mark.parametrize("config", CONFIGS.values(), ids=list(CONFIGS))
def test_batch_ramp_noise_scale_equals_lr_decay_every_epoch(config) -> None:
    n, b0, lr0, m0, milestones, factor, max_b, epochs = config
    base = Hyperparameters(b0, lr0, m0, n)
    decay = LrDecay(milestones, factor).path(base, epochs)
    ramp = BatchRamp(milestones, factor, max_batch_size=max_b).path(base, epochs)
    for e, (d, r) in enumerate(zip(decay, ramp, strict=True)):
        k = sum(1 for m in milestones if m <= e)
        assert d.batch_size == b0 and math.isclose(d.lr, lr0 / factor**k, rel_tol=1e-12)
        assert rel(g_of(r.lr, r.batch_size, n, r.momentum), g_of(d.lr, b0, n, m0)) <= 1e-9
        assert rel(r.noise_scale, d.noise_scale) <= 1e-9
        assert r.batch_size == expected_batch(b0, factor, k, n, max_b)
        assert r.momentum == m0
        # ϵ in closed form: lr0 f^-k (N/B0 - 1) / (N/B - 1)
        closed = lr0 / factor**k * (n / b0 - 1) / (n / r.batch_size - 1)
        assert math.isclose(r.lr, closed, rel_tol=1e-9)


def test_batch_ramp_keeps_lr_while_b_grows_and_decays_it_after_the_cap() -> None:
    n, b0, lr0 = 4000, 32, 0.1
    base = Hyperparameters(b0, lr0, 0.9, n)
    path = BatchRamp([10, 15, 18], 5.0).path(base, 20)
    assert [path[e].batch_size for e in (0, 9, 10, 14, 15, 17, 18, 19)] == [
        32, 32, 160, 160, 400, 400, 400, 400,
    ]  # fmt: skip
    # Before the cap ϵ stays within a few percent of ϵ0 (only the N/B − 1 correction).
    assert all(abs(s.lr / lr0 - 1) < 0.05 for s in path[:15])
    # From 15 on B is capped at N/10 = 400 (32·25 = 800 would exceed it): ϵ takes the rest.
    assert path[15].lr < path[14].lr / 1.8  # about 800 / 400
    # At milestone 18 B cannot move at all, so ϵ falls by exactly the factor, as in lr-decay.
    assert math.isclose(path[18].lr, path[17].lr / 5.0, rel_tol=1e-12)


def test_max_batch_size_caps_below_n_over_10() -> None:
    base = Hyperparameters(128, 0.1, 0.9, 50_000)
    path = BatchRamp([1, 2, 3], 2.0, max_batch_size=300).path(base, 4)
    assert [s.batch_size for s in path] == [128, 256, 300, 300]
    assert math.isclose(path[3].lr, path[2].lr / 2.0, rel_tol=1e-12)


def test_update_counts_hand_computed() -> None:
    base = Hyperparameters(32, 0.1, 0.9, 4000)
    # lr-decay: 20 epochs of 4000 // 32 = 125 updates.
    assert count_updates(LrDecay([10, 15, 18], 5.0), base, 20) == 20 * 125
    # batch-ramp: 10 epochs at B=32 (125), 5 at B=160 (25), 5 at the cap B=400 (10).
    assert count_updates(BatchRamp([10, 15, 18], 5.0), base, 20) == 10 * 125 + 5 * 25 + 5 * 10
    assert count_updates(Constant(), base, 3) == 3 * 125
    # Full batches only: 4000 // 96 = 41 (the 64 left over are not a step).
    assert count_updates(BatchRamp([1], 3.0), base, 2) == 125 + 41


@pytest.mark.parametrize("config", CONFIGS.values(), ids=list(CONFIGS))
def test_update_counts_match_the_path(config) -> None:
    n, b0, lr0, m0, milestones, factor, max_b, epochs = config
    base = Hyperparameters(b0, lr0, m0, n)
    expected = 0
    for e in range(epochs):
        k = sum(1 for m in milestones if m <= e)
        expected += n // expected_batch(b0, factor, k, n, max_b)
    assert count_updates(BatchRamp(milestones, factor, max_batch_size=max_b), base, epochs) == (
        expected
    )
    assert (
        expected < count_updates(LrDecay(milestones, factor), base, epochs) == epochs * (n // b0)
    )


@pytest.mark.parametrize("config", CONFIGS.values(), ids=list(CONFIGS))
def test_momentum_ramp_follows_lr_decay_noise_scale(config) -> None:
    n, b0, lr0, m0, milestones, factor, max_b, epochs = config
    base = Hyperparameters(b0, lr0, m0, n)
    decay = LrDecay(milestones, factor).path(base, epochs)
    ramp = MomentumRamp(milestones, factor, max_batch_size=max_b).path(base, epochs)
    cap = n // 10 if max_b is None else min(n // 10, max_b)
    for e, (d, r) in enumerate(zip(decay, ramp, strict=True)):
        assert rel(g_of(r.lr, r.batch_size, n, r.momentum), g_of(d.lr, b0, n, m0)) <= 1e-9
        k = sum(1 for m in milestones if m <= e)
        assert math.isclose(r.momentum, min(1 - (1 - m0) / factor**k, 0.99), abs_tol=1e-12)
        assert b0 <= r.batch_size <= max(b0, cap)


def test_momentum_ramp_raises_m_then_b_then_decays_lr() -> None:
    base = Hyperparameters(16, 0.1, 0.9, 50_000)
    path = MomentumRamp([1, 2, 3, 4], 2.0, max_momentum=0.97).path(base, 5)
    assert [round(s.momentum, 6) for s in path] == [0.9, 0.95, 0.97, 0.97, 0.97]
    # B ∝ f^k (1 − m0)/(1 − m): 16·2·2 = 64, then m is held at 0.97 and B grows by 2 a step
    assert [s.batch_size for s in path] == [16, 64, 213, 426, 853]
    assert all(abs(s.lr / 0.1 - 1) < 0.05 for s in path)
    capped = MomentumRamp([1, 2], 10.0, max_batch_size=100).path(base, 3)
    assert [s.batch_size for s in capped] == [16, 100, 100]
    assert math.isclose(capped[2].lr, capped[1].lr / 10, rel_tol=1e-9)


def test_momentum_factor_and_a_base_above_the_cap() -> None:
    base = Hyperparameters(16, 0.1, 0.9, 50_000)
    s = MomentumRamp([1], 4.0, momentum_factor=2.0).at(1, base)
    assert math.isclose(s.momentum, 0.95) and s.batch_size == 16 * 4 * 2
    high = Hyperparameters(16, 0.1, 0.995, 50_000)
    assert MomentumRamp([1], 2.0).at(1, high).momentum == 0.995


def test_warmup_ramps_linearly_then_holds() -> None:
    base = Hyperparameters(64, 0.8, 0.9, 10_000)
    lrs = [s.lr for s in Warmup(4).path(base, 8)]
    assert lrs[:4] == pytest.approx([0.16, 0.32, 0.48, 0.64], rel=1e-12)
    assert all(b - a == pytest.approx(0.16, rel=1e-9) for a, b in zip(lrs, lrs[1:4], strict=False))
    assert lrs[4:] == [0.8] * 4
    assert all(s.batch_size == 64 and s.momentum == 0.9 for s in Warmup(4).path(base, 8))


def test_warmup_composes_with_the_ramp_in_either_order() -> None:
    base = Hyperparameters(32, 0.1, 0.9, 4000)
    a = Warmup(3).then(BatchRamp([2, 5], 5.0)).path(base, 8)
    b = Compose(BatchRamp([2, 5], 5.0), Warmup(3)).path(base, 8)
    decay = Warmup(3).then(LrDecay([2, 5], 5.0)).path(base, 8)
    for x, y, d in zip(a, b, decay, strict=True):
        assert x.batch_size == y.batch_size
        assert (
            rel(x.noise_scale, d.noise_scale) <= 1e-9 and rel(y.noise_scale, d.noise_scale) <= 1e-9
        )
    assert [s.batch_size for s in a] == [32, 32, 160, 160, 160, 400, 400, 400]
    assert rel(a[0].noise_scale, base.noise_scale / 4) <= 1e-12


def test_make_schedule_names_fractions_and_warmup() -> None:
    kinds = {"constant": Constant, "lr-decay": LrDecay, "batch-ramp": BatchRamp}
    kinds["momentum-ramp"] = MomentumRamp
    kinds["cosine"] = Cosine
    assert set(kinds) == set(SCHEDULES)
    for name, cls in kinds.items():
        assert type(make_schedule(name, max_epochs=20)) is cls
    ramp = make_schedule("batch-ramp", max_epochs=20, milestones=[0.3, 0.5, 0.75], factor=2)
    assert ramp.milestones == (6, 10, 15) and ramp.factor == 2.0
    assert make_schedule("lr-decay", max_epochs=3).milestones == (1, 2)
    assert make_schedule("lr-decay", max_epochs=2).milestones == (1, 1)  # both at epoch 1
    wrapped = make_schedule("batch-ramp", max_epochs=10, warmup_epochs=2, max_batch_size=64)
    assert isinstance(wrapped, Compose) and repr(wrapped.schedules[0]) == "Warmup(2)"
    assert wrapped.schedules[1].max_batch_size == 64
    mom = make_schedule("momentum-ramp", max_epochs=8, max_momentum=0.95, momentum_factor=3)
    assert (mom.max_momentum, mom.momentum_factor) == (0.95, 3.0)


def lr_decay(**kwargs):
    return make_schedule("lr-decay", max_epochs=9, **kwargs)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: LrDecay([5, 3], 2.0), ValueError, "milestones"),
        (lambda: LrDecay([0, 3], 2.0), ValueError, "milestones"),
        (lambda: LrDecay([1.5], 2.0), ValueError, "milestones"),
        (lambda: LrDecay(7, 2.0), TypeError, "milestones"),
        (lambda: LrDecay([3], 1.0), ValueError, r"`factor` must be a real number > 1, but got"),
        (lambda: LrDecay([3], "5"), TypeError, "factor"),
        (lambda: BatchRamp([3], 2.0, max_batch_size=0), ValueError, "max_batch_size"),
        (lambda: MomentumRamp([3], 2.0, max_momentum=1.0), ValueError, "max_momentum"),
        (lambda: MomentumRamp([3], 2.0, momentum_factor=0.5), ValueError, "momentum_factor"),
        (lambda: Warmup(0), ValueError, "epochs"),
        (lambda: Compose(Warmup(1), "x"), TypeError, "schedules"),
        (lambda: make_schedule("batchramp", max_epochs=5), ValueError, "batch-ramp"),
        (lambda: make_schedule("lr-decay", max_epochs=0), ValueError, "max_epochs"),
        (lambda: lr_decay(milestones=[0.5, 1.0]), ValueError, r"fractions in \(0, 1\)"),
        (lambda: lr_decay(milestones=[0.6, 0.5]), ValueError, "increasing"),
        (lambda: lr_decay(milestones="0.5"), TypeError, "milestones"),
        (lambda: lr_decay(warmup_epochs=-1), ValueError, "warmup_epochs"),
        (lambda: lr_decay(max_batch_size=0), ValueError, "max_batch_size"),  # checked anyway
        (lambda: Constant().at(-1, Hyperparameters(8, 0.1, 0.9, 100)), ValueError, "epoch"),
        (lambda: Constant().at(0, {"batch_size": 8}), TypeError, "base"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_on_fit_start_warns_what_the_user_can_fix() -> None:
    base = Hyperparameters(512, 0.1, 0.9, 4000)  # already above N/10 = 400
    with pytest.warns(UserWarning, match=r"batch_size=512 .* cap .* = 400"):
        BatchRamp([5], 2.0).on_fit_start(base, 10)
    # ... and then it behaves exactly like lr-decay.
    assert BatchRamp([5], 2.0).path(base, 10) == LrDecay([5], 2.0).path(base, 10)
    small = Hyperparameters(32, 0.1, 0.9, 4000)
    with pytest.warns(UserWarning, match=r"milestones.*\[10\]"):
        LrDecay([5, 10], 2.0).on_fit_start(small, 10)
    with pytest.warns(UserWarning, match="Warmup"):
        Warmup(10).then(Constant()).on_fit_start(small, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_schedule("momentum-ramp", max_epochs=10, warmup_epochs=2).on_fit_start(small, 10)


def test_doctests() -> None:
    assert doctest.testmod(schedules).failed == 0
