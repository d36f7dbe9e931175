"""plots.py: the data behind each figure, the HTML report and what is saved for the dashboard."""

from __future__ import annotations

import math
import sys

import numpy as np
import optuna
import pytest

from optuna_bs.report import _figure, plots
from optuna_bs.report.analysis import pareto_front
from optuna_bs.report.fits import fit_noise_scale, fit_scaling_rule
from optuna_bs.report.plots import (
    _curves_info,
    _lr_info,
    _noise_scale_info,
    _pareto_info,
    figures,
    plot_learning_curves,
    plot_lr_vs_batch_size,
    plot_noise_scale,
)

from .test_analysis import BATCH_SIZES, add, landscape_study, small_study


def curves_study():
    """62 trials on a linear rule, 2 of them pruned, each with 3 epochs of curve."""
    study = landscape_study(1.0, per_b=10)
    state = optuna.trial.TrialState
    for b in (16, 64):  # two pruned trials
        add(study, None, b, 0.5, state=state.PRUNED)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 62
    return _with_curves(study)


@pytest.fixture(scope="module")
def study():
    return curves_study()


def _with_curves(study):
    """A copy of the study in which every trial has 3 epochs of intermediate values."""
    copy = optuna.create_study(study_name="plots")
    for t in study.get_trials(deepcopy=False):
        start = 0.9 if t.state == optuna.trial.TrialState.PRUNED else 0.5
        copy.add_trial(
            optuna.trial.create_trial(
                state=t.state,
                value=t.value,
                user_attrs=t.user_attrs,
                intermediate_values={1: start, 2: start - 0.1, 3: start - 0.15},
            )
        )
    return copy


def test_noise_scale_info_colours_by_batch_size_and_marks_g_star(study):
    info = _noise_scale_info(study)
    assert set(info.colors) == set(BATCH_SIZES)
    assert len(set(info.colors.values())) == len(BATCH_SIZES)  # one colour each
    assert len(info.noise_scales) == len(info.errors) == len(info.batch_sizes) == 60
    fit = fit_noise_scale(study)
    assert info.best_noise_scale == fit.best_noise_scale
    assert info.interval == (fit.low, fit.high)
    assert info.reason is None and info.metric == "val_error"

    fig = plot_noise_scale(study)
    names = [t.name for t in fig.data]
    assert [f"B={b}" for b in BATCH_SIZES] == names[: len(BATCH_SIZES)]
    marker = next(t for t in fig.data if t.name.startswith("g* ="))
    assert tuple(marker.x) == (fit.best_noise_scale,) * 2
    assert fig.layout.xaxis.type == "log"
    for t in fig.data[: len(BATCH_SIZES)]:
        assert t.marker.color == info.colors[int(t.name[2:])]


def test_lr_info_draws_the_fitted_curve_its_band_and_the_rules_through_it(study):
    info = _lr_info(study)
    fit = fit_scaling_rule(study)
    assert info.fit == fit
    x = np.log(info.line_batch_sizes)
    assert info.line_batch_sizes[0] == min(BATCH_SIZES)
    assert info.line_batch_sizes[-1] == pytest.approx(max(BATCH_SIZES))
    assert info.fitted_lrs == tuple(fit.lr_at(b) for b in info.line_batch_sizes)
    assert all(
        lo <= f <= hi
        for lo, f, hi in zip(info.band_low, info.fitted_lrs, info.band_high, strict=True)
    )
    assert any(lo < hi for lo, hi in zip(info.band_low, info.band_high, strict=True))
    middle = math.log(math.sqrt(fit.batch_sizes[0] * fit.batch_sizes[-1]))
    for lrs, slope in ((info.linear_lrs, 1.0), (info.sqrt_lrs, 0.5)):
        assert np.polyfit(x, np.log(lrs), 1)[0] == pytest.approx(slope)
        # each rule passes through the fitted curve mid-range
        at_middle = np.interp(middle, x, np.log(lrs))
        assert at_middle == pytest.approx(math.log(fit.lr_at(math.exp(middle))), abs=1e-6)

    fig = plot_lr_vs_batch_size(study)
    assert (fig.layout.xaxis.type, fig.layout.yaxis.type) == ("log", "log")
    names = [t.name for t in fig.data]
    assert {"linear rule: lr ∝ B", "sqrt rule: lr ∝ √B", f"fit: {fit.model}"} <= set(names)
    for o in fit.optima:  # each batch size's best lr, in its own colour
        trace = next(t for t in fig.data if t.name.startswith(f"best lr at B={o.batch_size}"))
        assert tuple(trace.y) == (o.lr,) and trace.marker.color == info.colors[o.batch_size]
    assert fit.model in fig.layout.title.text


def test_a_batch_size_has_one_colour_in_every_figure():
    """B = 1024 has pruned trials only: it keeps its place in the palette all the same."""
    study = curves_study()
    copy = optuna.create_study(study_name="colours")
    for t in study.get_trials(deepcopy=False):
        copy.add_trial(t)
    add(copy, None, 1024, 0.5, state=optuna.trial.TrialState.PRUNED)
    noise, curves, lr = _noise_scale_info(copy), _curves_info(copy), _lr_info(copy)
    assert noise.colors == curves.colors == lr.colors == _figure.batch_size_colors(copy)
    assert set(noise.colors) == {*BATCH_SIZES, 1024}
    colours = {}
    for fig in figures(copy).values():
        for trace in fig.data:
            name = trace.name or ""
            for prefix in ("B=", "best lr at B="):
                if name.startswith(prefix) and isinstance(trace.marker.color, str):
                    b = int(name[len(prefix) :].split()[0])
                    colours.setdefault(b, set()).add(trace.marker.color)
            if name.startswith("B=") and trace.line.color is not None:
                colours.setdefault(int(name[2:]), set()).add(trace.line.color)
    assert colours and all(len(c) == 1 for c in colours.values())
    assert {b: c.pop() for b, c in colours.items()} == {b: noise.colors[b] for b in colours}


def test_unfittable_study_still_plots_and_says_why():
    study = small_study()
    lr = _lr_info(study)
    assert lr.fit is None and "a fit needs 3" in lr.reason
    assert lr.line_batch_sizes == lr.fitted_lrs == lr.linear_lrs == lr.sqrt_lrs == ()
    noise = _noise_scale_info(study)
    assert noise.best_noise_scale is not None  # g* needs 3 trials, at any batch sizes
    fig = plot_lr_vs_batch_size(study)
    assert len(fig.data) == 1  # the trials only
    assert "no curve fitted" in fig.layout.title.text
    assert "a fit needs 3" in fig.layout.annotations[0].text.replace("<br>", " ")
    empty = optuna.create_study()
    add(empty, 0.3, 64, 0.05)
    fig = plot_noise_scale(empty)
    assert not any((t.name or "").startswith("g*") for t in fig.data)
    assert "g* not fitted" in fig.layout.title.text
    assert len(figures(study)) == len(plots.FIGURES)


@pytest.mark.parametrize("x", ["train_seconds", "n_updates"])
def test_pareto_info_matches_the_analysis(study, x):
    info = _pareto_info(study, x)
    assert info.front == tuple(pareto_front(study, x))
    assert len(info.costs) == len(info.errors) == 60
    fig = plots.plot_pareto_front(study, x)
    front = fig.data[1]
    assert front.name == "Pareto front"
    assert list(front.y) == [p.error for p in info.front]


def test_a_pareto_error_axis_that_spans_decades_is_log(study):
    assert plots.plot_pareto_front(study).layout.yaxis.type != "log"  # errors 0.1..0.3
    blown = optuna.create_study()
    for error, seconds in ((0.05, 1.0), (0.08, 0.5), (40.0, 0.2)):  # one loss blew up
        add(blown, error, 32, 0.1, train_seconds=seconds)
    assert plots.plot_pareto_front(blown).layout.yaxis.type == "log"


def test_learning_curves_flag_and_dim_pruned_trials(study):
    info = _curves_info(study)
    assert len(info.curves) == 62
    pruned = [c for c in info.curves if c.pruned]
    assert [c.batch_size for c in pruned] == [16, 64]
    assert all(c.epochs == (1, 2, 3) for c in info.curves)
    assert pruned[0].values == (0.9, 0.8, 0.75)
    fig = plot_learning_curves(study)
    dim = [t for t in fig.data if t.name == "pruned"]
    bright = [t for t in fig.data if t.name != "pruned"]
    assert len(dim) == 2 and len(bright) == 60
    assert all(t.opacity < 0.5 for t in dim) and all(t.opacity > 0.5 for t in bright)
    # one legend entry per group
    assert sum(bool(t.showlegend) for t in fig.data) == 1 + len(BATCH_SIZES)


def test_plots_without_plotly_say_how_to_install_it(monkeypatch, study):
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(ImportError, match=r"pip install 'optuna-bs\[dashboard\]'"):
        plot_noise_scale(study)
    assert _noise_scale_info(study).best_noise_scale  # the data needs no plotly


@pytest.mark.parametrize(
    ("values", "ticks"),
    [
        ([20.0, 480.0], [20.0, 50.0, 100.0, 200.0, 500.0]),  # 1-2-5 on a few decades
        ([0.009, 0.4], [0.01, 0.02, 0.05, 0.1, 0.2]),
        ([1e-4, 0.9], [1e-4, 1e-3, 0.01, 0.1]),  # decades on a wide range
        ([0.76, 1.2], [0.8, 1.0, 1.2]),  # finer steps on a narrow one
    ],
)
def test_log_axes_get_full_labels_at_readable_ticks(values, ticks):
    assert _figure.log_ticks(values) == ticks


def test_every_log_axis_of_the_report_labels_each_tick_in_full(study):
    """No bare minor digit ("2" for 20 s): each log axis names every tick as its number; a
    batch-size axis ticks each power of two, the others at most 8 ticks (1-2-5, decades)."""
    log_axes = 0
    for fig in figures(study).values():
        for axis in (fig.layout.xaxis, fig.layout.yaxis):
            if axis.type != "log":
                continue
            log_axes += 1
            assert [float(t) for t in axis.ticktext] == pytest.approx(list(axis.tickvals))
            if "batch size" in axis.title.text:
                assert all(math.log2(t).is_integer() for t in axis.tickvals)
            else:  # this synthetic study's times all lie near 1 s: one tick is all there is
                assert 1 <= len(axis.tickvals) <= 8
    assert log_axes >= 3
