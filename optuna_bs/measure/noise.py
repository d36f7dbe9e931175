"""Measure a task before its study: where to search B, and where to search the noise scale g.

Two probes, each with the range it recommends:

- :func:`estimate_noise_scale` and :func:`recommend_batch_sizes`: the *gradient* noise scale
  B_simple, the critical batch size, bounds the batch sizes worth searching;
- :func:`lr_range_test` and :func:`recommend_noise_scales`: a short run of SGD whose noise
  scale g = ϵ(N/B − 1)/(1 − m) grows step by step centres the range of g on the task's own
  steepest descent (``[space] noise_scale = "auto"``).

McCandlish, Kaplan, Amodei et al. (2018) define the simple noise scale B_simple = tr(Σ)/|G|²:
G is the full-batch gradient and Σ the covariance of per-example gradients. Below about
B_simple a larger batch saves steps almost one for one; above it the saving stops. It can be
measured from the squared norms of gradients at two batch sizes B_s < B_b, as E|G_B|² =
|G|² + tr(Σ)/B for a batch of B examples drawn with replacement.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from optuna_bs._validation import check_int, check_range, check_real
from optuna_bs.data.datasets import Data
from optuna_bs.train.metrics import default_loss
from optuna_bs.train.sources import Datasets, as_source, forward, to_device, unpack
from optuna_bs.train.trainer import resolve_device

_logger = logging.getLogger(__name__)

__all__ = [
    "NoiseScaleEstimate",
    "RangeTest",
    "estimate_noise_scale",
    "lr_range_test",
    "recommend_batch_sizes",
    "recommend_noise_scales",
]


@dataclass(frozen=True)
class NoiseScaleEstimate:
    """The result of :func:`estimate_noise_scale`.

    ``b_simple`` is tr(Σ)/|G|², ``inf`` when the |G|² estimate is not positive (noise swamps
    the mean gradient). ``standard_error`` is that of ``b_simple``, by the delta method from
    the batch-to-batch spread of the two squared norms.
    """

    b_simple: float
    grad_sq_norm: float
    trace_sigma: float
    standard_error: float
    batch_sizes: tuple[int, int]
    n_batches: int
    n_train: int
    warmup_epochs: int = 0


def estimate_noise_scale(
    model: torch.nn.Module,
    data: Data | tuple[torch.Tensor, torch.Tensor],
    *,
    batch_sizes: tuple[int, int] = (32, 512),
    n_batches: int = 100,
    warmup_epochs: int = 0,
    lr: float = 0.1,
    device: str | torch.device = "auto",
    seed: int = 0,
) -> NoiseScaleEstimate:
    """Estimate B_simple = tr(Σ)/|G|² with McCandlish et al.'s two-batch-size estimator.

    Each of ``n_batches`` rounds draws B_b training examples with replacement, takes the
    gradient of the mean loss on each consecutive slice of B_s of them and the big-batch
    gradient as their weighted mean, and records |G_s|² (averaged over the slices) and
    |G_b|². Numerator and denominator are averaged over the rounds before dividing, which
    keeps the ratio's bias small. The loss is cross-entropy for classification and mean
    squared error for regression; the model is measured in training mode (dropout and batch
    norm as in training). ``model`` is not changed: a copy is warmed up and measured.

    Args:
        model: Any network mapping inputs to logits or regression outputs.
        data: A :class:`~optuna_bs.data.Data` (its training split is used), or ``(x, y)``
            tensors: integer ``y`` means classification, floating ``y`` regression.
        batch_sizes: ``(B_s, B_b)`` with 1 <= B_s < B_b < N.
        n_batches: Rounds of one big batch each, >= 2; the standard error falls as
            1/√n_batches.
        warmup_epochs: Epochs of plain SGD (batch size B_s, learning rate ``lr``) before
            measuring, >= 0: the noise scale grows as training goes on.
        lr: The warm-up learning rate, > 0.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: Seeds the sampling of batches and the model's own randomness (dropout).

    Returns:
        The estimate, with the settings it used.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has a bad value, the warm-up diverges, a gradient is NaN
            or inf (the message says whether the data holds NaN or inf, or the model's
            outputs or loss are not finite), or every gradient is zero.

    Warns:
        UserWarning: If |G|² or tr(Σ) comes out not positive: too few batches to tell.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(2000, 5, generator=g)
        >>> y = x.sum(dim=1, keepdim=True) + torch.randn(2000, 1, generator=g)
        >>> est = estimate_noise_scale(torch.nn.Linear(5, 1), (x, y), batch_sizes=(8, 64))
        >>> est.b_simple > 0, est.batch_sizes
        (True, (8, 64))
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, but got {type(model).__name__}.")
    x, y, task = _unpack(data)
    n = len(x)
    small, big = _check_batch_sizes(batch_sizes, n)
    n_batches = check_int("n_batches", n_batches, low=2)
    warmup_epochs = check_int("warmup_epochs", warmup_epochs, low=0)
    seed = check_int("seed", seed, low=0)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"`lr` must be a real number, but got lr={lr!r}.")
    if not 0 < lr < math.inf:
        raise ValueError(f"`lr` must be a finite number > 0, but got lr={lr!r}.")
    device = resolve_device(device)
    net = copy.deepcopy(model).to(device).train()
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError("`model` has no parameter that requires a gradient.")
    gen = torch.Generator().manual_seed(seed)  # batches are drawn on the CPU
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        if warmup_epochs:
            _warm_up(net, params, x, y, task, small, warmup_epochs, float(lr), gen, device)
        small_sq, big_sq = _measure(net, params, x, y, task, small, big, n_batches, gen, device)
    if not (np.isfinite(small_sq).all() and np.isfinite(big_sq).all()):
        # A NaN would give B_simple = inf, i.e. "no limit", and a range up to N/10.
        raise ValueError(
            f"The noise-scale estimate's gradients are NaN or inf: {_why_not_finite(x, y)}"
        )
    if not (small_sq.any() or big_sq.any()):
        raise ValueError(
            "Every gradient of the noise-scale estimate is zero: the loss does not depend on "
            "the model's parameters (outputs that ignore them, or a detached tensor), so there "
            "is no noise scale to measure."
        )
    s_mean, b_mean = small_sq.mean(), big_sq.mean()
    # McCandlish et al. 2018, App. A.1: unbiased |G|² and tr(Σ) from two batch sizes
    grad_sq = (big * b_mean - small * s_mean) / (big - small)
    trace = (s_mean - b_mean) / (1.0 / small - 1.0 / big)
    if grad_sq <= 0 or trace <= 0:
        warnings.warn(
            f"The noise-scale estimate is not positive (|G|² = {grad_sq:.3g}, tr(Σ) = "
            f"{trace:.3g}): {n_batches} batches cannot tell signal from noise. Raise "
            "`n_batches` or the big batch size, or warm up first (`warmup_epochs`).",
            stacklevel=2,
        )
    b_simple = trace / grad_sq if grad_sq > 0 else math.inf
    se = _standard_error(small_sq, big_sq, small, big, trace, grad_sq)
    _logger.debug(
        "B_simple = %.4g ± %.2g (|G|² = %.4g, tr Σ = %.4g)", b_simple, se, grad_sq, trace
    )
    return NoiseScaleEstimate(
        b_simple=float(b_simple),
        grad_sq_norm=float(grad_sq),
        trace_sigma=float(trace),
        standard_error=float(se),
        batch_sizes=(small, big),
        n_batches=n_batches,
        n_train=n,
        warmup_epochs=warmup_epochs,
    )


def recommend_batch_sizes(
    estimate: NoiseScaleEstimate | float, n_train: int | None = None
) -> tuple[int, int]:
    """Turn B_simple into a ``(low, high)`` power-of-two range for ``BatchScalingSpace``.

    ``high`` is the largest power of two <= min(B_simple, N/10); ``low`` is high/8 (at
    least 1). Why: with S steps and E examples to reach a target, (S/S_min − 1)(E/E_min − 1)
    = 1 with B_crit ≈ B_simple (McCandlish et al. 2018, eq. 2.11), so at B = B_simple a run
    takes twice the fewest steps and twice the fewest examples, the knee of the trade-off;
    larger batches buy few steps. At B_simple/8 a run is within 12.5% of the fewest examples,
    so the range spans data-efficient to time-efficient training. N/10 is the end of the
    validated scaling rules (Smith et al. 2018). B_simple also grows during training, so a
    range that ends at an early estimate stays on the safe side.

    Args:
        estimate: An estimate, or B_simple itself (> 0; ``inf`` means no limit but N/10).
        n_train: The training-set size N, >= 2; by default the estimate's.

    Returns:
        ``(low, high)``: powers of two with 1 <= low <= high <= N − 1.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If B_simple is NaN or not positive, or ``n_train`` is missing or < 2.

    Example:
        >>> recommend_batch_sizes(300.0, n_train=50_000)
        (32, 256)
    """
    if isinstance(estimate, NoiseScaleEstimate):
        b_simple = estimate.b_simple
        n_train = estimate.n_train if n_train is None else n_train
    elif isinstance(estimate, numbers.Real) and not isinstance(estimate, bool):
        b_simple = float(estimate)
    else:
        raise TypeError(f"`estimate` must be a NoiseScaleEstimate or a number, got {estimate!r}.")
    if not b_simple > 0:
        raise ValueError(f"`b_simple` must be > 0 to recommend a range, but got {b_simple!r}.")
    if n_train is None:
        raise ValueError("`n_train` is required when `estimate` is a number.")
    n_train = check_int("n_train", n_train, low=2)
    upper = max(1.0, min(b_simple, n_train / 10))
    high = 2 ** math.floor(math.log2(upper))
    return max(1, high // 8), high


@dataclass(frozen=True)
class RangeTest:
    """The result of :func:`lr_range_test`.

    ``noise_scales`` and ``losses`` are the sweep, step by step (the training loss of each
    step, smoothed over a centred window); ``g_steep`` is the noise scale where that loss falls
    fastest against log g, before its minimum. ``diverged`` says the sweep stopped early
    because the loss blew up, which is what ends a sweep that reaches too far.
    """

    noise_scales: tuple[float, ...]
    losses: tuple[float, ...]
    g_steep: float
    batch_size: int
    momentum: float
    n_train: int
    diverged: bool


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
) -> RangeTest:
    """Sweep the noise scale g of SGD upwards for a few steps, and find where the loss falls
    fastest (Smith 2017's learning-rate range test, in units of g).

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

    Returns:
        The sweep and ``g_steep``.

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
    low, high = check_range("noise_scales", noise_scales, positive=True)
    if not low < high:
        raise ValueError(f"`noise_scales` must have low < high, but got {noise_scales!r}.")
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
    to_lr = (1 - momentum) / (n / batch_size - 1)  # ϵ = g(1 − m)/(N/B − 1)
    opt = torch.optim.SGD(params, lr=float(scales[0] * to_lr), momentum=momentum)
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
    losses = _centred_mean(np.array(raw, dtype=float), max(3, steps // 10 | 1))
    scales = scales[: len(losses)]
    end = int(np.argmin(np.where(np.isfinite(losses), losses, np.inf))) + 1
    if end < 3:
        became = "" if math.isfinite(raw[-1]) else f" and is {raw[-1]} at step {len(raw)}"
        fix = "lower `noise_scales[0]`"
        if peak > _LARGE_INPUT:
            fix = f"its inputs reach |x| = {peak:.3g}: standardise them, or {fix}"
        raise ValueError(
            f"The range test's loss rose from its first steps (g from {low:g}){became}: there "
            f"is no descent to measure; {fix}."
        )
    slope = np.gradient(losses[:end], np.log(scales[:end]))
    g_steep = float(scales[int(np.argmin(slope))])
    _logger.debug("range test: g_steep = %.3g over %d steps", g_steep, len(raw))
    return RangeTest(
        noise_scales=tuple(float(v) for v in scales),
        losses=tuple(float(v) for v in losses),
        g_steep=g_steep,
        batch_size=batch_size,
        momentum=momentum,
        n_train=n,
        diverged=diverged,
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
    if isinstance(test, RangeTest):
        g = test.g_steep
    elif isinstance(test, numbers.Real) and not isinstance(test, bool):
        g = float(test)
    else:
        raise TypeError(f"`test` must be a RangeTest or a number, but got {test!r}.")
    if not 0 < g < math.inf:
        raise ValueError(f"`g_steep` must be a finite number > 0, but got {g!r}.")
    below = check_real("below", below, 1, low_open=True)
    above = check_real("above", above, 1, low_open=True)
    return _round(g / below), _round(g * above)


def _round(value: float) -> float:
    """Three significant digits: a range that reads well and that every worker agrees on."""
    return float(f"{value:.3g}")


def _centred_mean(values: np.ndarray, window: int) -> np.ndarray:
    """A moving mean centred on each point (shorter at the ends); a NaN or inf spreads to
    every window that holds it (the caller masks those)."""
    half = window // 2
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = values[max(0, i - half) : i + half + 1].mean()
    return out


def _unpack(data: object) -> tuple[torch.Tensor, torch.Tensor, str]:
    if isinstance(data, Data):
        return data.x_train, data.y_train, data.task
    if (
        not isinstance(data, tuple | list)
        or len(data) != 2
        or not all(isinstance(t, torch.Tensor) for t in data)
    ):
        raise TypeError(f"`data` must be a Data or an (x, y) pair of tensors, got {type(data)}.")
    x, y = data
    if len(x) != len(y):
        raise ValueError(f"`data` must have len(x) == len(y), but got {len(x)} and {len(y)}.")
    return x, y, "regression" if y.is_floating_point() else "classification"


def _check_batch_sizes(batch_sizes: object, n: int) -> tuple[int, int]:
    ints = isinstance(batch_sizes, tuple | list) and len(batch_sizes) == 2
    if not ints or any(
        isinstance(b, bool) or not isinstance(b, numbers.Integral) for b in batch_sizes
    ):
        raise TypeError(
            f"`batch_sizes` must be a (small, big) pair of integers, but got {batch_sizes!r}."
        )
    small, big = map(int, batch_sizes)
    if not 1 <= small < big < n:
        raise ValueError(
            f"`batch_sizes` must be (small, big) with 1 <= small < big < n_train = {n}, "
            f"but got batch_sizes={tuple(batch_sizes)!r}."
        )
    return small, big


def _loss(net, x, y, task: str, device: torch.device) -> torch.Tensor:
    out = net(x.to(device, non_blocking=True))
    y = y.to(device, non_blocking=True)
    return F.cross_entropy(out, y) if task == "classification" else F.mse_loss(out, y)


def _warm_up(net, params, x, y, task, batch, epochs, lr, gen, device) -> None:
    opt = torch.optim.SGD(params, lr=lr)
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            loss = _loss(net, x[perm[i : i + batch]], y[perm[i : i + batch]], task, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not math.isfinite(loss.item()):
            fix = f"lower `lr` (lr={lr})."
            if _non_finite(x) or _non_finite(y):
                fix = _why_not_finite(x, y)
            raise ValueError(f"The warm-up diverged in epoch {epoch} (loss {loss.item()}): {fix}")


def _measure(net, params, x, y, task, small, big, n_batches, gen, device):
    """Per round: the mean |G_s|² over the round's small slices, and |G_b|²."""
    small_sq, big_sq = [], []
    for _ in range(n_batches):
        # with replacement, so that E|G_B|² = |G|² + tr(Σ)/B exactly (no finite-N factor)
        idx = torch.randint(len(x), (big,), generator=gen)
        total = [torch.zeros_like(p) for p in params]
        norms = []
        for i in range(0, big, small):
            chunk = idx[i : i + small]
            grads = torch.autograd.grad(_loss(net, x[chunk], y[chunk], task, device), params)
            if len(chunk) == small:
                norms.append(sum(g.double().pow(2).sum() for g in grads))
            for t, g in zip(total, grads, strict=True):
                t.add_(g, alpha=len(chunk) / big)  # the big batch's mean loss, slice-weighted
        small_sq.append(torch.stack(norms).mean())
        big_sq.append(sum(t.double().pow(2).sum() for t in total))
    return torch.stack(small_sq).cpu().numpy(), torch.stack(big_sq).cpu().numpy()


#: Inputs larger than this are not standardised; noted when a probe's loss blows up at once.
_LARGE_INPUT = 100.0


def _non_finite(values: Any) -> int:
    """How many NaN or inf values the floating-point tensors of ``values`` hold (a tensor,
    or a tuple, list or dict of them)."""
    if torch.is_tensor(values):
        return int((~torch.isfinite(values)).sum()) if values.is_floating_point() else 0
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, tuple | list):
        return sum(_non_finite(v) for v in values)
    return 0


def _largest(values: Any) -> float:
    """The largest absolute value among the floating-point tensors of ``values`` (0 if none)."""
    if torch.is_tensor(values):
        return float(values.abs().max()) if values.is_floating_point() and values.numel() else 0.0
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, tuple | list):
        return max((_largest(v) for v in values), default=0.0)
    return 0.0


def _why_not_finite(inputs: Any, targets: Any) -> str:
    """Why a probe's loss or gradients came out NaN or inf, and what to fix: NaN or inf in
    the data, or else in the model's outputs or the loss."""
    bad = [
        f"the {what} hold {n} NaN or inf value{'s' if n > 1 else ''}"
        for what, n in (("inputs", _non_finite(inputs)), ("targets", _non_finite(targets)))
        if n
    ]
    if bad:
        return f"{' and '.join(bad)}; remove or replace them (torch.nan_to_num, say) first."
    return (
        f"the data is finite (inputs up to |x| = {_largest(inputs):.3g}), so the model's "
        "outputs or the loss are NaN or inf: check the model and the loss, and standardise "
        "large inputs."
    )


def _standard_error(small_sq, big_sq, small, big, trace, grad_sq) -> float:
    """Delta-method standard error of tr(Σ)/|G|² from the per-round (|G_s|², |G_b|²)."""
    if grad_sq <= 0:
        return math.inf
    c_t, c_g = 1.0 / small - 1.0 / big, big - small
    # ∂(T/G)/∂s and ∂(T/G)/∂b with T = (s − b)/c_t and G = (big·b − small·s)/c_g
    d_s = 1.0 / (c_t * grad_sq) + trace * small / (c_g * grad_sq**2)
    d_b = -1.0 / (c_t * grad_sq) - trace * big / (c_g * grad_sq**2)
    cov = np.cov(np.stack([small_sq, big_sq]))  # ddof=1
    grad = np.array([d_s, d_b])
    return math.sqrt(max(float(grad @ cov @ grad), 0.0) / len(small_sq))
