"""Tests for optuna_bs.train.monitor: early stopping, and pruning driven by real Optuna pruners."""

from __future__ import annotations

import doctest
import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import optuna_bs.train.monitor
from optuna_bs.train.monitor import STOP_REASONS, TrialMonitor

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run(monitor: TrialMonitor, values: list[float]) -> int | None:
    """Feed values as a training loop would; return the 1-based epoch that stopped, if any."""
    for epoch, value in enumerate(values, start=1):
        if monitor.step(value):
            return epoch
    return None


# --- early stopping ------------------------------------------------------------------------

# (values, patience, min_delta, stop epoch, best value, best epoch)
EARLY_STOPPING = {
    # The docstring's case: two epochs without a new best.
    "docstring": ([0.5, 0.4, 0.45, 0.41], 2, 0.0, 4, 0.4, 2),
    # A new best at epoch 5 resets the count; the best is not the last value.
    "reset-by-improvement": ([1.0, 0.9, 0.8, 0.85, 0.7, 0.75, 0.76, 0.77], 3, 0.0, 8, 0.7, 5),
    # Equal is not better.
    "plateau": ([0.5, 0.5, 0.5], 2, 0.0, 3, 0.5, 1),
    "patience-1": ([0.3, 0.4, 0.2], 1, 0.0, 2, 0.3, 1),
    # Strictly decreasing: never stops without min_delta ...
    "no-min-delta": ([1.0, 0.95, 0.92, 0.85, 0.84, 0.83, 0.80], 3, 0.0, None, 0.80, 7),
    # ... but steps smaller than min_delta = 0.1 are misses: only 0.85 (< 1.0 − 0.1) resets.
    "min-delta": ([1.0, 0.95, 0.92, 0.85, 0.84, 0.83, 0.80], 3, 0.1, 7, 0.85, 4),
    # No patience: never stops early, whatever happens.
    "no-patience": ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], None, 0.0, None, 0.1, 1),
}


@pytest.mark.parametrize(
    ("values", "patience", "min_delta", "stop", "best", "best_epoch"),
    list(EARLY_STOPPING.values()),
    ids=list(EARLY_STOPPING),
)
def test_early_stopping(
    values: list[float],
    patience: int | None,
    min_delta: float,
    stop: int | None,
    best: float,
    best_epoch: int,
) -> None:
    monitor = TrialMonitor(None, patience=patience, min_delta=min_delta)
    assert run(monitor, values) == stop
    assert monitor.best_value_ == best
    assert monitor.best_epoch_ == best_epoch
    assert monitor.epoch_ == (stop or len(values))
    assert monitor.history_ == values[: monitor.epoch_]
    assert monitor.stop_reason_ == ("early_stopped" if stop else None)


def test_improved_flags_and_misses() -> None:
    monitor = TrialMonitor(None, patience=10)
    improved, misses = [], []
    for value in (1.0, 0.9, 0.8, 0.85, 0.7, 0.75, 0.76):
        monitor.step(value)
        improved.append(monitor.improved_)
        misses.append(monitor.misses_)
    assert improved == [True, True, True, False, True, False, False]
    assert misses == [0, 0, 0, 1, 0, 1, 2]


def test_reset_lets_one_monitor_fit_twice() -> None:
    first, second = [0.5, 0.4, 0.45, 0.41], [0.9, 0.8, 0.95, 0.7, 0.71, 0.72]
    monitor = TrialMonitor(None, patience=2)
    assert run(monitor, first) == 4
    monitor.reset()
    assert (monitor.epoch_, monitor.best_value_, monitor.best_epoch_, monitor.misses_) == (
        0,
        math.inf,
        0,
        0,
    )
    assert monitor.stop_reason_ is None and monitor.history_ == []
    # Without the reset, 0.9 and 0.8 would be misses against 0.4 and it would stop at epoch 2.
    assert run(monitor, second) == 6
    fresh = TrialMonitor(None, patience=2)
    assert run(fresh, second) == 6
    for attr in ("epoch_", "best_value_", "best_epoch_", "misses_", "stop_reason_", "history_"):
        assert getattr(monitor, attr) == getattr(fresh, attr), attr
    assert monitor.best_value_ == 0.7 and monitor.best_epoch_ == 4


# --- pruning through a real study ----------------------------------------------------------


def complete_trial(study: optuna.Study, values: list[float]) -> None:
    trial = study.ask()
    monitor = TrialMonitor(trial)
    assert run(monitor, values) is None
    study.tell(trial, monitor.best_value_)


def test_median_pruner_prunes_a_bad_trial() -> None:
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    study = optuna.create_study(pruner=pruner)
    complete_trial(study, [0.30, 0.20, 0.10])
    complete_trial(study, [0.32, 0.22, 0.12])
    assert study.trials[0].intermediate_values == {1: 0.30, 2: 0.20, 3: 0.10}
    assert study.trials[0].value == 0.10

    # Below the median at every epoch: never pruned, completes.
    complete_trial(study, [0.28, 0.15, 0.05])
    assert study.trials[-1].state == TrialState.COMPLETE

    trial = study.ask()
    monitor = TrialMonitor(trial, patience=10, metric="val_loss")
    assert monitor.step(0.25) is False  # better than the median at epoch 1
    with pytest.raises(optuna.TrialPruned, match=r"epoch 2\b"):
        monitor.step(0.90)  # far worse than the median at epoch 2
    assert monitor.stop_reason_ == "pruned"
    assert trial.user_attrs["stop_reason"] == "pruned"
    study.tell(trial, state=TrialState.PRUNED)

    frozen = study.trials[-1]
    assert frozen.state == TrialState.PRUNED
    assert frozen.user_attrs["stop_reason"] == "pruned"
    assert frozen.user_attrs["metric"] == "val_loss"
    assert frozen.intermediate_values == {1: 0.25, 2: 0.90}


def test_no_pruning_before_startup_trials() -> None:
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    study = optuna.create_study(pruner=pruner)
    complete_trial(study, [0.1, 0.1])
    # Only one trial completed: the pruner must not act, however bad this one is.
    complete_trial(study, [5.0, 9.0])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_diverged_with_trial_is_pruned(bad: float) -> None:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    monitor = TrialMonitor(trial)
    assert monitor.step(0.5) is False
    with pytest.raises(optuna.TrialPruned, match=r"diverged.*epoch 2\b"):
        monitor.step(bad)
    assert monitor.stop_reason_ == "diverged"
    study.tell(trial, state=TrialState.PRUNED)
    frozen = study.trials[-1]
    assert frozen.state == TrialState.PRUNED
    assert frozen.user_attrs["stop_reason"] == "diverged"
    assert frozen.intermediate_values[1] == 0.5


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_diverged_without_trial_returns_true(bad: float) -> None:
    monitor = TrialMonitor(None, patience=None)
    assert monitor.step(0.5) is False
    assert monitor.step(bad) is True
    assert monitor.stop_reason_ == "diverged"
    assert monitor.best_value_ == 0.5 and monitor.best_epoch_ == 1


def test_stop_for_oom_records_reason() -> None:
    study = optuna.create_study()
    trial = study.ask()
    monitor = TrialMonitor(trial)
    monitor.step(0.4)
    with pytest.raises(optuna.TrialPruned, match="oom"):
        monitor.stop("oom", "CUDA out of memory at epoch 2")
    assert trial.user_attrs["stop_reason"] == "oom"
    with pytest.raises(ValueError, match="reason"):
        monitor.stop("bored", "no reason")
    assert "oom" in STOP_REASONS


# --- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(patience=0), ValueError, "`patience`"),
        (dict(patience=-3), ValueError, "`patience`"),
        (dict(patience=1.5), TypeError, "`patience`"),
        (dict(patience=True), TypeError, "`patience`"),
        (dict(patience="5"), TypeError, "`patience`"),
        (dict(min_delta=-1), ValueError, "`min_delta`"),
        (dict(min_delta=-1e-9), ValueError, "`min_delta`"),
        (dict(min_delta=math.nan), ValueError, "`min_delta`"),
        (dict(min_delta="0.1"), TypeError, "`min_delta`"),
        (dict(min_delta=True), TypeError, "`min_delta`"),
        (dict(collapse_factor=1.0), ValueError, "`collapse_factor`"),
        (dict(collapse_factor=math.nan), ValueError, "`collapse_factor`"),
        (dict(collapse_factor="3"), TypeError, "`collapse_factor`"),
        (dict(max_epochs=0), ValueError, "`max_epochs`"),
        (dict(max_epochs=2.5), TypeError, "`max_epochs`"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        TrialMonitor(None, **kwargs)


def test_an_infinite_collapse_factor_or_min_delta_is_accepted() -> None:
    # inf is a setting (never a collapse; never an improvement), not a typo to refuse.
    monitor = TrialMonitor(None, collapse_factor=math.inf, min_delta=math.inf, patience=1)
    assert monitor.collapse_factor == monitor.min_delta == math.inf
    assert run(monitor, [1.0, 0.1]) == 1  # nothing improves by inf: patience 1 ends it at once


def test_numpy_min_delta_is_accepted() -> None:
    # A value read from a numpy array (float32 is no Python float) is still a number.
    monitor = TrialMonitor(None, patience=1, min_delta=np.float32(0.25))
    assert isinstance(monitor.min_delta, float)
    assert run(monitor, [1.0, 0.8]) == 2  # 0.2 < 0.25: a miss


def test_module_doctests() -> None:
    result = doctest.testmod(optuna_bs.train.monitor)
    assert result.attempted > 0
    assert result.failed == 0


# --- the record of every end -----------------------------------------------------------------

RUN_ATTRS = set(optuna_bs.train.monitor.RUN_ATTRS)


@pytest.mark.parametrize(
    ("values", "patience", "max_epochs", "reason", "state"),
    [
        ([0.5, 0.4, 0.3], None, 3, "completed", TrialState.COMPLETE),
        ([0.5, 0.6, 0.7], 2, None, "early_stopped", TrialState.COMPLETE),
        ([0.5, math.nan], None, None, "diverged", TrialState.PRUNED),
    ],
)
def test_every_end_records_the_run(values, patience, max_epochs, reason, state) -> None:
    study = optuna.create_study()

    def objective(trial):
        monitor = TrialMonitor(trial, patience=patience, max_epochs=max_epochs)
        for v in values:
            if monitor.step(v, updates=10, samples=320):
                break
        return monitor.best_value_

    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == state
    assert RUN_ATTRS <= set(t.user_attrs)
    assert t.user_attrs["stop_reason"] == reason
    assert t.user_attrs["n_updates"] == 10 * t.user_attrs["epochs_run"]
    assert t.user_attrs["samples_per_second"] > 0
    assert t.user_attrs["best_epoch"] == (3 if reason == "completed" else 1)


def test_pruned_run_is_recorded_and_a_with_block_records_completion() -> None:
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.5))

    def objective(trial):
        with TrialMonitor(trial) as monitor:
            for v in [0.9] if trial.number == 0 else [0.4, 0.3]:
                monitor.step(v, updates=5)
        return monitor.best_value_

    study.optimize(objective, n_trials=2)
    pruned, done = study.trials
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["stop_reason"] == "pruned"
    assert pruned.user_attrs["epochs_run"] == 1 and pruned.user_attrs["n_updates"] == 5
    assert done.user_attrs["stop_reason"] == "completed"
    assert (done.user_attrs["best_epoch"], done.user_attrs["n_updates"]) == (2, 10)


def test_maximize_direction_keeps_the_highest() -> None:
    study = optuna.create_study(direction="maximize")
    monitor = TrialMonitor(study.ask(), patience=1, direction="maximize", metric="val_accuracy")
    assert run(monitor, [0.6, 0.8, 0.7]) == 3
    assert (monitor.best_value_, monitor.best_epoch_) == (0.8, 2)
    with pytest.raises(ValueError, match="study's is 'minimize'"):
        TrialMonitor(optuna.create_study().ask(), direction="maximize")


def test_an_own_loop_study_gives_a_report_with_both_pareto_fronts(tmp_path, capsys) -> None:
    """A user's loop with TrialMonitor: `optuna-bs report` prints both fronts, none empty."""
    import torch

    from optuna_bs import BatchScalingSpace, load_data
    from optuna_bs.cli import main

    data = load_data("synthetic", n_samples=300, n_features=6)
    space = BatchScalingSpace(n_train=data.n_train, batch_size=(8, 64), noise_scale=(1, 300))
    storage = f"sqlite:///{tmp_path / 'loop.db'}"
    study = optuna.create_study(study_name="loop", storage=storage)

    def objective(trial):
        hp = space.suggest(trial)
        torch.manual_seed(trial.number)
        model = torch.nn.Linear(6, 2)
        opt = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum)
        steps = data.n_train // hp.batch_size
        with TrialMonitor(trial, patience=2) as monitor:
            for _ in range(3):
                perm = torch.randperm(data.n_train)
                for i in range(steps):
                    idx = perm[i * hp.batch_size : (i + 1) * hp.batch_size]
                    opt.zero_grad()
                    loss = torch.nn.functional.cross_entropy(
                        model(data.x_train[idx]), data.y_train[idx]
                    )
                    loss.backward()
                    opt.step()
                err = (model(data.x_val).argmax(1) != data.y_val).float().mean().item()
                if monitor.step(err, updates=steps, samples=steps * hp.batch_size):
                    break
        return monitor.best_value_

    study.optimize(objective, n_trials=6)
    capsys.readouterr()
    assert (
        main(
            ["report", "--storage", storage, "--study-name", "loop", "--out", str(tmp_path / "r")]
        )
        == 0
    )
    out = capsys.readouterr().out
    for cost in ("train_seconds", "n_updates"):
        assert out.split(f"vs {cost}")[1].splitlines()[3].lstrip().startswith("#"), out
    assert "empty:" not in out


def test_a_loop_that_records_nothing_gets_a_report_that_says_why(tmp_path, capsys) -> None:
    from optuna_bs import BatchScalingSpace
    from optuna_bs.cli import main
    from optuna_bs.report.plots import plot_pareto_front

    storage = f"sqlite:///{tmp_path / 'bare.db'}"
    study = optuna.create_study(study_name="bare", storage=storage)
    space = BatchScalingSpace(n_train=1000, batch_size=(8, 64))
    for i in range(4):  # the pre-monitor glue: space attrs only, no n_updates or seconds
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.5 - 0.01 * i)
    assert (
        main(
            ["report", "--storage", storage, "--study-name", "bare", "--out", str(tmp_path / "r")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "empty: no COMPLETE trial records `n_updates`" in out
    fig = plot_pareto_front(study, "n_updates")
    assert "Nothing to draw" in fig.layout.annotations[0].text
    assert fig.layout.xaxis.visible is False


def test_a_finite_collapse_ends_the_run_diverged() -> None:
    """Training loss 10x up with no validation gain: diverged, though every value is finite."""
    study = optuna.create_study()
    trial = study.ask()
    monitor = TrialMonitor(trial, chance_value=0.9)  # 10 classes
    monitor.reference_loss_ = 2.3  # the first update's loss, as fit sets it
    assert monitor.step(0.80, train_loss=40.0) is False  # one epoch cannot tell
    assert monitor.step(0.5, train_loss=30.0) is False  # up 10x, but validation improved
    assert monitor.step(0.82, train_loss=40.0) is False  # no gain, but not at chance
    with pytest.raises(optuna.TrialPruned, match="over 10x the first"):
        monitor.step(0.9, train_loss=40.0)
    assert trial.user_attrs["stop_reason"] == "diverged"
    healthy = TrialMonitor(None)
    assert [healthy.step(v, train_loss=loss) for v, loss in ((0.6, 2.0), (0.5, 1.0))] == [
        False,
        False,
    ]
