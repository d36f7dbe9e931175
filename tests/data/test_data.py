from __future__ import annotations

import numpy as np
import pytest
import torch

from optuna_bs.data.datasets import DATASETS, Data, load_data


@pytest.fixture(scope="module")
def mnist() -> Data:
    return load_data("mnist1d")  # generated once (about 1 s), then cached in-process


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.numpy()}


def test_datasets_constant() -> None:
    assert DATASETS == ("mnist1d", "digits", "synthetic", "cifar10")


def test_mnist1d_shapes_and_dtypes(mnist: Data) -> None:
    assert (mnist.name, mnist.task, mnist.n_outputs) == ("mnist1d", "classification", 10)
    assert (mnist.n_train, len(mnist.x_val), len(mnist.x_test)) == (3200, 800, 1000)
    assert mnist.input_shape == (40,)
    assert mnist.x_train.shape == (3200, 40) and mnist.x_test.shape == (1000, 40)
    for x, y in [(mnist.x_train, mnist.y_train), (mnist.x_val, mnist.y_val)]:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert len(x) == len(y)
    assert set(mnist.y_train.tolist()) == set(range(10))


def test_mnist1d_val_is_disjoint_from_train_and_comes_from_it(mnist: Data) -> None:
    train, val, test = _rows(mnist.x_train), _rows(mnist.x_val), _rows(mnist.x_test)
    assert len(train) == 3200 and len(val) == 800
    assert not train & val
    assert not (train | val) & test
    # Another seed draws another validation set from the same 4000 training samples.
    other = load_data("mnist1d", seed=1)
    assert _rows(other.x_train) | _rows(other.x_val) == train | val


def test_same_seed_same_split_other_seed_other_split(mnist: Data) -> None:
    again = load_data("mnist1d", seed=0)
    assert torch.equal(again.x_val, mnist.x_val) and torch.equal(again.y_val, mnist.y_val)
    other = load_data("mnist1d", seed=1)
    assert not torch.equal(other.x_val, mnist.x_val)


@pytest.mark.parametrize("name", ("mnist1d", "digits", "synthetic"))
def test_test_split_does_not_depend_on_seed(name: str) -> None:
    a, b = load_data(name, seed=0), load_data(name, seed=5)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_val, b.x_val)


@pytest.mark.parametrize("name", ["mnist1d", "digits", "synthetic"])
def test_validation_split_is_stratified(name: str) -> None:
    data = load_data(name, val_fraction=0.25, **({"n_classes": 3} if name == "synthetic" else {}))
    n = data.n_outputs
    train = torch.bincount(data.y_train, minlength=n) / data.n_train
    val = torch.bincount(data.y_val, minlength=n) / len(data.y_val)
    assert torch.allclose(train, val, atol=0.01)
    n_fit = data.n_train + len(data.x_val)
    assert len(data.x_val) == round(0.25 * n_fit)


def test_num_samples_and_data_seed_change_mnist1d(mnist: Data) -> None:
    small = load_data("mnist1d", num_samples=1000)
    assert (small.n_train + len(small.x_val), len(small.x_test)) == (800, 200)
    other = load_data("mnist1d", num_samples=1000, data_seed=1)
    assert not torch.equal(small.x_test, other.x_test)
    assert torch.equal(load_data("mnist1d", data_seed=42).x_test, mnist.x_test)


def test_mnist1d_leaves_the_global_rngs_alone() -> None:
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load_data("mnist1d", num_samples=200, data_seed=7)  # not cached yet: generates
    assert np.random.rand() == expected


def test_digits() -> None:
    data = load_data("digits")
    assert data.input_shape == (64,) and data.n_outputs == 10
    assert data.n_train + len(data.x_val) + len(data.x_test) == 1797
    assert len(data.x_test) == 360
    assert 0 <= data.x_train.min() and data.x_train.max() <= 1
    image = load_data("digits", image=True)
    assert image.input_shape == (1, 8, 8)
    assert torch.equal(image.x_train.flatten(1), data.x_train)


def test_synthetic_classification() -> None:
    data = load_data("synthetic", n_samples=500, n_features=8, n_classes=4)
    assert (data.n_train, len(data.x_val), len(data.x_test)) == (320, 80, 100)
    assert data.input_shape == (8,) and data.n_outputs == 4
    assert set(data.y_train.tolist()) == {0, 1, 2, 3}
    fit = torch.cat([data.x_train, data.x_val])  # standardised with these statistics
    assert torch.allclose(fit.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(fit.std(0, correction=0), torch.ones(8), atol=1e-4)


def test_synthetic_regression_targets_are_linear_in_the_inputs() -> None:
    data = load_data("synthetic", task="regression", n_features=5, n_targets=3)
    assert data.task == "regression" and data.n_outputs == 3
    assert data.y_train.dtype == torch.float32 and data.y_train.shape == (data.n_train, 3)
    x = torch.cat([data.x_train, torch.ones(data.n_train, 1)], dim=1)
    solution = torch.linalg.lstsq(x, data.y_train).solution
    residual = data.y_train - x @ solution
    assert residual.var() < 0.05 * data.y_train.var()


def test_to_moves_every_tensor() -> None:
    data = load_data("synthetic", n_samples=100)
    same = data.to("cpu")
    assert same is not data and torch.equal(same.x_train, data.x_train)
    assert (same.name, same.task, same.n_outputs) == (data.name, data.task, data.n_outputs)
    meta = data.to("meta")
    devices = {getattr(meta, k).device.type for k in vars(meta) if k[:2] in ("x_", "y_")}
    assert devices == {"meta"}
    assert "n_train=64" in repr(data) and "input_shape=(20,)" in repr(data)


def test_data_checks_its_fields() -> None:
    t = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="task"):
        Data(t, t, t, t, t, t, n_outputs=1, task="ranking", name="x")
    with pytest.raises(ValueError, match="equal lengths"):
        Data(t, t[:3], t, t, t, t, n_outputs=1, task="regression", name="x")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": 3}, TypeError, "`name` must be a str"),
        ({"name": "mnist"}, ValueError, "name='mnist'. Did you mean 'mnist1d'"),
        ({"name": "cifar"}, ValueError, "must be one of 'mnist1d', 'digits', 'synthetic'"),
        ({"seed": -1}, ValueError, "`seed` must be an integer >= 0"),
        ({"seed": 1.5}, TypeError, "`seed` must be an integer"),
        ({"val_fraction": 0}, ValueError, r"`val_fraction` must be in \(0, 1\)"),
        ({"val_fraction": 1.0}, ValueError, "val_fraction=1.0"),
        ({"val_fraction": "0.2"}, TypeError, "`val_fraction` must be a float"),
        ({"num_samples": 50}, ValueError, "`num_samples` must be an integer >= 100"),
        ({"num_samples": 1000.0}, TypeError, "`num_samples` must be an integer"),
        ({"name": "digits", "num_samples": 500}, ValueError, "`num_samples` applies only"),
        ({"data_seed": -2}, ValueError, "`data_seed`"),
        ({"name": "digits", "imag": True}, TypeError, "'imag'.*allowed options: 'image'"),
        ({"n_samples": 100}, TypeError, "option.*'n_samples' for data set 'mnist1d'"),
        ({"name": "digits", "image": "yes"}, TypeError, "`image` must be a bool"),
        ({"name": "synthetic", "task": "regresion"}, ValueError, "Did you mean 'regression'"),
        (
            {"name": "synthetic", "n_samples": 10},
            ValueError,
            "`n_samples` must be an integer >= 20",
        ),
        ({"name": "synthetic", "n_features": 0}, ValueError, "`n_features`"),
        ({"name": "synthetic", "n_features": 1, "n_classes": 3}, ValueError, "`n_classes`"),
        ({"name": "synthetic", "n_targets": 0, "task": "regression"}, ValueError, "n_targets"),
        ({"name": "synthetic", "n_samples": 20, "val_fraction": 0.01}, ValueError, "at least"),
    ],
)
def test_bad_input(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        load_data(**kwargs)


def test_a_misspelt_num_samples_is_pointed_at_num_samples():
    with pytest.raises(TypeError, match=r"'num_samples', 'data_seed'.*Did you mean 'num_samples'"):
        load_data("mnist1d", num_sample=3)


def test_a_cifar_root_that_is_a_file_says_so(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        load_data("cifar10", root=str(tmp_path / "afile"))
