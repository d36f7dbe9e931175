"""hp_space and the TrainerCallback, against the real ``transformers`` Trainer: a 2-layer BERT
built from a config, on random tokens, on the CPU (nothing is downloaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

import optuna_bs
from optuna_bs.integrations.transformers import TrialCallback, hp_space, training_args
from optuna_bs.vocabulary import USER_ATTRS
from tests.conftest import REPO
from tests.helpers.hf_model import Tokens, bert, model_init

TRAIN, VAL = Tokens(256, 0), Tokens(64, 1)
ARG_NAMES = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "weight_decay",
)


def adam_space() -> optuna_bs.BatchScalingSpace:
    return optuna_bs.BatchScalingSpace(
        "adam-sqrt",
        n_train=len(TRAIN),
        batch_size=(16, 64),
        lr=(1e-4, 1e-2),
        reference_batch_size=32,
        optimizer="adamw",
        tau_epochs=(10.0, 1000.0),
    )


class SeenArgs(TrainerCallback):
    """What each trial's Trainer really trained with."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.seen.append(
            {name: getattr(args, name) for name in ARG_NAMES} | {"ws": args.world_size}
        )


def search_trainer(tmp_path, search, callback, epochs=3):
    spy = SeenArgs()
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        eval_strategy="epoch",
        logging_strategy="epoch",
        num_train_epochs=epochs,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        log_level="error",
    )
    trainer = Trainer(
        model_init=model_init,
        args=args,
        train_dataset=TRAIN,
        eval_dataset=VAL,
        callbacks=[callback, spy],
    )
    return trainer, spy


class PruneSecond(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.number == 1 and (trial.last_step or 0) >= 2


@pytest.mark.slow
def test_hyperparameter_search_trains_each_trial_at_what_the_space_derived(tmp_path):
    storage = f"sqlite:///{tmp_path / 'hf.db'}"
    search = hp_space(adam_space(), max_micro_batch=16)
    callback = TrialCallback(search, patience=5)
    trainer, spy = search_trainer(tmp_path, search, callback)
    study = optuna.create_study(storage=storage, study_name="hf", pruner=PruneSecond())
    for log2_batch in (4, 5, 6):  # B = 16, 32, 64, so 1, 2 and 4 accumulation steps
        study.enqueue_trial({"log2_batch_size": log2_batch})
    trainer.hyperparameter_search(
        backend="optuna",
        hp_space=search,
        compute_objective=callback.compute_objective,
        n_trials=3,
        direction="minimize",
        storage=storage,
        study_name="hf",
        load_if_exists=True,
        pruner=PruneSecond(),
    )
    trials = optuna.load_study(study_name="hf", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert len(spy.seen) == 3
    for trial, args in zip(trials, spy.seen, strict=True):
        attrs = trial.user_attrs
        assert set(attrs) <= set(USER_ATTRS), set(attrs) - set(USER_ATTRS)  # the schema
        b = attrs["batch_size"]
        assert b == 2 ** trial.params["log2_batch_size"]
        assert args["per_device_train_batch_size"] == 16
        assert args["gradient_accumulation_steps"] == b // 16
        assert attrs["micro_batch_size"] * attrs["accumulation_steps"] * args["ws"] == b
        # The space derived lr, beta1, beta2, eps and the weight decay from tau; the Trainer
        # trained with exactly those.
        assert args["learning_rate"] == pytest.approx(attrs["lr"])
        assert args["adam_beta1"] == pytest.approx(attrs["momentum"])
        assert args["adam_beta2"] == pytest.approx(attrs["beta2"])
        assert args["adam_epsilon"] == pytest.approx(attrs["eps"])
        assert args["weight_decay"] == pytest.approx(attrs["weight_decay"])
        hp = optuna_bs.Hyperparameters(
            b,
            attrs["lr"],
            attrs["momentum"],
            n_train=len(TRAIN),
            weight_decay=attrs["weight_decay"],
        )
        assert hp.tau_epochs == pytest.approx(trial.params["tau_epochs"])
        assert attrs["optimizer"] == "adamw"
        # The run's record, as fit's; reported by epoch, never at the Trainer's global step.
        assert attrs["n_updates"] == (len(TRAIN) // b) * attrs["epochs_run"]
        assert sorted(trial.intermediate_values) == list(range(1, attrs["epochs_run"] + 1))
        assert attrs["samples_per_second"] > 0
    assert trials[1].user_attrs["stop_reason"] == "pruned"
    assert trials[1].user_attrs["epochs_run"] == 2
    for trial in (trials[0], trials[2]):
        assert trial.user_attrs["stop_reason"] == "completed"
        assert trial.value == min(trial.intermediate_values.values())  # the best epoch's


def test_training_args_retrain_the_best_run_as_its_trial_trained(tmp_path):
    """BestRun.hyperparameters are the space's (log2_batch_size, lr, tau_epochs): set on
    trainer.args they train at the defaults; training_args gives what the trial trained at."""
    search = hp_space(adam_space(), max_micro_batch=16)
    callback = TrialCallback(search)
    trainer, spy = search_trainer(tmp_path, search, callback, epochs=1)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="best")
    study.enqueue_trial({"log2_batch_size": 6, "reference_lr": 3e-3, "tau_epochs": 50.0})  # 16 x 4
    best = trainer.hyperparameter_search(
        backend="optuna",
        hp_space=search,
        n_trials=1,
        direction="minimize",
        storage=storage,
        study_name="best",
        load_if_exists=True,
    )
    fresh = TrainingArguments(output_dir=str(tmp_path / "again"), use_cpu=True, report_to="none")
    again = training_args(best, search, fresh)
    (trained,) = spy.seen
    assert {name: getattr(again, name) for name in ARG_NAMES} == pytest.approx(
        {name: trained[name] for name in ARG_NAMES}
    )
    assert again.gradient_accumulation_steps == 4 and again.learning_rate != fresh.learning_rate
    assert fresh.gradient_accumulation_steps == 1  # copied, never changed
    with pytest.raises(ValueError, match="tau_epochs"):
        training_args({"log2_batch_size": 6, "reference_lr": 3e-3}, search, fresh)


def test_a_world_size_the_trainer_does_not_have_is_refused(tmp_path):
    search = hp_space(adam_space(), world_size=2)
    callback = TrialCallback(search)
    trainer, _ = search_trainer(tmp_path, search, callback, epochs=1)
    with pytest.raises(ValueError, match=r"per-device batch \d+ x accumulation 1 x world size 1"):
        trainer.hyperparameter_search(
            backend="optuna", hp_space=search, n_trials=1, direction="minimize"
        )


def test_an_sgd_space_is_refused_for_the_trainers_adamw():
    with pytest.raises(ValueError, match="adam-sqrt"):
        hp_space(optuna_bs.BatchScalingSpace(n_train=1000))
    with pytest.raises(TypeError, match="hp_space"):
        TrialCallback(adam_space())


@pytest.mark.slow
def test_under_ddp_on_two_processes_a_pruned_trial_stops_every_rank(tmp_path):
    """The Trainer hands the trial to rank 0 alone; its own pruning would stop rank 0 and
    leave rank 1 training (transformers #18609). The callback stops both at epoch 2."""
    storage = f"sqlite:///{tmp_path / 'hf-ddp.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    done = subprocess.run(
        [
            *command,
            "2",
            str(REPO / "tests" / "helpers" / "ddp_transformers.py"),
            str(tmp_path),
            storage,
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = optuna.load_study(study_name="x", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert [t.user_attrs["epochs_run"] for t in trials] == [4, 2]  # rank 0's record
    assert json.loads((tmp_path / "rank1.json").read_text()) == [4, 2]  # rank 1 stopped too
    for t in trials:
        attrs = t.user_attrs
        assert attrs["world_size"] == 2
        assert attrs["micro_batch_size"] * attrs["accumulation_steps"] * 2 == attrs["batch_size"]
        assert sorted(t.intermediate_values) == list(range(1, attrs["epochs_run"] + 1))


class Gradient(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _first_gradient(tmp_path, per_device, accumulation, fixed=True):
    grab = Gradient()
    args = TrainingArguments(
        output_dir=str(tmp_path / "g"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        max_grad_norm=0.0,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        log_level="error",
    )
    model = bert(fixed=fixed)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    Trainer(model=model, args=args, train_dataset=TRAIN, callbacks=[grab]).train()
    return grab.grad


def test_with_accepts_loss_kwargs_off_an_accumulated_update_is_the_one_at_b(tmp_path):
    """transformers 5 scales a sequence classifier's gradient by the accumulation steps;
    model_init's fix makes 16 x 4 the update of 64 x 1 (to float rounding)."""
    whole = _first_gradient(tmp_path, 64, 1)
    torch.testing.assert_close(_first_gradient(tmp_path, 16, 4), whole, rtol=1e-4, atol=1e-6)
    unfixed = _first_gradient(tmp_path, 16, 4, fixed=False)
    assert unfixed.norm() / whole.norm() == pytest.approx(4.0, rel=1e-3)  # the bug it avoids


def test_a_model_whose_gradient_the_trainer_would_scale_is_refused_before_any_trial(tmp_path):
    """The Trainer reads accepts_loss_kwargs once, from model_init()'s model: a loss that
    ignores num_items_in_batch is refused as the Trainer is built, when the search
    accumulates; a search that never does takes the model."""
    args = TrainingArguments(
        output_dir=str(tmp_path), eval_strategy="epoch", use_cpu=True, report_to="none"
    )
    unfixed = {"args": args, "model_init": lambda: bert(fixed=False), "train_dataset": TRAIN}
    unfixed["eval_dataset"] = VAL
    callback = TrialCallback(hp_space(adam_space(), max_micro_batch=16))  # B = 64: 16 x 4
    with pytest.raises(ValueError, match=r"accepts_loss_kwargs = False in model_init\.$"):
        Trainer(**unfixed, callbacks=[callback])
    Trainer(**unfixed, callbacks=[TrialCallback(hp_space(adam_space()))])  # 1 step per update
    Trainer(**unfixed | {"model_init": model_init}, callbacks=[callback])  # the fix


def test_evaluations_by_steps_are_refused_before_any_trial(tmp_path):
    """Each evaluation is reported as an epoch: every eval_steps updates, B=16 would be
    compared after 8x fewer samples than B=128."""
    callback = TrialCallback(hp_space(adam_space()))
    for strategy in ("steps", "no"):
        args = TrainingArguments(
            output_dir=str(tmp_path), eval_strategy=strategy, use_cpu=True, report_to="none"
        )
        with pytest.raises(ValueError, match=f"eval_strategy='{strategy}'.*'epoch'"):
            Trainer(
                args=args,
                model_init=model_init,
                train_dataset=TRAIN,
                eval_dataset=VAL,
                callbacks=[callback],
            )
    search = hp_space(adam_space())
    trainer, _ = search_trainer(tmp_path, search, TrainerCallback(), epochs=1)
    trainer.args.eval_strategy = "steps"
    trainer.add_callback(TrialCallback(search))  # added late: refused as training begins
    with pytest.raises(ValueError, match="eval_strategy='steps'"):
        trainer.hyperparameter_search(
            backend="optuna", hp_space=search, n_trials=1, direction="minimize"
        )


def test_a_callback_added_after_the_trainer_was_built_refuses_it_at_training(tmp_path):
    search = hp_space(adam_space(), max_micro_batch=16)
    trainer, _ = search_trainer(tmp_path, search, TrainerCallback(), epochs=1)
    trainer.model_init = lambda trial: bert(fixed=False)
    trainer.model_accepts_loss_kwargs = True  # as if model_init() had been this one
    trainer.add_callback(TrialCallback(search))  # no on_init_end: the first trial probes
    storage = f"sqlite:///{tmp_path / 'refused.db'}"
    study = optuna.create_study(storage=storage, study_name="refused")
    study.enqueue_trial({"log2_batch_size": 6})  # B = 64: 16 x 4
    with pytest.raises(ValueError, match="accepts_loss_kwargs = False"):
        trainer.hyperparameter_search(
            backend="optuna",
            hp_space=search,
            n_trials=1,
            direction="minimize",
            storage=storage,
            study_name="refused",
            load_if_exists=True,
        )
    assert study.trials[0].state == optuna.trial.TrialState.FAIL  # before any training step


def test_the_callback_on_a_plain_train_records_nothing_and_a_foreign_search_is_named(tmp_path):
    search = hp_space(adam_space())
    callback = TrialCallback(search)
    trainer, _ = search_trainer(tmp_path, search, callback, epochs=1)
    trainer.train()  # outside any search: the callback stands by
    assert callback.monitor is None
    with pytest.raises(ValueError, match="hp_space=search"):
        trainer.hyperparameter_search(
            backend="optuna",
            hp_space=lambda trial: {"learning_rate": 1e-3},
            n_trials=1,
            direction="minimize",
        )
