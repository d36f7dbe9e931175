"""Built-in models, and user models named as ``"package.module:factory"``.

Every model maps a batch of inputs of shape ``(batch, *input_shape)`` to ``(batch, n_outputs)``
logits (or regression outputs). The models use torch only, never torchvision.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn

from optuna_bs._validation import check_int
from optuna_bs.data.datasets import _hint
from optuna_bs.factories import call_mismatch, import_object

_logger = logging.getLogger(__name__)

MODELS = ("mlp", "cnn1d", "resnet18")
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def build_model(
    name: str,
    input_shape: int | Sequence[int],
    n_outputs: int,
    *,
    folder: str | None = None,
    factory: Callable[..., nn.Module] | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a built-in model by name, or a user model from ``"package.module:factory"``.

    A user factory is imported, then called as
    ``factory(input_shape=input_shape, n_outputs=n_outputs, **kwargs)`` and must return a
    :class:`torch.nn.Module`: define it as ``def factory(input_shape, n_outputs, **options)``
    (a call it cannot take is refused before it is made, naming that signature).

    Args:
        name: One of :data:`MODELS`, or ``"package.module:factory"``.
        input_shape: Shape of one input sample, e.g. ``data.input_shape``.
        n_outputs: Number of classes, or of regression targets.
        folder: A folder searched first for a user factory's module (the study file's).
        factory: The user factory ``name`` names, imported already (a study's plan imports
            it once per worker); ``None`` imports it.
        **kwargs: Arguments of the model: see :func:`mlp` and :func:`cnn1d`.

    Returns:
        The model, with freshly initialised parameters.

    Raises:
        TypeError: If an argument has the wrong type, a keyword is unknown to a built-in
            model, or a user factory returns something that is not a module.
        ValueError: If an argument has a bad value, or a user model cannot be imported or
            its factory raises (the message holds the first line of its error).

    Example:
        >>> model = build_model("mlp", (40,), 10)
        >>> sum(p.numel() for p in model.parameters())
        78858
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, but got {type(name).__name__}: {name!r}.")
    if ":" in name:  # your own model may get None for what the data cannot tell
        input_shape = None if input_shape is None else _check_shape(input_shape)
        if n_outputs is not None:
            check_int("n_outputs", n_outputs, low=1)
        if factory is None:
            factory = import_object(name, "Model", folder=folder)
        return _user_model(factory, name, input_shape, n_outputs, kwargs)
    if name not in MODELS:
        choices = ", ".join(repr(m) for m in MODELS)
        raise ValueError(
            f"`name` must be one of {choices} or a user model 'package.module:factory', "
            f"but got name={name!r}.{_hint(name, MODELS)}"
        )
    factory = _BUILTINS[name]
    allowed = list(inspect.signature(factory).parameters)[2:]  # after input_shape, n_outputs
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"Model {name!r} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(map(repr, allowed))}.{_hint(unknown[0], allowed)}"
        )
    model = factory(input_shape, n_outputs, **kwargs)
    _logger.debug("Built model %r with %d parameters.", name, _n_params(model))
    return model


def mlp(
    input_shape: int | Sequence[int],
    n_outputs: int,
    *,
    hidden: Sequence[int] = (256, 256),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """A multilayer perceptron on flattened inputs; 40-256-256-10 for MNIST-1D.

    Args:
        input_shape: Shape of one input sample; it is flattened.
        n_outputs: Number of outputs.
        hidden: Widths of the hidden layers; empty gives a linear model.
        activation: One of ``"relu"``, ``"gelu"``, ``"tanh"``.
        dropout: Dropout probability after each hidden layer, in [0, 1).

    Returns:
        ``Flatten, (Linear, activation[, Dropout]) * len(hidden), Linear``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has a bad value.
    """
    in_features = math.prod(_check_shape(input_shape))
    check_int("n_outputs", n_outputs, low=1)
    if isinstance(hidden, str) or not isinstance(hidden, Sequence):
        raise TypeError(f"`hidden` must be a sequence of ints, but got hidden={hidden!r}.")
    for i, width in enumerate(hidden):
        check_int(f"hidden[{i}]", width, low=1)
    act = _activation(activation)
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"`dropout` must be a float, but got dropout={dropout!r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be in [0, 1), but got dropout={dropout}.")
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(in_features, width), act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, n_outputs))
    return nn.Sequential(*layers)


def cnn1d(
    input_shape: int | Sequence[int],
    n_outputs: int,
    *,
    channels: int = 32,
    kernel_size: int = 5,
    layers: int = 3,
    activation: str = "relu",
) -> nn.Sequential:
    """A small 1-D convolutional network, after the MNIST-1D paper's CNN (Greydanus 2020).

    Each convolution has ``channels`` channels and "same" padding, and halves the length while
    it is at least 8 (stride 2); a linear layer reads the flattened features. For MNIST-1D the
    defaults give 40 -> 20 -> 10 -> 5 samples and 12,106 parameters.

    Args:
        input_shape: ``(length,)`` (a channel dimension is added) or ``(channels, length)``.
        n_outputs: Number of outputs.
        channels: Channels of every convolution.
        kernel_size: Kernel size of every convolution.
        layers: Number of convolutions.
        activation: One of ``"relu"``, ``"gelu"``, ``"tanh"``.

    Returns:
        The network as an :class:`torch.nn.Sequential`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has a bad value, e.g. an image shape.

    Example:
        >>> sum(p.numel() for p in cnn1d((40,), 10).parameters())
        12106
    """
    shape = _check_shape(input_shape)
    if len(shape) > 2:
        raise ValueError(
            f"`input_shape` must be (length,) or (channels, length) for 'cnn1d', "
            f"but got input_shape={shape}."
        )
    check_int("n_outputs", n_outputs, low=1)
    for arg, value in (("channels", channels), ("kernel_size", kernel_size), ("layers", layers)):
        check_int(arg, value, low=1)
    act = _activation(activation)
    in_channels, length = (1, shape[0]) if len(shape) == 1 else shape
    modules: list[nn.Module] = [nn.Unflatten(1, (1, length))] if len(shape) == 1 else []
    padding = kernel_size // 2
    for _ in range(layers):
        stride = 2 if length >= 8 else 1
        modules += [nn.Conv1d(in_channels, channels, kernel_size, stride, padding), act()]
        length = (length + 2 * padding - kernel_size) // stride + 1
        in_channels = channels
    modules += [nn.Flatten(), nn.Linear(channels * length, n_outputs)]
    return nn.Sequential(*modules)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(input_shape: Sequence[int], n_outputs: int, *, width: int = 64) -> nn.Sequential:
    """ResNet-18, CIFAR variant (He et al. 2016): a 3x3 stem, no max-pool, 4 stages of 2 blocks.

    For 32x32 inputs the stages work at 32, 16, 8 and 4 pixels with ``width`` x 1, 2, 4, 8
    channels; ``width=64`` gives the usual 11.2M parameters. Written with torch only.

    Args:
        input_shape: ``(channels, height, width)``, e.g. ``(3, 32, 32)``.
        n_outputs: Number of classes.
        width: Channels of the first stage.

    Returns:
        The network.

    Raises:
        ValueError: If the input is not an image shape.

    Example:
        >>> sum(p.numel() for p in resnet18((3, 32, 32), 10).parameters())
        11173962
    """
    shape = _check_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"`input_shape` must be (channels, height, width) for 'resnet18', "
            f"but got input_shape={shape}."
        )
    check_int("n_outputs", n_outputs, low=1)
    check_int("width", width, low=1)
    layers: list[nn.Module] = [
        nn.Conv2d(shape[0], width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    in_channels = width
    for stage, channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(_BasicBlock(in_channels, channels, stride))
            in_channels = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, n_outputs)]
    return nn.Sequential(*layers)


_BUILTINS = {"mlp": mlp, "cnn1d": cnn1d, "resnet18": resnet18}


def _user_model(
    factory: Callable[..., nn.Module],
    spec: str,
    input_shape: tuple[int, ...],
    n_outputs: int,
    kwargs: dict[str, object],
) -> nn.Module:
    why = call_mismatch(factory, input_shape=input_shape, n_outputs=n_outputs, **kwargs)
    if why is not None:
        name = getattr(factory, "__name__", "factory")
        given = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        options = "".join(f", {k}" for k in kwargs)
        raise TypeError(
            f"Model {spec!r} is called as {name}(input_shape={input_shape!r}, "
            f"n_outputs={n_outputs!r}{given}), which its signature refuses ({why}): define it as "
            f"`def {name}(input_shape, n_outputs{options}):` (one sample's shape, the classes "
            "or targets, and each [model] option by keyword; it may ignore what it does not "
            "need)."
        )
    try:
        model = factory(input_shape=input_shape, n_outputs=n_outputs, **kwargs)
    except Exception as err:  # anything inside the user's factory: one line, as for data
        cause = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ValueError(f"Model {spec!r} failed: {cause}") from err
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"Model {spec!r} must return a torch.nn.Module, "
            f"but it returned an object of type {type(model).__name__!r}."
        )
    _logger.debug("Built user model %r with %d parameters.", spec, _n_params(model))
    return model


def _n_params(model: nn.Module) -> int:
    # A lazy layer (nn.LazyLinear) has no size until its first forward pass.
    params = model.parameters()
    return sum(p.numel() for p in params if not isinstance(p, nn.UninitializedParameter))


def _check_shape(input_shape: object) -> tuple[int, ...]:
    shape = (input_shape,) if isinstance(input_shape, numbers.Integral) else input_shape
    if isinstance(shape, str) or not isinstance(shape, Sequence) or not shape:
        raise TypeError(f"`input_shape` must be a tuple of ints, but got {input_shape!r}.")
    for i, size in enumerate(shape):
        check_int(f"input_shape[{i}]", size, low=1)
    return tuple(int(s) for s in shape)


def _activation(activation: object) -> type[nn.Module]:
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        choices = ", ".join(map(repr, _ACTIVATIONS))
        hint = _hint(activation, list(_ACTIVATIONS)) if isinstance(activation, str) else ""
        error = ValueError if isinstance(activation, str) else TypeError
        raise error(f"`activation` must be one of {choices}, but got {activation=}.{hint}")
    return _ACTIVATIONS[activation]
