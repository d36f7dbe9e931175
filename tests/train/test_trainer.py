from __future__ import annotations

import math

import optuna
import pytest
import torch

from optuna_bs.data.datasets import load_data
from optuna_bs.data.models import build_model
from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.train.policies import CheckpointPolicy, MemoryPolicy
from optuna_bs.train.trainer import evaluate, fit, resolve_device

ATTRS = {
    "best_epoch",
    "epochs_run",
    "n_updates",
    "train_seconds",
    "samples_per_second",
    "stop_reason",
    "metric",
}


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", n_samples=400, n_features=10, n_classes=2)


def _model(data, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", data.input_shape, data.n_outputs, hidden=(16,))


def _hp(data, batch_size=32, lr=0.1, momentum=0.9):
    return Hyperparameters(batch_size, lr, momentum, data.n_train)


def test_fit_learns_and_records_everything(data):
    study = optuna.create_study()
    trial = study.ask()
    result = fit(_model(data), data, _hp(data), trial=trial, max_epochs=5, seed=0)
    assert result.best_value < 0.2  # the synthetic task is easy
    assert result.stop_reason == "completed"
    assert result.epochs_run == 5
    # Full batches only: the batch size is what the noise scale assumes.
    assert result.n_updates == 5 * (data.n_train // 32)
    assert result.samples_per_second > 0
    assert result.metric == "val_error"
    assert ATTRS <= set(trial.user_attrs)
    assert trial.user_attrs["n_updates"] == result.n_updates
    study.tell(trial, result.best_value)
    frozen = study.trials[0]
    assert sorted(frozen.intermediate_values) == [1, 2, 3, 4, 5]
    assert frozen.intermediate_values[result.best_epoch] == result.best_value


def test_fit_is_reproducible_with_a_seed(data):
    first = fit(_model(data), data, _hp(data), max_epochs=3, seed=7)
    second = fit(_model(data), data, _hp(data), max_epochs=3, seed=7)
    assert first.history == second.history


def test_early_stopping_returns_best_epoch_and_restores_its_weights(data):
    model = _model(data)
    # A large, noisy lr makes validation error bounce, so patience=1 stops early.
    result = fit(model, data, _hp(data, batch_size=16, lr=0.5), max_epochs=40, patience=1, seed=1)
    assert result.stop_reason == "early_stopped"
    assert result.epochs_run < 40
    assert result.best_value == min(result.history)
    assert result.best_epoch == result.history.index(result.best_value) + 1
    assert result.best_epoch == result.epochs_run - 1  # patience 1: the last epoch missed
    # The model holds the best epoch's weights, not the last epoch's.
    assert evaluate(model, data.x_val, data.y_val) == pytest.approx(result.best_value, abs=0)


def test_completed_trial_value_is_best_not_last(data):
    result = fit(_model(data), data, _hp(data, batch_size=16, lr=0.5), max_epochs=12, seed=3)
    assert result.best_value == min(result.history)


def test_pruner_prunes_through_ask_tell(data):
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        fit(_model(data), data, _hp(data), trial=trial, max_epochs=5)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    frozen = study.trials[0]
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert frozen.user_attrs["stop_reason"] == "pruned"
    assert frozen.user_attrs["epochs_run"] == 1
    assert list(frozen.intermediate_values) == [1]


def test_median_pruner_stops_a_bad_trial(data):
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2))

    def objective(trial):
        lr = 0.1 if trial.number < 2 else 1e-6  # the third trial barely learns
        return fit(_model(data), data, _hp(data, lr=lr), trial=trial, max_epochs=4).best_value

    study.optimize(objective, n_trials=3)
    assert [t.state for t in study.trials][:2] == [optuna.trial.TrialState.COMPLETE] * 2
    assert study.trials[2].state == optuna.trial.TrialState.PRUNED
    assert study.trials[2].user_attrs["stop_reason"] == "pruned"


def test_divergence_is_pruned_as_diverged_and_the_study_goes_on(data):
    study = optuna.create_study()

    def objective(trial):
        lr = 1e8 if trial.number == 1 else 0.1
        return fit(_model(data), data, _hp(data, lr=lr), trial=trial, max_epochs=3).best_value

    study.optimize(objective, n_trials=3)
    states = [t.state for t in study.trials]
    assert states == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.COMPLETE,
    ]
    assert study.trials[1].user_attrs["stop_reason"] == "diverged"
    assert study.trials[1].user_attrs["epochs_run"] == 1


def test_divergence_without_trial_is_returned(data):
    result = fit(_model(data), data, _hp(data, lr=1e8), max_epochs=5)
    assert result.stop_reason == "diverged"
    assert result.epochs_run == 1
    assert not math.isfinite(result.history[0])


class _OOMAtLargeBatch(torch.nn.Module):
    """A model that behaves as a GPU would when a batch of 64 or more does not fit."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if self.training and len(x) >= 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_oom_under_the_prune_policy_is_recorded_and_the_study_goes_on(data):
    study = optuna.create_study()

    def objective(trial):
        batch_size = trial.suggest_categorical("batch_size", [16, 64])
        model = _OOMAtLargeBatch(_model(data))
        hp = _hp(data, batch_size=batch_size)
        return fit(
            model, data, hp, trial=trial, max_epochs=2, memory=MemoryPolicy(on_oom="prune")
        ).best_value

    study.enqueue_trial({"batch_size": 64})
    study.enqueue_trial({"batch_size": 16})
    study.optimize(objective, n_trials=2)
    oom, ok = study.trials
    assert oom.state == optuna.trial.TrialState.PRUNED
    assert oom.user_attrs["stop_reason"] == "oom"
    assert oom.user_attrs["n_updates"] == 0
    assert ok.state == optuna.trial.TrialState.COMPLETE


def test_regression_tunes_the_validation_loss():
    data = load_data("synthetic", task="regression", n_samples=300, n_features=5)
    study = optuna.create_study()
    trial = study.ask()
    model = build_model("mlp", data.input_shape, data.n_outputs, hidden=(16,))
    result = fit(model, data, _hp(data, lr=0.01), trial=trial, max_epochs=3, metric="loss")
    assert trial.user_attrs["metric"] == "val_loss"
    expected = torch.nn.functional.mse_loss(model.eval()(data.x_val), data.y_val).item()
    assert result.best_value == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="metric"):
        fit(model, data, _hp(data), max_epochs=1, metric="error")


def test_adam_uses_its_betas(data, tmp_path):
    """The named Adam takes β1 from momentum and β2, eps from the hyperparameters."""
    hp = Hyperparameters(32, 1e-2, 0.8, data.n_train, beta2=0.99, eps=1e-6)
    trial = optuna.create_study().ask()
    ckpt = tmp_path / "adam.pt"
    result = fit(
        _model(data),
        data,
        hp,
        trial=trial,
        max_epochs=3,
        optimizer="adam",
        seed=0,
        checkpoint=ckpt,
    )
    group = torch.load(ckpt, weights_only=True)["optimizer"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.8, 0.99)
    assert group["eps"] == 1e-6
    assert trial.user_attrs["optimizer"] == "adam"
    assert (trial.user_attrs["beta2"], trial.user_attrs["eps"]) == (0.99, 1e-6)
    assert result.best_value < 0.3  # and it trains


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_epochs": 2.5}, "max_epochs"),
        ({"metric": "accuracy"}, "metric"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"device": "tpu"}, "device"),
        ({"patience": 0}, "patience"),
    ],
)
def test_bad_arguments(data, kwargs, match):
    kwargs = {"max_epochs": 1, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        fit(_model(data), data, _hp(data), **kwargs)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_a_resumed_trial_records_the_epoch_it_resumed_from(data, tmp_path):
    hp = _hp(data)
    ckpt = tmp_path / "cut.pt"
    fit(_model(data), data, hp, max_epochs=2, seed=1, checkpoint=ckpt)
    study = optuna.create_study()
    trial = study.ask()
    result = fit(
        _model(data),
        data,
        hp,
        trial=trial,
        max_epochs=4,
        seed=1,
        checkpoint=CheckpointPolicy(resume_from=ckpt),
    )
    assert result.resumed_from_epoch == 2 and result.epochs_run == 4
    assert trial.user_attrs["resumed_from_epoch"] == 2
    assert result.user_attrs()["resumed_from_epoch"] == 2
    # The checkpoint's 2 epochs are reported again, then the 2 trained now.
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3, 4]


def test_resume_from_checkpoint_continues_exactly(data, tmp_path):
    """A run cut after epoch 3 and resumed gives the uncut run's curve, epoch for epoch."""
    hp = _hp(data, batch_size=16, lr=0.05)
    whole = fit(_model(data), data, hp, max_epochs=6, seed=5)

    ckpt = tmp_path / "trial.pt"
    cut = fit(_model(data), data, hp, max_epochs=3, seed=5, checkpoint=ckpt)
    assert cut.history == whole.history[:3]
    resumed = fit(
        _model(data, seed=99),
        data,
        hp,
        max_epochs=6,
        seed=123,
        checkpoint=CheckpointPolicy(resume_from=ckpt),
    )
    assert resumed.resumed_from_epoch == 3
    assert resumed.history == whole.history
    assert resumed.n_updates == whole.n_updates
    assert resumed.best_epoch == whole.best_epoch


def test_checkpoint_is_loaded_weights_only(data, tmp_path):
    ckpt = tmp_path / "trial.pt"
    fit(_model(data), data, _hp(data), max_epochs=1, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)  # would raise on pickled code
    assert state["monitor"]["epoch"] == 1
    with pytest.raises(ValueError, match="resume_from"):
        fit(
            _model(data),
            data,
            _hp(data),
            max_epochs=1,
            checkpoint=CheckpointPolicy(resume_from=tmp_path / "missing.pt"),
        )


def test_schedule_sets_each_epoch_and_is_recorded(data, tmp_path):
    from optuna_bs.rules.formulas import noise_scale
    from optuna_bs.train.schedules import count_updates, make_schedule

    hp = _hp(data, batch_size=8, lr=0.05)
    ramp = make_schedule("batch-ramp", max_epochs=4, milestones=(0.5, 0.75), factor=2.0)
    decay = make_schedule("lr-decay", max_epochs=4, milestones=(0.5, 0.75), factor=2.0)
    study = optuna.create_study()
    trial = study.ask()
    result = fit(_model(data), data, hp, trial=trial, max_epochs=4, schedule=ramp, seed=0)
    attrs = trial.user_attrs
    assert attrs["epoch_batch_size"] == [8, 8, 16, min(32, data.n_train // 10)]  # N/10 cap
    assert (
        result.n_updates
        == count_updates(ramp, hp, 4)
        == sum(data.n_train // b for b in attrs["epoch_batch_size"])
    )
    lr_decay_path = [h.noise_scale for h in decay.path(hp, 4)]
    for g, expected in zip(attrs["epoch_noise_scale"], lr_decay_path, strict=True):
        assert g == pytest.approx(expected, rel=1e-9)
    for b, lr, m, g in zip(
        attrs["epoch_batch_size"],
        attrs["epoch_lr"],
        attrs["epoch_momentum"],
        attrs["epoch_noise_scale"],
        strict=True,
    ):
        assert g == pytest.approx(noise_scale(lr, b, data.n_train, m), rel=1e-12)
    # A run cut after epoch 3 and resumed follows the same path and curve.
    ckpt = tmp_path / "c.pt"
    fit(_model(data), data, hp, max_epochs=3, schedule=ramp, seed=0, checkpoint=ckpt)
    resumed = fit(
        _model(data),
        data,
        hp,
        max_epochs=4,
        schedule=ramp,
        seed=0,
        checkpoint=CheckpointPolicy(resume_from=ckpt),
    )
    assert resumed.history == result.history
    assert resumed.n_updates == result.n_updates


# --- the statistical batch, Datasets, accumulation and out of memory (issue: own training) ---


def _datasets(data):
    from torch.utils.data import TensorDataset

    return TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_val, data.y_val)


@pytest.mark.parametrize("source", ["tensors", "datasets"])
def test_an_update_at_a_quarter_micro_batch_equals_the_update_at_b(data, source):
    """B = 64 as 4 accumulated micro-batches of 16 gives the same weights as one batch of 64."""
    src = data if source == "tensors" else _datasets(data)
    weights = []
    for micro in ("auto", 16):
        model = _model(data, seed=3)
        result = fit(
            model, src, _hp(data, batch_size=64), max_epochs=1, seed=5, memory=MemoryPolicy(micro)
        )
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert (result.micro_batch_size, result.accumulation_steps) == (
            (64, 1) if micro == "auto" else (16, 4)
        )
    assert torch.allclose(weights[0], weights[1], atol=1e-5, rtol=0)
    assert not torch.equal(weights[0], _params(_model(data, seed=3)))  # it did train


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class _OOMAbove32(torch.nn.Module):
    """A GPU that cannot hold a forward batch of more than 32 samples, in training or not."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if len(x) > 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


@pytest.mark.parametrize("source", ["tensors", "datasets"])
def test_out_of_memory_halves_the_micro_batch_and_keeps_b(data, source):
    src = data if source == "tensors" else _datasets(data)
    study = optuna.create_study()
    trial = study.ask()
    model = _OOMAbove32(_model(data))
    result = fit(model, src, _hp(data, batch_size=128), trial=trial, max_epochs=2)
    study.tell(trial, result.best_value)
    done = study.trials[0]
    assert done.state == optuna.trial.TrialState.COMPLETE
    assert done.user_attrs["micro_batch_size"] == 32
    assert done.user_attrs["accumulation_steps"] == 4
    assert done.user_attrs["n_updates"] == 2 * (data.n_train // 128)  # B kept: 2 per epoch
    # The old policy ends the same trial "oom".
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="oom"):
        fit(
            _OOMAbove32(_model(data)),
            src,
            _hp(data, batch_size=128),
            trial=trial,
            max_epochs=2,
            memory=MemoryPolicy(on_oom="prune"),
        )
    assert trial.user_attrs["stop_reason"] == "oom"


def test_out_of_memory_at_a_micro_batch_of_one_ends_the_trial_oom(data):
    class AlwaysOOM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(10, 2)

        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    result = fit(AlwaysOOM(), data, _hp(data, batch_size=8), max_epochs=1)
    assert (result.stop_reason, result.micro_batch_size, result.n_updates) == ("oom", 1, 0)


def test_a_schedule_that_changes_b_on_datasets_gives_each_epoch_its_b():
    from optuna_bs.train.schedules import BatchRamp

    data = load_data("synthetic", n_samples=1000, n_features=10)  # N = 640: N/10 = 64

    sizes = []

    class Recorder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if self.training:
                sizes.append(len(x))
            return self.inner(x)

    study = optuna.create_study()
    trial = study.ask()
    schedule = BatchRamp([1, 2], factor=2)
    fit(
        Recorder(_model(data)),
        _datasets(data),
        _hp(data, batch_size=16),
        trial=trial,
        max_epochs=3,
        schedule=schedule,
    )
    n = data.n_train
    expected = [16] * (n // 16) + [32] * (n // 32) + [64] * (n // 64)
    assert sizes == expected
    assert trial.user_attrs["epoch_batch_size"] == [16, 32, 64]
    assert trial.user_attrs["n_updates"] == n // 16 + n // 32 + n // 64


def test_per_step_cosine_and_warmup_move_the_lr_every_update(data):
    from optuna_bs.train.schedules import Cosine, Warmup

    lrs = []

    def recording_sgd(params, hp):
        class SGD(torch.optim.SGD):
            def step(self, closure=None):
                lrs.append(self.param_groups[0]["lr"])
                return super().step(closure)

        return SGD(params, lr=hp.lr, momentum=hp.momentum)

    steps = data.n_train // 32
    fit(
        _model(data),
        data,
        _hp(data, lr=0.1),
        max_epochs=4,
        optimizer=recording_sgd,
        schedule=Warmup(1, per_step=True).then(Cosine()),
    )
    assert len(lrs) == 4 * steps
    t0, t_end = 0.5 / steps, 4 - 0.5 / steps  # each update's midpoint in epochs
    assert lrs[0] == pytest.approx(0.1 * t0 * 0.5 * (1 + math.cos(math.pi * t0 / 4)))
    assert all(a < b for a, b in zip(lrs[: steps - 1], lrs[1:steps], strict=True))  # warm-up
    assert all(a > b for a, b in zip(lrs[steps:-1], lrs[steps + 1 :], strict=True))  # decay
    assert lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * t_end / 4)))
    assert lrs[-1] > 0  # no wasted update at lr 0


def test_gradient_clipping_bounds_the_step(data):
    model = _model(data)
    before = _params(model)
    fit(
        model,
        data,
        _hp(data, batch_size=128, lr=1.0, momentum=0.0),
        max_epochs=1,
        max_grad_norm=1e-3,
    )
    # Two plain SGD updates at lr 1, each of norm at most 1e-3.
    assert (before - _params(model)).norm() <= 2e-3 + 1e-6


def test_an_infinite_max_grad_norm_is_no_clipping(data):
    # inf is a setting a study file may hold (TOML has inf), not a value to refuse.
    hp = _hp(data, batch_size=128, lr=1.0, momentum=0.0)
    plain = fit(_model(data), data, hp, max_epochs=1, seed=0)
    unclipped = fit(_model(data), data, hp, max_epochs=1, seed=0, max_grad_norm=math.inf)
    assert unclipped.history == plain.history


def test_a_dataset_fit_resumes_from_its_checkpoint_exactly(data, tmp_path):
    src = _datasets(data)
    full = fit(_model(data), src, _hp(data), max_epochs=4, seed=2)
    ckpt = tmp_path / "c.pt"
    fit(_model(data), src, _hp(data), max_epochs=2, seed=2, checkpoint=ckpt)
    resumed = fit(
        _model(data),
        src,
        _hp(data),
        max_epochs=4,
        seed=2,
        checkpoint=CheckpointPolicy(resume_from=ckpt),
    )
    assert resumed.resumed_from_epoch == 2
    assert resumed.history == pytest.approx(full.history, abs=1e-6)
    assert resumed.n_updates == full.n_updates


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"memory": MemoryPolicy(3)}, ValueError, "`micro_batch_size` must divide batch_size=32"),
        ({"loss_fn": "cross_entropy"}, TypeError, "`loss_fn` must be callable"),
        ({"max_grad_norm": -1.0}, ValueError, "max_grad_norm"),
        ({"optimizer": "lion"}, ValueError, "`optimizer` must be one of"),
        ({"optimizer": lambda p, hp: None}, TypeError, "must return a torch.optim.Optimizer"),
    ],
)
def test_bad_fit_arguments(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(_model(data), data, _hp(data), max_epochs=1, **kwargs)


def test_an_optimizer_that_ignores_the_trial_lr_warns(data):
    with pytest.warns(UserWarning, match="lr=hparams.lr"):
        fit(
            _model(data),
            data,
            _hp(data),
            max_epochs=1,
            optimizer=lambda p, hp: torch.optim.SGD(p, lr=0.5),
        )


def test_a_dataset_study_under_a_pruner_records_what_the_report_reads(data, tmp_path, capsys):
    """A (train, val) pair, a custom loss and a callable optimizer, tuned under a pruner."""
    from optuna_bs.cli import main
    from optuna_bs.search.space import BatchScalingSpace

    storage = f"sqlite:///{tmp_path / 'own.db'}"
    study = optuna.create_study(
        study_name="own",
        storage=storage,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
    )
    space = BatchScalingSpace(n_train=data.n_train, batch_size=(16, 64), noise_scale=(1, 300))
    src = _datasets(data)

    def objective(trial):
        hp = space.suggest(trial)
        return fit(
            _model(data, seed=trial.number),
            src,
            hp,
            trial=trial,
            max_epochs=3,
            loss_fn=lambda out, y: torch.nn.functional.cross_entropy(out, y, label_smoothing=0.05),
            optimizer=lambda p, hp: torch.optim.SGD(p, lr=hp.lr, momentum=hp.momentum),
        ).best_value

    study.optimize(objective, n_trials=8)
    tensor_trial = optuna.create_study().ask()
    fit(_model(data), data, space.suggest(tensor_trial), trial=tensor_trial, max_epochs=1)
    for t in study.trials:
        assert set(tensor_trial.user_attrs) <= set(t.user_attrs), t.number
    assert capsys.readouterr() is not None
    status = main(
        ["report", "--storage", storage, "--study-name", "own", "--out", str(tmp_path / "r")]
    )
    out = capsys.readouterr().out
    assert status == 0
    for cost in ("train_seconds", "n_updates"):
        section = out.split(f"vs {cost}")[1]
        assert section.splitlines()[3].lstrip().startswith("#"), out  # a trial on the front
    assert "empty:" not in out


def test_fit_ends_a_finite_collapse_diverged():
    """Saturating logits keep the loss finite while a huge lr wrecks the model."""
    data = load_data("digits")

    class Saturating(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)

        def forward(self, x):
            return 50 * torch.tanh(self.linear(x) / 50)

    torch.manual_seed(0)
    ok = fit(Saturating(), data, Hyperparameters(32, 0.05, 0.9, data.n_train), max_epochs=2)
    assert ok.stop_reason == "completed"
    torch.manual_seed(0)
    bad = fit(Saturating(), data, Hyperparameters(32, 500.0, 0.9, data.n_train), max_epochs=2)
    assert bad.stop_reason == "diverged"
    assert all(math.isfinite(v) for v in bad.history) and bad.history[0] > 0.8


def test_out_of_memory_at_an_odd_micro_batch_goes_on_to_a_divisor_of_b(data):
    """B = 100 halves 100 -> 50 -> 25 -> 10 (the largest divisor of 100 at most 12)."""

    class OOMAbove10(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if self.training and len(x) > 10:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.inner(x)

    result = fit(OOMAbove10(_model(data)), data, _hp(data, batch_size=100), max_epochs=1)
    assert (result.stop_reason, result.micro_batch_size, result.accumulation_steps) == (
        "completed",
        10,
        10,
    )
    assert result.n_updates == data.n_train // 100


def test_fit_groups_its_keywords_and_the_flat_ones_still_work_with_a_warning(data, tmp_path):
    """The device path, the checkpoint and the memory policy are groups; a flat keyword of an
    earlier release goes into its group, with a FutureWarning naming it, and trains alike."""
    hp = _hp(data, batch_size=64)
    grouped = fit(
        _model(data, seed=3),
        data,
        hp,
        max_epochs=1,
        seed=5,
        memory=MemoryPolicy(micro_batch_size=16),
        checkpoint=CheckpointPolicy(tmp_path / "a.pt"),
    )
    with pytest.warns(FutureWarning, match=r"fit\(micro_batch_size=...\) is deprecated.*memory="):
        flat = fit(_model(data, seed=3), data, hp, max_epochs=1, seed=5, micro_batch_size=16)
    assert (flat.micro_batch_size, flat.accumulation_steps) == (16, 4)
    assert flat.history == grouped.history
    with pytest.warns(FutureWarning, match="checkpoint=CheckpointPolicy"):
        resumed = fit(_model(data), data, hp, max_epochs=2, seed=5, resume_from=tmp_path / "a.pt")
    assert resumed.resumed_from_epoch == 1
    with pytest.raises(TypeError, match="unexpected keyword argument 'micro_batch'"):
        fit(_model(data), data, hp, max_epochs=1, micro_batch=16)
    with pytest.raises(TypeError, match="`memory` must be a MemoryPolicy"):
        fit(_model(data), data, hp, max_epochs=1, memory={"micro_batch_size": 16})
    with pytest.raises(ValueError, match="`on_oom` must be one of accumulate, prune"):
        MemoryPolicy(on_oom="retry")
    with pytest.raises(ValueError, match="`micro_batch_size` must be 'auto' or an integer"):
        MemoryPolicy(micro_batch_size=0)
