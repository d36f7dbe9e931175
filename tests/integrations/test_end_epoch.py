"""The end-of-epoch decision is one: ``TrialMonitor.end_epoch``, taken alike by ``fit``, the
Lightning callback and the Hugging Face callback.

Each is run with its validation values replaced by one script, so the three see the same
numbers: they must report the same intermediate values, stop at the same epoch for the same
reason, and (where they checkpoint) save each epoch before it is reported.
"""

from __future__ import annotations

import logging
import math

import optuna
import pytest
import torch

import optuna_bs
from optuna_bs.integrations import lightning as pl_callback
from optuna_bs.integrations import transformers as hf_callback
from optuna_bs.train.monitor import TrialMonitor
from tests.helpers.lightning_model import N_TRAIN, Classifier, Data, trainer

from .test_integrations_transformers import adam_space, search_trainer

#: The validation values every adapter sees: best at epoch 2, then three misses.
SCRIPT = [0.50, 0.40, 0.45, 0.46, 0.47, 0.48]
PATIENCE = 2  # so each run early-stops at epoch 4


class PruneAtThree(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return (trial.last_step or 0) >= 3


@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger("lightning").setLevel(logging.ERROR)


@pytest.fixture
def scripted(monkeypatch):
    """Replace each epoch's value by SCRIPT's, and record how the decision was called: the
    epoch, whether a checkpoint was kept, and how many values the trial had seen then."""
    calls = []
    real = TrialMonitor.end_epoch

    def end_epoch(self, value, *, keep=None, **kwargs):
        epoch = self.epoch_ + 1
        seen = []

        def kept():
            stored = self.trial.study._storage.get_trial(self.trial._trial_id)
            seen.append(len(stored.intermediate_values))
            keep()

        calls.append({"epoch": epoch, "kept": seen})
        return real(self, SCRIPT[epoch - 1], keep=None if keep is None else kept, **kwargs)

    monkeypatch.setattr(TrialMonitor, "end_epoch", end_epoch)
    return calls


def _fit(trial, tmp_path):
    data = optuna_bs.load_data("synthetic", n_samples=300, n_features=8, n_classes=3)
    hp = optuna_bs.Hyperparameters(32, 0.05, 0.9, n_train=data.n_train)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return optuna_bs.fit(
        model,
        data,
        hp,
        trial=trial,
        max_epochs=len(SCRIPT),
        patience=PATIENCE,
        checkpoint=tmp_path / f"fit_{trial.number}.pt",
    ).best_value


def _lightning(trial, tmp_path):
    hp = optuna_bs.Hyperparameters(32, 0.05, 0.9, n_train=N_TRAIN)
    callback = pl_callback.TrialCallback(
        trial, hp, patience=PATIENCE, checkpoint_dir=tmp_path / "pl"
    )
    plan = pl_callback.batch_settings(hp)
    run = trainer(
        len(SCRIPT),
        plan["accumulate_grad_batches"],
        [callback],
        limit_train_batches=plan["limit_train_batches"],
    )
    run.fit(Classifier(hp.lr, hp.momentum), datamodule=Data(plan["batch_size"]))
    return callback.result()


def _transformers(pruner, tmp_path) -> optuna.trial.FrozenTrial:
    """One trial of ``Trainer.hyperparameter_search``, which makes its own study."""
    search = hf_callback.hp_space(adam_space())
    callback = hf_callback.TrialCallback(search, patience=PATIENCE)
    run, _ = search_trainer(tmp_path, search, callback, epochs=len(SCRIPT))
    storage = f"sqlite:///{tmp_path / 'hf.db'}"
    study = optuna.create_study(storage=storage, study_name="hf")
    study.enqueue_trial({"log2_batch_size": 5, "reference_lr": 1e-3, "tau_epochs": 100.0})
    try:
        run.hyperparameter_search(
            backend="optuna",
            hp_space=search,
            compute_objective=callback.compute_objective,
            n_trials=1,
            direction="minimize",
            storage=storage,
            study_name="hf",
            load_if_exists=True,
            pruner=pruner,
        )
    except ValueError as err:  # its search then asks for the best trial: a pruned one is none
        if "Record does not exist" not in str(err):
            raise
    (trial,) = optuna.load_study(study_name="hf", storage=storage).trials
    return trial


ADAPTERS = {"fit": _fit, "lightning": _lightning}


def _run(adapter, pruner, tmp_path) -> optuna.trial.FrozenTrial:
    if adapter == "transformers":
        return _transformers(pruner, tmp_path)
    study = optuna.create_study(pruner=pruner)
    study.optimize(lambda trial: ADAPTERS[adapter](trial, tmp_path), n_trials=1)
    return study.trials[0]


@pytest.mark.parametrize("adapter", ["fit", "lightning", "transformers"])
def test_every_adapter_early_stops_through_the_one_decision(adapter, scripted, tmp_path):
    trial = _run(adapter, optuna.pruners.NopPruner(), tmp_path)
    assert [c["epoch"] for c in scripted] == [1, 2, 3, 4]  # the decision, once an epoch
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.intermediate_values == {1: 0.50, 2: 0.40, 3: 0.45, 4: 0.46}
    assert trial.value == 0.40
    attrs = trial.user_attrs
    assert (attrs["stop_reason"], attrs["best_epoch"], attrs["epochs_run"]) == (
        "early_stopped",
        2,
        4,
    )
    if adapter != "transformers":  # the HF Trainer checkpoints by its own save_strategy
        # Each epoch's checkpoint was saved before its value reached the trial.
        assert [c["kept"] for c in scripted] == [[0], [1], [2], [3]]


@pytest.mark.parametrize("adapter", ["fit", "lightning", "transformers"])
def test_every_adapter_is_pruned_through_the_one_decision(adapter, scripted, tmp_path):
    trial = _run(adapter, PruneAtThree(), tmp_path)
    assert [c["epoch"] for c in scripted] == [1, 2, 3]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.50, 2: 0.40, 3: 0.45}
    assert (trial.user_attrs["stop_reason"], trial.user_attrs["epochs_run"]) == ("pruned", 3)


def test_the_decision_shares_keeps_then_reports_and_defers_a_prune():
    study = optuna.create_study(pruner=PruneAtThree())
    trial = study.ask()
    monitor = TrialMonitor(trial, patience=None)
    shared, order = [], []

    def share(numbers):
        shared.append(numbers)
        return numbers

    def keep():
        order.append(len(study.trials[0].intermediate_values))

    for value in (0.5, 0.4):
        assert monitor.end_epoch(value, train_loss=1.0, share=share, keep=keep) is False
    assert order == [0, 1]  # kept before each report
    assert shared[0] == (0.5, 1.0, None) and shared[1] is False  # numbers, then the verdict
    with pytest.raises(optuna.TrialPruned):
        monitor.end_epoch(0.45, train_loss=1.0)
    deferred = TrialMonitor(study.ask(), patience=None)
    for value in (0.5, 0.4):
        deferred.end_epoch(value, defer_prune=True)
    assert deferred.end_epoch(0.45, defer_prune=True) is True
    assert isinstance(deferred.pruned_, optuna.TrialPruned)
    # A non-finite training loss is the epoch's value: the run diverged.
    lost = TrialMonitor(None, patience=None)
    assert lost.end_epoch(0.3, train_loss=math.inf) is True
    assert lost.stop_reason_ == "diverged" and lost.history_ == [math.inf]
