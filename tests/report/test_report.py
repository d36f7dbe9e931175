"""The report: summary tables, the HTML file and what is saved for optuna-dashboard."""

from __future__ import annotations

import html
import math
import re

import optuna
import pytest

from optuna_bs.report import plots
from optuna_bs.report.analysis import pareto_front
from optuna_bs.report.plots import _curves_info
from optuna_bs.report.scaling import recommend
from optuna_bs.report.summary import save_to_dashboard, summarize, write_report

from .test_analysis import BATCH_SIZES, add, landscape_study, small_study
from .test_plots import curves_study


def test_summary_of_a_fitted_study():
    study = landscape_study(1.0, per_b=10)
    add(study, None, 64, 0.1, state=optuna.trial.TrialState.PRUNED)
    summary = summarize(study, 1024, n_bootstrap=200)
    assert (summary.n_trials, summary.n_complete, summary.n_pruned) == (61, 60, 1)
    assert summary.fit is not None and summary.fit_reason is None
    assert summary.fit.alpha == pytest.approx(1.0, abs=0.1)
    assert summary.noise is not None and summary.noise_reason is None
    assert summary.recommendation.batch_size == 1024
    assert any("outside the batch sizes" in w for w in summary.warnings)
    assert summary.good_batch_sizes and set(summary.good_batch_sizes) <= set(BATCH_SIZES)
    assert summary.transfer.source == "fit" and summary.transfer.extrapolation == 2
    text = summary.to_text()
    assert summary.fit.describe() in text and "g*" in text
    assert "best lr per batch size" in text and "B=16: " in text
    assert summary.transfer.describe() in text
    assert "Pareto front, val_error vs train_seconds" in text
    assert f"#{summary.best.number}" in text
    note = summary.to_markdown()
    assert note.startswith("## optuna-bs report") and "| lr against B |" in note


def test_good_batch_sizes_of_a_study_whose_best_error_is_zero():
    """5% of a best of 0 is no margin at all, not 5 absolute points."""
    study = optuna.create_study()
    for b, error in ((16, 0.0), (32, 0.001), (64, 0.04), (128, 0.2), (256, 0.3)):
        add(study, error, b, 0.01 * b)
    # The margin is 5% of the median trial's error (0.04): 0.002.
    assert summarize(study).good_batch_sizes == (16, 32)


def test_summary_of_a_small_study_says_why_there_is_no_fit():
    summary = summarize(small_study())
    assert summary.fit is None
    assert "2 [32, 64] beat its median trial, and a fit needs 3" in summary.fit_reason
    assert summary.noise is not None  # g* needs 3 trials at any batch sizes
    assert summary.to_text().count("not fitted") == 1
    assert summary.transfer.source == "rule" and summary.transfer.reason == summary.fit_reason
    assert "the 'noise-scale' rule moved from B=64" in summary.to_text()
    assert summary.best.batch_size == 64 and summary.warnings == ()
    empty = summarize(optuna.create_study())
    assert empty.best is None and empty.recommendation is None
    assert "not fitted" in empty.to_text()


def test_summary_of_a_two_objective_study_uses_objective_0_as_the_error():
    study = optuna.create_study(directions=["minimize", "minimize"])
    for t in landscape_study(1.0, per_b=10).get_trials(deepcopy=False):
        study.add_trial(
            optuna.trial.create_trial(values=[t.value, 1.0 / t.value], user_attrs=t.user_attrs)
        )
    summary = summarize(study, n_bootstrap=100)
    assert summary.fit.alpha == pytest.approx(1.0, abs=0.1)
    assert summary.best.error == min(t.values[0] for t in study.trials)
    front = pareto_front(study, "train_seconds")  # the attr, 1.0 for every trial
    assert [p.error for p in front] == [summary.best.error]


def test_report_is_self_contained_html_with_every_figure(tmp_path):
    study = curves_study()
    path = write_report(study, tmp_path / "out", batch_size=2048)
    assert path == tmp_path / "out" / "report-plots.html"
    page = path.read_text(encoding="utf-8")
    assert page.count('class="plotly-graph-div"') == len(plots.FIGURES)
    assert not re.search(r"<script[^>]+src=", page)  # no CDN: plotly.js is inlined
    assert page.count("Plotly.newPlot") == len(plots.FIGURES)
    summary = summarize(study, 2048)
    assert html.escape(summary.fit.describe()) in page
    assert f"{summary.noise.best_noise_scale:.3g}" in page
    assert "recommendation at B=2048" in page
    assert "Pareto front, val_error vs n_updates" in page


def test_save_to_dashboard_stores_figures_note_and_metric_name(tmp_path):
    import optuna_dashboard  # the dashboard extra, which CI installs

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="dash")

    def system_keys():  # graph objects are kept in study system attrs keyed by their id
        return set(storage.get_study_system_attrs(storage.get_study_id_from_name("dash")))

    for t in landscape_study(0.5, per_b=4).get_trials(deepcopy=False):
        study.add_trial(t)
    assert study.metric_names is None
    ids = save_to_dashboard(study, batch_size=64)
    assert ids == [f"optuna-bs-{name}" for name in plots.FIGURES]
    again = optuna.load_study(storage=storage, study_name="dash")
    assert again.metric_names == ["val_error"]
    saved = {k for k in system_keys() if "optuna-bs-" in k}
    assert all(any(i in k for k in saved) for i in ids)
    note = optuna_dashboard.get_note(again)
    assert "optuna-bs report" in note and "recommendation at B=64" in note
    save_to_dashboard(again)  # the same ids: replaced, not added
    assert {k for k in system_keys() if "optuna-bs-" in k} == saved


def test_save_to_dashboard_names_both_objectives_of_a_two_objective_study():
    study = optuna.create_study(directions=["minimize", "minimize"])
    for t in landscape_study(1.0, per_b=3).get_trials(deepcopy=False):
        study.add_trial(optuna.trial.create_trial(values=[t.value, 1.0], user_attrs=t.user_attrs))
    assert len(save_to_dashboard(study)) == len(plots.FIGURES)
    assert study.metric_names == ["val_error", "train_seconds"]
    assert _curves_info(study).curves == ()  # no intermediate values in such a study


TINY_STUDY = """
[study]
name = "{name}"
n_trials = 6
{extra}
[data]
name = "synthetic"
n_samples = 400
[model]
hidden = [16]
[space]
batch_size = [16, 64]
[train]
max_epochs = 3
"""


def _run_tiny(tmp_path, name, extra=""):
    from optuna_bs.cli import main

    path = tmp_path / f"{name}.toml"
    path.write_text(TINY_STUDY.format(name=name, extra=extra))
    assert main(["run", str(path), "-q"]) == 0
    return optuna.load_study(study_name=name, storage="sqlite:///optuna_bs.db")


def test_report_command_prints_writes_and_saves_for_the_dashboard(tmp_path, capsys):
    from optuna_bs.cli import main

    _run_tiny(tmp_path, "tiny")
    capsys.readouterr()
    assert main(["report", "--study-name", "tiny", "--dashboard", "--batch-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "best noise scale g*" in out and "recommendation at B=32" in out
    assert (tmp_path / "reports" / "report-tiny.html").exists()
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna_bs.db")
    assert study.metric_names == ["val_error"]
    storage = optuna.storages.RDBStorage("sqlite:///optuna_bs.db")
    keys = storage.get_study_system_attrs(storage.get_study_id_from_name("tiny"))
    assert any("optuna-bs-noise-scale" in k for k in keys)


def test_report_command_on_an_unknown_study_is_one_line(tmp_path, capsys):
    from optuna_bs.cli import main

    _run_tiny(tmp_path, "tiny")
    capsys.readouterr()
    assert main(["report", "--study-name", "tinny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'tinny' is not in" in err and "tiny" in err


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--batch-size", "2"], "over 4x beyond the batch sizes"),
        (["--rule", "cubic"], "`rule` must be one of"),
        (["--noise-batch-size", "0"], "--noise-batch-size"),
    ],
)
def test_report_command_refuses_bad_recommendations_in_one_line(tmp_path, capsys, argv, word):
    from optuna_bs.cli import main

    _run_tiny(tmp_path, "tiny")
    capsys.readouterr()
    assert main(["report", "--study-name", "tiny", "--out", "fresh", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and word in err
    assert not (tmp_path / "fresh" / "report-tiny.html").exists()
    # With --extrapolate the far batch size is recommended, with a warning in the table.
    if argv[0] == "--batch-size":
        assert main(["report", "--study-name", "tiny", *argv, "--extrapolate"]) == 0
        assert "recommendation at B=2" in capsys.readouterr().out


def test_two_objective_study_file(tmp_path):
    study = _run_tiny(tmp_path, "mo", 'objectives = ["val_error", "train_seconds"]')
    assert len(study.directions) == 2
    assert study.metric_names == ["val_error", "train_seconds"]
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(study.trials) == 6 and len(done) >= 3  # the rest diverged
    for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert t.user_attrs["stop_reason"] == "diverged"
    for t in done:
        assert t.values[1] == t.user_attrs["train_seconds"]
    summary = summarize(study)
    front = {p.number for p in summary.pareto_seconds}
    assert front == {t.number for t in study.best_trials}


def adam_study(n_train=50_000):
    """An AdamW study on the adam-sqrt space (τ fixed), its error lowest at lr = 3e-3 (B=32)."""
    from optuna_bs.search.space import BatchScalingSpace

    space = BatchScalingSpace(
        "adam-sqrt",
        n_train=n_train,
        batch_size=(16, 128),
        lr=(1e-4, 1e-1),
        reference_batch_size=32,
        tau_epochs=20.0,
        optimizer="adamw",
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("parameterisation", "adam-sqrt")
    study.set_user_attr("optimizer", "adamw")
    for _ in range(60):
        trial = study.ask()
        space.suggest(trial)
        ref_lr = trial.params["reference_lr"]
        study.tell(trial, 0.1 + 0.05 * math.log(ref_lr / 3e-3) ** 2)
    return study


def test_an_adam_study_is_reported_and_recommended_by_adam_sqrt():
    study = adam_study()
    summary = summarize(study, 256, n_bootstrap=100)
    assert (summary.rule, summary.family) == ("adam-sqrt", "adam")
    text = summary.to_text()
    assert "adam-sqrt, Adam family" in text
    assert "g*" not in text and "g=" not in text  # g means nothing for Adam
    for label in ("beta1=", "beta2=", "eps=", "wd=", "tau_ep="):
        assert label in text
    # The recommendation: the fitted curve's lr; β1 kept, β2 by its half-life in samples,
    # eps by √κ, τ kept (docs/design.md §3).
    at_32 = recommend(study, 32)
    r, t = summary.recommendation, summary.transfer
    kappa = 256 / 128  # moved from the nearest explored batch size
    assert t.source == "fit" and t.anchor_batch_size == 128
    assert r.lr == pytest.approx(summary.fit.lr_at(256), rel=1e-9)
    anchor = next(o for o in summary.fit.optima if o.batch_size == 128).best
    assert r.momentum == anchor.momentum
    assert r.beta2 == pytest.approx(anchor.beta2**kappa, rel=1e-9)
    assert r.eps == pytest.approx(anchor.eps / math.sqrt(kappa), rel=1e-9)
    assert r.tau_epochs == pytest.approx(20.0, rel=1e-9)
    assert at_32.lr == pytest.approx(3e-3, rel=0.3)  # B = 32's best lr
    # Its figures show error against lr, not against g.
    assert list(plots.figures(study)) == list(plots.ADAM_FIGURES)


def test_report_rule_overrides_the_study_rule():
    study = adam_study()
    summary = summarize(study, 256, rule="linear", n_bootstrap=50)
    assert summary.rule == "linear"
    assert summary.transfer.source == "rule" and summary.transfer.anchor_batch_size == 128
    at_128 = recommend(study, 128, "linear")
    assert at_128.lr == next(o.lr for o in summary.fit.optima if o.batch_size == 128)
    assert summary.recommendation.lr == pytest.approx(2 * at_128.lr)
    with pytest.raises(ValueError, match="`rule` must be one of"):
        summarize(study, 64, rule="cubic")
