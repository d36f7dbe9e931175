"""Ranges that widen where the best trials pile at an edge (``optuna_bs.search.edges``)."""

from __future__ import annotations

import math

import optuna
import pytest

from optuna_bs import BatchLadderSampler, BatchScalingSpace, RangeWidening
from optuna_bs.search.edges import RANGES_ATTR, best_at_edges, edge_of, pile_at_edge, widen

# An "auto" range as the range test makes it, [g_steep / 5, 3 g_steep], and an optimum 3x below
# its lower edge: the task the range test misjudged.
G_STEEP = 150.0
LOW, HIGH = G_STEEP / 5, 3 * G_STEEP
G_STAR = LOW / 3


def _synthetic_study(seed: int, sampler: str, *, widening: bool) -> tuple[optuna.Study, dict]:
    space = BatchScalingSpace(n_train=3200, batch_size=(16, 256), noise_scale=(LOW, HIGH))
    ranges = RangeWidening({"noise_scale": space.noise_scale})

    def objective(trial):
        hp = ranges.suggest(space, trial) if widening else space.suggest(trial)
        log_b = math.log2(hp.batch_size)
        return 0.1 + 0.02 * math.log(hp.noise_scale / G_STAR) ** 2 + 0.002 * abs(log_b - 6)

    if sampler == "tpe":
        chosen = optuna.samplers.TPESampler(seed=seed)
    else:
        chosen = BatchLadderSampler(seed=seed, probe_edges=widening)
    study = optuna.create_study(sampler=chosen)
    study.optimize(objective, n_trials=30, callbacks=[ranges] if widening else [])
    return study, ranges.ranges(study)


@pytest.mark.parametrize("sampler", ["tpe", "ladder"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_study_finds_an_optimum_three_times_below_the_auto_range(sampler, seed):
    """The optimum lies 3x below the range's lower edge: the range widens there, and the
    study ends within 0.005 of the optimum's value (g within 1.65x of g*)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, ranges = _synthetic_study(seed, sampler, widening=True)
    assert ranges["noise_scale"][0] < G_STAR < ranges["noise_scale"][1] == HIGH
    assert study.best_value < 0.105
    assert abs(math.log(study.best_params["noise_scale"] / G_STAR)) < 0.5
    widened = study.user_attrs["range_widenings"]
    assert widened[0]["name"] == "noise_scale" and widened[0]["side"] == "lower"
    assert widened[0]["from"] == [LOW, HIGH]


def test_without_widening_the_same_study_is_shut_out():
    """The control: the fixed range holds the study at its lower edge, 0.02 worse."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, _ = _synthetic_study(0, "tpe", widening=False)
    assert study.best_params["noise_scale"] >= LOW
    assert study.best_value > 0.12
    words = best_at_edges(study)
    assert any("noise_scale = 30" in w and "lower edge of its range [30, 450]" in w for w in words)
    # the batch size is said as B, not as the space's log2_batch_size
    assert not any("log2_" in w for w in words)


def test_the_widened_ranges_live_in_the_study_for_every_worker_and_resume(tmp_path):
    """A second worker (or a resumed run) with the same starting ranges draws from the
    widened ones, read from the study; an interior optimum widens nothing."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = RangeWidening({"noise_scale": (LOW, HIGH)})
    study = optuna.create_study(storage=url, study_name="s")
    for g in (31.0, 32.0, 33.0, 200.0, 300.0, 400.0):
        study.add_trial(
            optuna.trial.create_trial(
                params={"noise_scale": g},
                distributions={"noise_scale": optuna.distributions.FloatDistribution(LOW, HIGH)},
                value=g / 1000,
            )
        )
    first(study, study.trials[-1])
    widened = first.ranges(study)["noise_scale"]
    assert widened == pytest.approx((LOW / math.sqrt(HIGH / LOW), HIGH))
    again = RangeWidening({"noise_scale": (LOW, HIGH)})
    loaded = optuna.load_study(study_name="s", storage=url)
    assert again.ranges(loaded) == {"noise_scale": widened}
    again(loaded, loaded.trials[-1])  # the old edge is now inside: no second widening
    assert len(loaded.user_attrs["range_widenings"]) == 1
    assert loaded.user_attrs[RANGES_ATTR] == {"noise_scale": list(widened)}


def test_the_edge_rule():
    assert edge_of(31.0, 30.0, 450.0) == "lower"
    assert edge_of(400.0, 30.0, 450.0) == "upper"
    assert edge_of(100.0, 30.0, 450.0) is None
    assert edge_of(5.0, 5.0, 5.0) is None
    points = [(0.1, 31.0), (0.11, 32.0), (0.2, 100.0), (0.3, 200.0)]
    assert pile_at_edge(points, 30.0, 450.0) is None  # fewer than MIN_TRIALS
    points.append((0.12, 300.0))
    assert pile_at_edge(points, 30.0, 450.0) == "lower"
    # the best alone at an edge is not a pile
    assert (
        pile_at_edge(
            [(0.1, 31.0), (0.11, 100.0), (0.12, 120.0), (0.3, 200.0), (0.4, 250.0)], 30, 450
        )
        is None
    )
    assert widen(16, 256, "upper", limits=(1, 1000), powers_of_two=True) == (16, 512)
    assert widen(16, 256, "lower", limits=(1, 1000), powers_of_two=True) == (4, 256)
    assert widen(16, 256, "upper", limits=(1, 400), powers_of_two=True) == (16, 256)


def test_a_space_over_other_ranges_is_checked_as_the_constructor_checks():
    space = BatchScalingSpace(n_train=1000, batch_size=(16, 64), noise_scale=(30.0, 450.0))
    wider = space.with_ranges(batch_size=(8, 256), noise_scale=(7.5, 450.0))
    assert wider.batch_sizes == [8, 16, 32, 64, 128, 256] and wider.noise_scale == (7.5, 450.0)
    assert space.batch_sizes == [16, 32, 64] and space.noise_scale == (30.0, 450.0)  # unchanged
    with pytest.raises(ValueError, match="must lie in \\[1, n_train - 1\\]"):
        space.with_ranges(batch_size=(16, 1024))
    with pytest.raises(ValueError, match="noise_scale"):
        space.with_ranges(noise_scale=(0.0, 10.0))
    with pytest.raises(ValueError, match="must hold a power of two"):
        space.with_ranges(batch_size=(17, 31))


@pytest.mark.parametrize("probe_edges", [True, False])
def test_the_ladders_search_goes_on_while_its_best_piles_at_an_edge(probe_edges):
    """Lower g is always better: after its 6 search trials the best pile at g's lower edge.
    With ``probe_edges`` the ladder searches on (up to 12 trials) instead of climbing."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = BatchScalingSpace(n_train=3200, batch_size=(16, 256), noise_scale=(LOW, HIGH))
    sampler = BatchLadderSampler(seed=0, probe_edges=probe_edges)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: math.log(space.suggest(t).noise_scale), n_trials=6)
    assert pile_at_edge([(t.value, t.params["noise_scale"]) for t in study.trials], LOW, HIGH)
    assert sampler.plan(study)["phase"] == ("search" if probe_edges else "climb")
    study.optimize(lambda t: math.log(space.suggest(t).noise_scale), n_trials=8)
    phases = [t.system_attrs["ladder"]["phase"] for t in study.trials]
    assert phases.count("search") == (12 if probe_edges else 6)
