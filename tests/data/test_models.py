from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from optuna_bs.data.datasets import load_data
from optuna_bs.data.models import MODELS, build_model, cnn1d, mlp

USER_MODULE = """
    from torch import nn

    def factory(input_shape, n_outputs, width=8):
        # A lazy layer, sized by the first forward pass.
        layers = [nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, n_outputs)]
        return nn.Sequential(*layers)

    class Zoo:
        @staticmethod
        def tiny(input_shape, n_outputs):
            return nn.Linear(input_shape[-1], n_outputs)

    def not_a_module(input_shape, n_outputs):
        return {"input_shape": input_shape}

    def make_model(width=8):
        return nn.Linear(4, width)

    def deep(input_shape, n_outputs, depth):
        return nn.Linear(input_shape[-1], n_outputs)

    NOT_CALLABLE = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "optuna_bs_test_user_models.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "optuna_bs_test_broken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "optuna_bs_test_user_models"


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_models_constant() -> None:
    assert MODELS == ("mlp", "cnn1d", "resnet18")


@pytest.mark.parametrize(
    ("name", "input_shape"),
    [("mlp", (40,)), ("cnn1d", (40,)), ("mlp", (1, 8, 8)), ("cnn1d", (64,)), ("cnn1d", (2, 40))],
)
def test_forward_shapes(name: str, input_shape: tuple[int, ...]) -> None:
    model = build_model(name, input_shape, 10)
    assert model(torch.randn(7, *input_shape)).shape == (7, 10)


def test_models_fit_the_built_in_data_shapes() -> None:
    data = load_data("digits", image=True)
    assert build_model("mlp", data.input_shape, data.n_outputs)(data.x_val).shape == (
        len(data.x_val),
        10,
    )


def test_mlp_is_40_256_256_10() -> None:
    model = build_model("mlp", (40,), 10)
    assert _n_params(model) == 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    widths = [m.out_features for m in model if isinstance(m, nn.Linear)]
    assert widths == [256, 256, 10]
    assert sum(isinstance(m, nn.ReLU) for m in model) == 2


def test_mlp_options() -> None:
    model = mlp(8, 3, hidden=[16], activation="gelu", dropout=0.5)
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    linear = mlp((8,), 3, hidden=())
    assert _n_params(linear) == 8 * 3 + 3


def test_cnn1d_is_small_and_strided() -> None:
    model = build_model("cnn1d", (40,), 10)
    convs = [m for m in model if isinstance(m, nn.Conv1d)]
    assert len(convs) == 3 and all(c.stride == (2,) and c.out_channels == 32 for c in convs)
    assert 10_000 <= _n_params(model) <= 30_000
    wide = cnn1d((40,), 10, channels=8, kernel_size=3, layers=2, activation="tanh")
    assert sum(isinstance(m, nn.Conv1d) for m in wide) == 2
    assert wide(torch.randn(2, 40)).shape == (2, 10)


def test_cnn1d_keeps_short_sequences() -> None:
    model = build_model("cnn1d", (3,), 2)  # too short to stride: stride 1 throughout
    assert model(torch.randn(4, 3)).shape == (4, 2)


def test_mlp_learns_synthetic_classification() -> None:
    torch.manual_seed(0)
    data = load_data("synthetic", n_samples=500, n_features=10)
    model = build_model("mlp", data.input_shape, data.n_outputs, hidden=(64, 64))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(data.x_train), data.y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = (model(data.x_train).argmax(1) == data.y_train).float().mean().item()
    assert accuracy > 0.8


def test_user_factory(user_module: str) -> None:
    model = build_model(f"{user_module}:factory", (40,), 10, width=5)
    assert model(torch.randn(3, 40)).shape == (3, 10)
    assert model[1].out_features == 5
    tiny = build_model(f"{user_module}:Zoo.tiny", [6], 2)
    assert isinstance(tiny, nn.Linear) and tiny.in_features == 6


@pytest.mark.parametrize(
    ("attr", "error", "match"),
    [
        ("not_a_module", TypeError, "must return a torch.nn.Module.*'dict'"),
        ("NOT_CALLABLE", ValueError, "'NOT_CALLABLE' must be callable"),
        ("missing", ValueError, "has no attribute 'missing'"),
    ],
)
def test_bad_user_factory(user_module: str, attr: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_model(f"{user_module}:{attr}", (40,), 10)


def test_a_factory_without_the_shape_arguments_is_told_the_signature(user_module: str) -> None:
    expected = (
        r"called as make_model\(input_shape=\(40,\), n_outputs=10, width=4\), which its "
        r"signature refuses \(got an unexpected keyword argument 'input_shape'\): define it as "
        r"`def make_model\(input_shape, n_outputs, width\):`"
    )
    with pytest.raises(TypeError, match=expected):
        build_model(f"{user_module}:make_model", (40,), 10, width=4)
    with pytest.raises(TypeError, match=r"\(missing a required argument: 'depth'\)"):
        build_model(f"{user_module}:deep", (40,), 10)  # [model] depth left out


def test_user_module_that_does_not_import(user_module: str) -> None:
    with pytest.raises(ValueError, match=r"'optuna_bs_test_broken:f'.*RuntimeError: boom"):
        build_model("optuna_bs_test_broken:f", (40,), 10)
    with pytest.raises(ValueError, match="No module named 'no_such_package'"):
        build_model("no_such_package.models:f", (40,), 10)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("mlpp", (40,), 10), {}, ValueError, "name='mlpp'. Did you mean 'mlp'"),
        (("resnet", (40,), 10), {}, ValueError, "'package.module:factory'"),
        ((None, (40,), 10), {}, TypeError, "`name` must be a str"),
        ((":factory", (40,), 10), {}, ValueError, "name=':factory'"),
        (("pkg.mod:", (40,), 10), {}, ValueError, "name='pkg.mod:'"),
        (("mlp", (40,), 10), {"hiden": (8,)}, TypeError, "'hiden'.*Did you mean 'hidden'"),
        (("cnn1d", (40,), 10), {"dropout": 0.1}, TypeError, "'dropout'; allowed: 'channels'"),
        (("mlp", "40", 10), {}, TypeError, "`input_shape` must be a tuple of ints"),
        (("mlp", (40, 0), 10), {}, ValueError, "`input_shape\\[1\\]` must be an integer >= 1"),
        (("mlp", (40,), 0), {}, ValueError, "`n_outputs` must be an integer >= 1"),
        (("mlp", (40,), 2.0), {}, TypeError, "`n_outputs`"),
        (("mlp", (40,), 10), {"hidden": 256}, TypeError, "`hidden` must be a sequence"),
        (
            ("mlp", (40,), 10),
            {"hidden": (256, -1)},
            ValueError,
            r"`hidden\[1\]` must be an integer >= 1",
        ),
        (("mlp", (40,), 10), {"activation": "Relu"}, ValueError, "Did you mean 'relu'"),
        (("mlp", (40,), 10), {"activation": nn.ReLU}, TypeError, "`activation`"),
        (("mlp", (40,), 10), {"dropout": 1.0}, ValueError, r"`dropout` must be in \[0, 1\)"),
        (("cnn1d", (1, 8, 8), 10), {}, ValueError, r"\(length,\) or \(channels, length\)"),
        (("cnn1d", (40,), 10), {"kernel_size": 0}, ValueError, "`kernel_size`"),
    ],
)
def test_bad_input(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_model(*args, **kwargs)
