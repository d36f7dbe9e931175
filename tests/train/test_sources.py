from __future__ import annotations

import doctest

import optuna
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from optuna_bs import CheckpointPolicy, Datasets, Hyperparameters, Metric, fit
from optuna_bs.cli import main
from optuna_bs.data.models import build_model
from optuna_bs.train import sources
from optuna_bs.train.sources import as_source, batch_len, split, unpack


def test_doctests():
    assert doctest.testmod(sources).failed == 0


def _pair(n=200, features=6, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long() * (classes - 2)
    cut = int(0.8 * n)
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


class DictDataset(Dataset):
    """Items as dicts, the shape Hugging Face datasets give."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {"features": x, "label": y}


def test_unpack_pairs_and_dicts():
    x, y = torch.zeros(4, 2), torch.arange(4)
    assert unpack((x, y))[1] is y
    assert unpack({"input_ids": x, "labels": y})[0] is x
    inputs, targets = unpack({"input_ids": x, "attention_mask": x, "labels": y})
    assert set(inputs) == {"input_ids", "attention_mask"} and targets is y
    with pytest.raises(TypeError, match="batch_loss"):
        unpack((x, y, y))
    with pytest.raises(TypeError, match="dict with keys \\['a'\\]"):
        unpack({"a": x})


def test_split_keeps_structure_and_views():
    x, y = torch.arange(16.0).reshape(8, 2), torch.arange(8)
    parts = split({"x": x, "meta": (y, ["a"] * 8), "y": y}, 2)
    assert len(parts) == 4
    assert parts[1]["x"].tolist() == [[4.0, 5.0], [6.0, 7.0]]
    assert parts[3]["meta"][1] == ["a", "a"]
    assert parts[0]["x"].data_ptr() == x.data_ptr()  # a view, not a copy
    assert batch_len(parts[2]) == 2


def test_datasets_infer_task_shape_and_classes():
    train, val = _pair()
    ds = Datasets(train, val)
    assert (ds.n_train, ds.task, ds.input_shape, ds.n_outputs) == (160, "classification", (6,), 3)
    reg = Datasets(TensorDataset(torch.randn(10, 2), torch.randn(10, 4)), train)
    assert (reg.task, reg.n_outputs) == ("regression", 4)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([1, 2], None), {}, TypeError, "`val` must be a torch.utils.data.Dataset"),
        ((None, None), {}, TypeError, "`train` must be"),
        ((), {"num_workers": -1}, ValueError, "num_workers"),
        ((), {"task": "ranking"}, ValueError, "`task` must be one of"),
        ((), {"collate_fn": 3}, TypeError, "collate_fn"),
    ],
)
def test_bad_datasets(args, kwargs, error, match):
    train, val = _pair()
    if args == ([1, 2], None):
        args = (train, object())
    elif args == (None, None):
        args = (object(), val)
    else:
        args = (train, val)
    with pytest.raises(error, match=match):
        Datasets(*args, **kwargs)


def test_iterable_dataset_is_refused():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from ()

    with pytest.raises(TypeError, match="map-style"):
        Datasets(Stream(), _pair()[1])


def test_as_source_rejects_other_data():
    with pytest.raises(TypeError, match="`data` must be an optuna_bs.Data"):
        as_source({"x": 1})


def test_epoch_batches_are_full_seeded_and_cover_distinct_samples():
    train, val = _pair(n=250)  # 200 training samples: 6 full batches of 32, 8 left out
    source = as_source((train, val))
    gen = torch.Generator().manual_seed(3)
    batches = list(source.train_batches(32, 200 // 32, gen, pin=False))
    assert [len(b[0]) for b in batches] == [32] * 6
    seen = torch.cat([b[0] for b in batches])
    assert len({tuple(r.tolist()) for r in seen}) == 192  # no sample twice in an epoch
    again = list(source.train_batches(32, 6, torch.Generator().manual_seed(3), pin=False))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


class _Recorder(torch.nn.Module):
    """Records the size of each training forward batch, epoch by epoch."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, x):
        if self.training:
            self.sizes.append(len(x))
        return self.inner(x)


def test_dict_items_with_a_custom_loss_and_a_callable_optimizer():
    train, val = _pair()
    ds = Datasets(DictDataset(train), DictDataset(val))
    calls = []

    def smooth_ce(out, y):
        calls.append(len(y))
        return torch.nn.functional.cross_entropy(out, y, label_smoothing=0.1)

    def adamw(params, hp):
        return torch.optim.AdamW(params, lr=hp.lr, betas=(hp.momentum, 0.999), weight_decay=0.01)

    torch.manual_seed(0)
    model = build_model("mlp", ds.input_shape, ds.n_outputs, hidden=(16,))
    hp = Hyperparameters(16, 0.01, 0.9, ds.n_train)
    result = fit(model, ds, hp, max_epochs=3, loss_fn=smooth_ce, optimizer=adamw, seed=0)
    assert set(calls) == {16} and len(calls) == 3 * (160 // 16)
    assert result.n_updates == 30 and result.best_value < 0.5


def test_batch_loss_hook_for_batches_of_another_shape():
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    triple = TensorDataset(x, y, torch.ones(64))  # (x, y, weight): not a pair
    model = torch.nn.Linear(3, 2)

    def weighted(net, batch):
        xb, yb, wb = batch
        return (torch.nn.functional.cross_entropy(net(xb), yb, reduction="none") * wb).mean()

    with pytest.raises(TypeError, match="batch_loss"):
        fit(model, (triple, triple), Hyperparameters(8, 0.1, 0.9, 64), max_epochs=1)
    result = fit(
        model,
        (triple, triple),
        Hyperparameters(8, 0.1, 0.9, 64),
        max_epochs=2,
        batch_loss=weighted,
        metric="loss",
    )
    assert result.epochs_run == 2 and result.metric == "val_loss"


def test_metric_that_is_maximised():
    train, val = _pair()
    accuracy = Metric(
        lambda out, y: (out.argmax(1) == y).float().mean(), "val_accuracy", lower_is_better=False
    )
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    model = build_model("mlp", (6,), 3, hidden=(16,))
    result = fit(
        model,
        (train, val),
        Hyperparameters(16, 0.1, 0.9, 160),
        trial=trial,
        max_epochs=3,
        metric=accuracy,
    )
    assert result.best_value == max(result.history) > 0.5
    assert trial.user_attrs["metric"] == "val_accuracy"
    with pytest.raises(ValueError, match="the study's is 'minimize'"):
        fit(
            model,
            (train, val),
            Hyperparameters(16, 0.1, 0.9, 160),
            trial=optuna.create_study().ask(),
            max_epochs=1,
            metric=accuracy,
        )
    with pytest.raises(TypeError, match="wrap it as optuna_bs.Metric"):
        fit(
            model,
            (train, val),
            Hyperparameters(16, 0.1, 0.9, 160),
            max_epochs=1,
            metric=lambda o, y: 0.0,
        )


def test_num_workers_loader_gives_the_same_run_as_in_process():
    train, val = _pair()
    results = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = build_model("mlp", (6,), 3, hidden=(8,))
        ds = Datasets(train, val, num_workers=workers)
        results.append(fit(model, ds, Hyperparameters(32, 0.1, 0.9, 160), max_epochs=2, seed=1))
    assert results[0].history == pytest.approx(results[1].history, abs=1e-6)


def test_unpackable_items_in_a_study_file_are_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "badfactory.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def make():\n"
        "    x = torch.randn(50, 3)\n"
        "    ds = TensorDataset(x, x, x)\n"
        "    return ds, ds\n"
        "def wrong():\n"
        "    return {'train': 1}\n"
    )
    for name, word in (("make", "batch_loss"), ("wrong", "returned 'dict'")):
        study = tmp_path / f"{name}.toml"
        study.write_text(f'[data]\nname = "badfactory:{name}"\n[model]\nname = "mlp"\n')
        status = main(["run", str(study)])
        err = capsys.readouterr().err
        assert status == 2 and len(err.splitlines()) == 1 and word in err, err
        assert not (tmp_path / "optuna_bs.db").exists()


def test_a_resumed_fit_with_loader_workers_and_dropout_replays_the_same_epochs(tmp_path):
    """Worker seeds come from fit's checkpointed generator, not torch's global one."""
    train, val = _pair(n=300)
    ds = Datasets(train, val, num_workers=1)

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 3)
        )

    hp = Hyperparameters(16, 0.05, 0.9, 240)
    kwargs = {"seed": 4, "metric": "loss"}
    full = fit(model(), ds, hp, max_epochs=4, **kwargs)
    fit(model(), ds, hp, max_epochs=2, checkpoint=tmp_path / "c.pt", **kwargs)
    torch.manual_seed(123)  # whatever the global generator holds by then
    resumed = fit(
        model(),
        ds,
        hp,
        max_epochs=4,
        **kwargs,
        checkpoint=CheckpointPolicy(resume_from=tmp_path / "c.pt"),
    )
    assert resumed.history == full.history


def test_misleading_shapes_get_messages_that_say_what_to_do():
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    with pytest.raises(TypeError, match="pair of tensors"):
        fit(torch.nn.Linear(3, 2), (x, y), Hyperparameters(8, 0.1, 0.9, 40), max_epochs=1)
    triple = TensorDataset(x, y, torch.ones(40))

    def weighted(net, batch):
        return torch.nn.functional.cross_entropy(net(batch[0]), batch[1])

    with pytest.raises(TypeError, match="use metric='loss'"):
        fit(
            torch.nn.Linear(3, 2),
            (triple, triple),
            Hyperparameters(8, 0.1, 0.9, 40),
            max_epochs=1,
            batch_loss=weighted,
        )


def test_the_validation_loader_is_built_once(monkeypatch):
    train, val = _pair()
    built = []
    original = sources.DatasetSource._loader

    def counting(self, dataset, batch_size, sampler=None, pin=False):
        built.append("train" if sampler is not None else "eval")
        return original(self, dataset, batch_size, sampler, pin)

    monkeypatch.setattr(sources.DatasetSource, "_loader", counting)
    fit(torch.nn.Linear(6, 3), (train, val), Hyperparameters(16, 0.1, 0.9, 160), max_epochs=3)
    assert built == ["train", "eval"]
