"""The Lightning callback, against the real ``lightning`` package: tiny module, CPU."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
import warnings

import optuna
import pytest
import torch

import optuna_bs
from optuna_bs.cli import main as cli
from optuna_bs.integrations.lightning import TrialCallback, batch_settings
from optuna_bs.vocabulary import USER_ATTRS
from tests.conftest import REPO
from tests.helpers.lightning_model import N_TRAIN, Classifier, Data, trainer

SPACE = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 64))


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning").setLevel(logging.ERROR)


class PruneOdd(optuna.pruners.BasePruner):
    """Prunes the odd-numbered trials at their second epoch: pruned trials on purpose."""

    def prune(self, study, trial) -> bool:
        return trial.number % 2 == 1 and (trial.last_step or 0) >= 2


def run_trial(
    trial, *, max_epochs=4, micro=16, accumulate=None, per_device=None, lr=None, **kwargs
):
    hp = SPACE.suggest(trial)
    torch.manual_seed(trial.number)
    plan = batch_settings(hp, max_micro_batch=micro)
    callback = TrialCallback(trial, hp, patience=3, **kwargs)
    run = trainer(
        max_epochs,
        accumulate or plan["accumulate_grad_batches"],
        [callback],
        limit_train_batches=plan["limit_train_batches"],
    )
    run.fit(
        Classifier(lr or hp.lr, hp.momentum),
        datamodule=Data(per_device or plan["batch_size"]),
        ckpt_path=callback.ckpt_path,
    )
    return callback


def test_batch_settings_make_b_from_the_per_device_batch_and_accumulation():
    hp = optuna_bs.Hyperparameters(256, 0.1, 0.9, n_train=4000)
    # 4000 // 256 = 15 whole updates per epoch, of 4 (or, per device on 2, 2) micro-batches.
    assert batch_settings(hp, max_micro_batch=64) == {
        "batch_size": 64,
        "accumulate_grad_batches": 4,
        "limit_train_batches": 60,
    }
    assert batch_settings(hp, max_micro_batch=64, world_size=2) == {
        "batch_size": 64,
        "accumulate_grad_batches": 2,
        "limit_train_batches": 30,
    }
    assert batch_settings(hp) == {
        "batch_size": 256,
        "accumulate_grad_batches": 1,
        "limit_train_batches": 15,
    }


def test_every_update_is_a_whole_b_and_n_updates_is_fits():
    """N = 360, B = 64 in micro-batches of 16: 22 per epoch, so Lightning's 6th update would
    be 2 micro-batches whose loss it divides by 4. Refused, with the fix; with the fix, an
    epoch is 360 // 64 = 5 updates, as fit counts them."""
    from torch.utils.data import TensorDataset

    hp = optuna_bs.Hyperparameters(64, 0.05, 0.9, n_train=360)
    plan = batch_settings(hp, max_micro_batch=16)
    data = Data(plan["batch_size"])
    data.train = TensorDataset(*data.train[:360])
    with pytest.raises(ValueError, match=r"22 micro-batches .* limit_train_batches=20 \("):
        trainer(2, 4, [TrialCallback(None, hp)]).fit(Classifier(hp.lr, 0.9), datamodule=data)
    callback = TrialCallback(None, hp)
    run = trainer(2, 4, [callback], limit_train_batches=plan["limit_train_batches"])
    run.fit(Classifier(hp.lr, 0.9), datamodule=data)
    assert callback.monitor.n_updates_ == 2 * (360 // 64) == run.global_step
    assert callback.monitor.n_samples_ == 2 * 5 * 64


@pytest.mark.slow
def test_a_study_of_four_trials_prunes_records_and_reports(tmp_path):
    storage = f"sqlite:///{tmp_path / 'lightning.db'}"
    study = optuna.create_study(storage=storage, study_name="lit", pruner=PruneOdd())
    for log2_batch, g in ((4, 10.0), (5, 20.0), (6, 10.0), (5, 40.0)):
        study.enqueue_trial({"log2_batch_size": log2_batch, "noise_scale": g})
    study.optimize(lambda trial: run_trial(trial).result(), n_trials=4)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 2
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    for t in study.trials:
        attrs = t.user_attrs
        for key in ("best_epoch", "epochs_run", "n_updates", "train_seconds"):
            assert key in attrs
        assert set(attrs) <= set(USER_ATTRS), set(attrs) - set(USER_ATTRS)  # the schema
        assert attrs["samples_per_second"] > 0
        steps_per_epoch = N_TRAIN // attrs["batch_size"]  # optimizer steps, not micro-batches
        assert attrs["n_updates"] == steps_per_epoch * attrs["epochs_run"]
        assert attrs["micro_batch_size"] * attrs["accumulation_steps"] == attrs["batch_size"]
        assert attrs["optimizer"] == "sgd"
        assert sorted(t.intermediate_values) == list(range(1, attrs["epochs_run"] + 1))
        if t.state == optuna.trial.TrialState.PRUNED:
            assert attrs["stop_reason"] == "pruned" and attrs["epochs_run"] == 2
        else:  # the trial's value is its best epoch's
            assert attrs["stop_reason"] in ("completed", "early_stopped")
            assert t.value == min(t.intermediate_values.values())
            assert t.value == t.intermediate_values[attrs["best_epoch"]]
    out = tmp_path / "report"
    assert cli(["report", "--study-name", "lit", "--storage", storage, "--out", str(out)]) == 0
    assert (out / "report-lit.html").stat().st_size > 10_000


def test_a_mismatched_effective_batch_is_refused_before_training():
    trial = optuna.trial.FixedTrial({"log2_batch_size": 6, "noise_scale": 100.0})
    with pytest.raises(ValueError) as err:
        run_trial(trial, per_device=16, accumulate=2)
    message = str(err.value)
    assert "per-device batch 16 x accumulation 2 x world size 1 = 32" in message
    assert "batch_size is 64" in message
    assert "per-device batch 16 with accumulation 4" in message


def test_a_metric_that_is_not_logged_is_named():
    trial = optuna.trial.FixedTrial({"log2_batch_size": 5, "noise_scale": 100.0})
    with pytest.raises(ValueError, match="'val_acc'.*val_error"):
        run_trial(trial, monitor="val_acc")


def test_a_non_finite_training_loss_ends_the_trial_diverged(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'd.db'}")
    study.enqueue_trial({"log2_batch_size": 4, "noise_scale": 1e9})
    study.optimize(lambda t: run_trial(t, lr=1e12).result(), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "diverged"
    assert trial.user_attrs["epochs_run"] == 1
    assert trial.intermediate_values == {}  # a non-finite value is never reported


def test_a_run_stuck_at_chance_after_its_loss_blew_up_ends_diverged():
    """Labels about 35% / 50% / 15%: a collapsed model guesses the commonest class, at error
    0.5, well below 1 - 1/3 (given that, the run below ends COMPLETE). The chance value comes
    from the training labels, and the run that sits there with its loss 10x up is diverged."""
    study = optuna.create_study()
    study.enqueue_trial({"log2_batch_size": 5, "noise_scale": 20.0})
    callbacks = []
    study.optimize(lambda t: callbacks.append(run_trial(t, lr=2.0)) or callbacks[0].result(), 1)
    labels = Data(32).train.tensors[1]
    share = torch.bincount(labels).max().item() / len(labels)
    assert callbacks[0].monitor.chance_value == pytest.approx(1 - share)
    assert 0.45 < 1 - share < 0.55
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "diverged"


def test_a_retried_trial_resumes_from_the_dead_trials_lightning_checkpoint(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    study.enqueue_trial({"log2_batch_size": 5, "noise_scale": 20.0})  # a g that trains
    dead = study.ask()
    run_trial(dead, max_epochs=2, checkpoint_dir=tmp_path / "ckpt")  # then its worker died
    (folder,) = (tmp_path / "ckpt").iterdir()  # the study's own folder
    assert (folder / "trial_0.ckpt").exists()
    # What RetryHeartbeatStaleTrialCallback queues for a dead worker's trial.
    frozen = study.trials[0]
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            system_attrs={"failed_trial": 0, "retry_history": [0]},
        )
    )
    retry = study.ask()
    callback = run_trial(retry, max_epochs=4, checkpoint_dir=tmp_path / "ckpt")
    study.tell(retry, callback.result())
    assert list(folder.iterdir()) == []  # the run is over: both files went
    done = study.trials[1]
    assert done.user_attrs["resumed_from_trial"] == 0
    assert done.user_attrs["resumed_from_epoch"] == 2
    assert done.user_attrs["epochs_run"] == 4
    # The dead trial's 2 epochs came back with the checkpoint, and 2 more were trained.
    assert sorted(done.intermediate_values) == [1, 2, 3, 4]
    assert done.intermediate_values[1] == frozen.intermediate_values[1]
    steps_per_epoch = N_TRAIN // done.user_attrs["batch_size"]
    assert done.user_attrs["n_updates"] == 4 * steps_per_epoch


def test_a_retry_does_not_resume_a_same_name_studys_lightning_checkpoint(tmp_path):
    """Trial 0 of study "lit" trains 2 epochs; study "lit" in a new database loses its own
    trial 0 before any checkpoint: the retry trains afresh, not from the other's epochs."""
    params = {"log2_batch_size": 5, "noise_scale": 20.0}
    old = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", study_name="lit")
    old.enqueue_trial(params)
    run_trial(old.ask(), max_epochs=2, checkpoint_dir=tmp_path / "ckpt")
    assert len(list((tmp_path / "ckpt").rglob("trial_0.ckpt"))) == 1
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}", study_name="lit")
    study.enqueue_trial(params)
    dead = study.ask()
    SPACE.suggest(dead)
    study.tell(dead, state=optuna.trial.TrialState.FAIL)  # its worker died in epoch 1
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=study.trials[0].params,
            distributions=study.trials[0].distributions,
            system_attrs={"failed_trial": 0, "retry_history": [0]},
        )
    )
    retry = study.ask()
    callback = run_trial(retry, max_epochs=3, checkpoint_dir=tmp_path / "ckpt")
    study.tell(retry, callback.result())
    done = study.trials[1]
    assert done.params == params  # the old trial's, but not its checkpoint
    assert "resumed_from_trial" not in done.user_attrs
    assert done.user_attrs["resumed_from_epoch"] == 0
    steps_per_epoch = N_TRAIN // done.user_attrs["batch_size"]
    assert done.user_attrs["n_updates"] == 3 * steps_per_epoch  # all trained now
    assert sorted(done.intermediate_values) == [1, 2, 3]


@pytest.mark.slow
def test_under_ddp_on_two_processes_both_ranks_stop_at_the_pruned_epoch(tmp_path):
    storage = f"sqlite:///{tmp_path / 'ddp.db'}"
    name = f"lit-ddp-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(REPO / "tests" / "helpers" / "ddp_lightning.py"),
            str(tmp_path),
            storage,
            name,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert [(s["trial"], s["epochs"], s["lightning_epoch"], s["pruned"]) for s in ranks[0]] == [
        (0, 2, 2, True),
        (1, 2, 2, True),
    ]
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    for t in study.trials:
        assert t.user_attrs["world_size"] == 2
        assert t.user_attrs["epochs_run"] == 2
        # B is global: 2 ranks x 16 per device x accumulation.
        assert t.user_attrs["micro_batch_size"] == 16
        assert 2 * 16 * t.user_attrs["accumulation_steps"] == t.user_attrs["batch_size"]


def test_a_loader_that_keeps_a_short_last_batch_is_warned_about():
    from torch.utils.data import DataLoader, TensorDataset

    from optuna_bs.integrations._lightning_batches import _warn_partial_batches

    data = TensorDataset(torch.zeros(100, 2))
    with pytest.warns(UserWarning, match="drop_last=True"):
        _warn_partial_batches(DataLoader(data, batch_size=32), 32, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_partial_batches(DataLoader(data, batch_size=32, drop_last=True), 32, 1)
        _warn_partial_batches(DataLoader(data, batch_size=25), 25, 2)  # 100 = 2 x 2 x 25
