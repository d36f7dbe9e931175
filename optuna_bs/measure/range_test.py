"""The learning-rate range test that centres the range of SGD's noise scale g, or of Adam's lr.

A short run of SGD whose noise scale g = ϵ(N/B − 1)/(1 − m) grows step by step; the range of g
is centred on the task's own steepest descent (``[space] noise_scale = "auto"``). With Adam or
AdamW the sweep is of the learning rate itself (``[space] lr = "auto"``)."""

from __future__ import annotations

import copy
import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from optuna_bs._validation import check_choice, check_int, check_positive, check_range, check_real
from optuna_bs.data.datasets import Data
from optuna_bs.measure.noise import _LARGE_INPUT, _largest, _non_finite
from optuna_bs.train.metrics import default_loss
from optuna_bs.train.sources import Datasets, as_source, forward, to_device, unpack
from optuna_bs.train.trainer import resolve_device

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RangeTest:
    """The result of :func:`lr_range_test`.

    ``lrs`` and ``losses`` are the sweep, step by step (the training loss of each step,
    smoothed over a centred window); ``lr_steep`` is the learning rate where that loss falls
    fastest against log lr, before its minimum. For SGD the sweep is of g:
    ``noise_scales`` and ``g_steep`` are the same points in units of g (for Adam, ``()`` and
    NaN). ``diverged`` says the sweep stopped early because the loss blew up, which is what
    ends a sweep that reaches too far.
    """

    noise_scales: tuple[float, ...]
    losses: tuple[float, ...]
    g_steep: float
    batch_size: int
    momentum: float
    n_train: int
    diverged: bool
    optimizer: str = "sgd"
    lrs: tuple[float, ...] = ()
    lr_steep: float = math.nan


def lr_range_test(
    model: torch.nn.Module,
    data: Data | Datasets | tuple[Dataset, Dataset],
    *,
    batch_size: int,
    momentum: float = 0.9,
    noise_scales: tuple[float, float] = (0.1, 1e4),
    steps: int = 100,
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    optimizer: str = "sgd",
    lrs: tuple[float, float] = (1e-6, 1.0),
    beta2: float = 0.999,
) -> RangeTest:
    """Sweep the noise scale g of SGD (or the lr of Adam) upwards for a few steps, and find
    where the loss falls fastest (Smith 2017's learning-rate range test, in units of g).

    One step per value, g growing geometrically from ``noise_scales[0]`` to
    ``noise_scales[1]`` over ``steps`` steps; each step's learning rate is ϵ = g(1 − m)/(N/B
    − 1). The sweep stops early once the loss is four times its lowest. The steepest descent
    of the smoothed loss against log g is ``g_steep``: training there makes the fastest
    progress, a little below where it turns unstable, and near the best noise scale of full
    runs at this batch size (BENCHMARKS.md measures how near). It is a property of this B:
    the learning rate of steepest descent is about the same at every B (docs/design.md §2),
    so measure at the batch size the search starts from. ``model`` is not changed: a copy is
    trained, plainly: no micro-batches, clipping, augmentation or mixed precision.
    ``diverged`` False means the loss never blew up within the sweep: then g_steep may be
    limited by ``noise_scales[1]``.

    With ``optimizer="adam"`` or ``"adamw"`` (no weight decay: the sweep is too short for it
    to matter) the sweep is of the learning rate over ``lrs``, with β1 = ``momentum`` and
    ``beta2``, and gives ``lr_steep``: Adam's step does not scale with N/B as SGD's does, so
    there is no g to sweep.

    Args:
        model: The network, as ``fit`` takes it.
        data: What ``fit`` takes: a :class:`~optuna_bs.data.Data`, a
            :class:`~optuna_bs.train.Datasets` or a ``(train, val)`` pair of Datasets; the
            training split is used.
        batch_size: B, in [1, N − 1].
        momentum: m, in [0, 1).
        noise_scales: ``(low, high)`` of the sweep, 0 < low < high.
        steps: Steps of the sweep, >= 10 (100 sweeps five decades at 20 per decade).
        loss: ``loss(outputs, targets)``, as ``fit``'s ``loss_fn``; by default cross-entropy
            for classification and mean squared error for regression.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: Seeds the batches and the model's own randomness.
        optimizer: ``"sgd"`` (sweeps g), ``"adam"`` or ``"adamw"`` (sweep the lr).
        lrs: ``(low, high)`` of an Adam sweep, 0 < low < high.
        beta2: Adam's β2, in [0, 1).

    Returns:
        The sweep, ``g_steep`` and ``lr_steep`` (SGD), or ``lr_steep`` (Adam).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has a bad value; if the loss turns NaN or inf after a
            batch that holds NaN or inf, or is not finite at the first step; if every gradient
            is zero; or if the loss rises from the first steps (the message names inputs too
            large to train on, else says to lower ``noise_scales[0]``).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(2000, 5, generator=g)
        >>> y = (x.sum(dim=1) > 0).long()
        >>> from torch.utils.data import TensorDataset
        >>> train, val = TensorDataset(x[:1600], y[:1600]), TensorDataset(x[1600:], y[1600:])
        >>> test = lr_range_test(torch.nn.Linear(5, 2), (train, val), batch_size=32)
        >>> 0.1 < test.g_steep < 1e4
        True
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, but got {type(model).__name__}.")
    source = as_source(data)
    n = source.n_train
    batch_size = check_int("batch_size", batch_size, low=1)
    if batch_size >= n:
        raise ValueError(f"`batch_size` must be < n_train = {n}, but got batch_size={batch_size}.")
    momentum = check_real("momentum", momentum, 0, 1, high_open=True)
    check_choice("optimizer", optimizer, ("sgd", "adam", "adamw"))
    sgd = optimizer == "sgd"
    swept, sweep = ("noise_scales", noise_scales) if sgd else ("lrs", lrs)  # its own keyword
    low, high = check_range(swept, sweep, positive=True)
    if not low < high:
        raise ValueError(f"`{swept}` must have low < high, but got {sweep!r}.")
    beta2 = check_real("beta2", beta2, 0, 1, high_open=True)
    steps = check_int("steps", steps, low=10)
    seed = check_int("seed", seed, low=0)
    if loss is not None and not callable(loss):
        raise TypeError(f"`loss` must be callable, but got {type(loss).__name__}.")
    loss = loss or default_loss(source.task)
    device = resolve_device(device)
    net = copy.deepcopy(model).to(device).train()
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError("`model` has no parameter that requires a gradient.")
    scales = np.geomspace(low, high, steps)
    to_lr = (1 - momentum) / (n / batch_size - 1) if sgd else 1.0  # ϵ = g(1 − m)/(N/B − 1)
    if sgd:
        opt = torch.optim.SGD(params, lr=float(scales[0] * to_lr), momentum=momentum)
    else:
        adam = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
        opt = adam(params, lr=float(scales[0]), betas=(momentum, beta2), weight_decay=0.0)
    gen = torch.Generator(device=source.generator_device).manual_seed(seed)
    cuda = [device.index or 0] if device.type == "cuda" else []
    raw: list[float] = []
    ema, lowest, diverged = 0.0, math.inf, False
    # What a failed sweep's message names: a batch holding NaN or inf (its step), a gradient
    # that is not zero, and how large the first batch's inputs are.
    dirty, moved, peak = None, False, 0.0
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        batches = iter(())
        for i, g in enumerate(scales):
            batch = next(batches, None)
            if batch is None:  # a new epoch's order
                batches = iter(source.train_batches(batch_size, n // batch_size, gen, False))
                batch = next(batches)
            for group in opt.param_groups:
                group["lr"] = float(g * to_lr)
            inputs, targets = unpack(to_device(batch, device))
            if dirty is None and _non_finite((inputs, targets)):
                dirty = i
            if i == 0:
                peak = _largest(inputs)
            value = loss(forward(net, inputs), targets)
            opt.zero_grad(set_to_none=True)
            value.backward()
            moved = moved or any(p.grad is not None and bool(p.grad.any()) for p in params)
            opt.step()
            raw.append(value.item())
            # A causal average decides when to stop; the answer uses a centred one.
            ema = 0.9 * ema + 0.1 * raw[-1]
            smooth = ema / (1 - 0.9 ** (i + 1))
            lowest = min(lowest, smooth)
            # Four times its lowest (for a loss that can go below 0: 3|lowest| above it).
            if not math.isfinite(raw[-1]) or (
                i >= steps // 10 and smooth - lowest > 3 * abs(lowest)
            ):
                diverged = True
                break
    if dirty is not None and not math.isfinite(raw[-1]):
        raise ValueError(
            f"The range test's loss is {raw[-1]} at step {len(raw)}, and the batch of step "
            f"{dirty + 1} holds NaN or inf: the training data holds NaN or inf values; remove "
            "or replace them (torch.nan_to_num, say) first."
        )
    if not math.isfinite(raw[0]):
        raise ValueError(
            f"The range test's first loss is {raw[0]} on finite inputs (up to |x| = "
            f"{peak:.3g}): the model's outputs or the loss are NaN or inf before any step; "
            "check the model and the loss, and standardise large inputs."
        )
    if not moved:
        raise ValueError(
            f"Every gradient of the range test is zero ({len(raw)} steps): the loss does not "
            "depend on the model's parameters (outputs that ignore them, or a detached "
            "tensor), so there is nothing to train."
        )
    # A moving mean centred on each step (shorter at the ends): a NaN or inf spreads to every
    # window that holds it, and is masked below.
    half, values = max(3, steps // 10 | 1) // 2, np.array(raw, dtype=float)
    losses = np.array([values[max(0, i - half) : i + half + 1].mean() for i in range(len(raw))])
    scales = scales[: len(losses)]
    end = int(np.argmin(np.where(np.isfinite(losses), losses, np.inf))) + 1
    if end < 3:
        became = "" if math.isfinite(raw[-1]) else f" and is {raw[-1]} at step {len(raw)}"
        fix, unit = f"lower `{swept}[0]`", "g" if sgd else "lr"
        if peak > _LARGE_INPUT:
            fix = f"its inputs reach |x| = {peak:.3g}: standardise them, or {fix}"
        raise ValueError(
            f"The range test's loss rose from its first steps ({unit} from {low:g}){became}: "
            f"there is no descent to measure; {fix}."
        )
    slope = np.gradient(losses[:end], np.log(scales[:end]))
    steep = float(scales[int(np.argmin(slope))])
    _logger.debug("range test (%s): steepest at %.3g over %d steps", optimizer, steep, len(raw))
    return RangeTest(
        noise_scales=tuple(float(v) for v in scales) if sgd else (),
        losses=tuple(float(v) for v in losses),
        g_steep=steep if sgd else math.nan,
        batch_size=batch_size,
        momentum=momentum,
        n_train=n,
        diverged=diverged,
        optimizer=optimizer,
        lrs=tuple(float(v * to_lr) for v in scales),
        lr_steep=steep * to_lr,
    )


def recommend_noise_scales(
    test: RangeTest | float, below: float = 5.0, above: float = 3.0
) -> tuple[float, float]:
    """The range of g to search: from ``g_steep / below`` to ``g_steep * above``.

    Lopsided because the loss is: above g_steep training soon becomes unstable (a cliff in
    the error), below it the error rises slowly. The defaults span 15×, against the 1000× of
    the default [1, 1000]; BENCHMARKS.md has where the best g of full runs lay against
    g_steep, and what the range gains.

    Args:
        test: A range test, or g_steep itself (> 0).
        below, above: Factors > 1.

    Returns:
        ``(g_steep / below, g_steep * above)``, to three significant digits.

    Example:
        >>> recommend_noise_scales(60.0)
        (12.0, 180.0)
    """
    return _around(test, "g_steep", below, above)


def recommend_lrs(
    test: RangeTest | float, below: float = 3.0, above: float = 10.0
) -> tuple[float, float]:
    """The range of Adam's (reference) lr to search: ``lr_steep / below`` to
    ``lr_steep * above``.

    Lopsided upwards, as measured: full AdamW runs found their best lr 2.2× and 5× above the
    sweep's steepest descent on the two tasks that chose the rule (0.19–3.5× on three that
    checked it; BENCHMARKS.md, "AdamW's range test"). The defaults span 30×.

    Example:
        >>> recommend_lrs(0.002)
        (0.000667, 0.02)
    """
    return _around(test, "lr_steep", below, above)


def _around(test: RangeTest | float, steep: str, below: float, above: float):
    """``(x / below, x * above)`` to three digits, x a range test's ``steep`` or a number."""
    if not isinstance(test, RangeTest | numbers.Real) or isinstance(test, bool):
        raise TypeError(f"`test` must be a RangeTest or a number, but got {test!r}.")
    x = check_positive(steep, getattr(test, steep) if isinstance(test, RangeTest) else test)
    below = check_real("below", below, 1, low_open=True)
    above = check_real("above", above, 1, low_open=True)
    return float(f"{x / below:.3g}"), float(f"{x * above:.3g}")  # every worker agrees on it
