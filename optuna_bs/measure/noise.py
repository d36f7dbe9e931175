"""The critical batch size: where to search B, measured before the study.

:func:`estimate_noise_scale` and :func:`recommend_batch_sizes`: the *gradient* noise scale
B_simple bounds the batch sizes worth searching. (Where to search g is the range test's:
:mod:`optuna_bs.measure.range_test`.)

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from optuna_bs._validation import check_int, check_positive, check_range
from optuna_bs.data.datasets import Data
from optuna_bs.rules.formulas import largest_valid_batch
from optuna_bs.train.trainer import resolve_device

_logger = logging.getLogger(__name__)


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
    small, big = map(int, check_range("batch_sizes", batch_sizes, integer=True))
    if not small < big < n:
        raise ValueError(
            f"`batch_sizes` must be (small, big) with 1 <= small < big < n_train = {n}, "
            f"but got batch_sizes={tuple(batch_sizes)!r}."
        )
    n_batches = check_int("n_batches", n_batches, low=2)
    warmup_epochs = check_int("warmup_epochs", warmup_epochs, low=0)
    seed = check_int("seed", seed, low=0)
    lr = check_positive("lr", lr)
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
            _warm_up(net, params, x, y, task, small, warmup_epochs, lr, gen, device)
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
    upper = max(1.0, min(b_simple, largest_valid_batch(n_train)))
    high = 2 ** math.floor(math.log2(upper))
    return max(1, high // 8), high


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
            fix = _why_not_finite(x, y) if _non_finite((x, y)) else f"lower `lr` (lr={lr})."
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


def _floats(values: Any) -> list[torch.Tensor]:
    """The floating-point tensors of ``values``: a tensor, or a tuple, list or dict of them."""
    if torch.is_tensor(values):
        return [values] if values.is_floating_point() else []
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, tuple | list):
        return [t for v in values for t in _floats(v)]
    return []


def _non_finite(values: Any) -> int:
    """How many NaN or inf values the floating-point tensors of ``values`` hold."""
    return sum(int((~torch.isfinite(t)).sum()) for t in _floats(values))


def _largest(values: Any) -> float:
    """The largest absolute value among the floating-point tensors of ``values`` (0 if none)."""
    return max((float(t.abs().max()) for t in _floats(values) if t.numel()), default=0.0)


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
