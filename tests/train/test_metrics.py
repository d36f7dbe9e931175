from __future__ import annotations

import doctest

import pytest
import torch
from torch.utils.data import TensorDataset

from optuna_bs import Datasets, Metric
from optuna_bs.train import metrics
from optuna_bs.train.metrics import evaluate, evaluate_split, resolve_metric


def test_doctests():
    assert doctest.testmod(metrics).failed == 0


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def test_error_is_an_exact_count_over_batches():
    x, y = torch.randn(103, 4), torch.randint(0, 3, (103,))
    model = _model()
    wrong = (model(x).argmax(1) != y).sum().item()
    assert evaluate(model, x, y, batch_size=10) == wrong / 103


def test_evaluate_split_reads_a_datasets_test_split_and_none_without_one():
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    model = _model()
    ds = Datasets(TensorDataset(x, y), TensorDataset(x, y), TensorDataset(x[:20], y[:20]))
    expected = (model(x[:20]).argmax(1) != y[:20]).float().mean().item()
    assert evaluate_split(model, ds, "test", batch_size=7) == pytest.approx(expected)
    assert evaluate_split(model, (TensorDataset(x, y), TensorDataset(x, y)), "test") is None


def test_a_metric_of_batch_means_is_weighted_by_batch_size():
    x, y = torch.randn(25, 4), torch.randint(0, 3, (25,))
    model = _model()
    acc = Metric(lambda o, t: (o.argmax(1) == t).float().mean(), "acc", lower_is_better=False)
    expected = (model(x).argmax(1) == y).float().mean().item()
    assert evaluate(model, x, y, metric=acc, batch_size=4) == pytest.approx(expected, abs=1e-7)


def test_the_loss_metric_uses_the_users_loss():
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    model = _model()

    def smooth(o, t):
        return torch.nn.functional.cross_entropy(o, t, label_smoothing=0.2)

    value = evaluate(model, x, y, metric="loss", loss_fn=smooth, batch_size=30)
    assert value == pytest.approx(smooth(model(x), y).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("error", "regression"), ValueError, "use 'loss'"),
        (("accuracy", "classification"), ValueError, "`metric` must be one of"),
        ((len, "classification"), TypeError, "wrap it as optuna_bs.Metric"),
    ],
)
def test_bad_metrics(args, error, match):
    with pytest.raises(error, match=match):
        resolve_metric(*args, loss_fn=None)


def test_metric_checks_its_fields():
    with pytest.raises(TypeError, match="`fn` must be callable"):
        Metric(3)
    with pytest.raises(TypeError, match="lower_is_better"):
        Metric(len, "x", lower_is_better="no")
