"""What a batch costs and what a validation epoch scores: losses and metrics for ``fit``.

A loss is ``loss_fn(outputs, targets) -> scalar`` (the batch mean); the default is
cross-entropy for classification and mean squared error for regression. A validation metric
is ``"error"`` (classification error), ``"loss"`` (the validation loss), or a :class:`Metric`
that wraps the user's ``(outputs, targets) -> float`` and says whether lower is better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from optuna_bs.sources import logits

__all__ = ["METRICS", "Metric", "default_loss", "resolve_metric"]

#: The built-in validation metrics, by name.
METRICS = ("error", "loss")


@dataclass(frozen=True)
class Metric:
    """A validation value of your own, e.g. accuracy or top-5 error.

    Args:
        fn: ``fn(outputs, targets) -> float`` (or a 0-d tensor): the value on one validation
            batch, as a batch mean. ``fit`` averages it over the validation set, weighting
            each batch by its size.
        name: What the trial and the dashboard call it, e.g. ``"val_accuracy"``.
        lower_is_better: ``False`` for an accuracy: the study must then maximise.

    Example:
        >>> acc = Metric(lambda out, y: (out.argmax(1) == y).float().mean(), "val_accuracy",
        ...              lower_is_better=False)
        >>> acc.direction
        'maximize'
    """

    fn: Callable[[Any, Any], Any]
    name: str = "val_metric"
    lower_is_better: bool = True
    # Built-ins return batch sums (exact counts); a user's fn returns a batch mean.
    reduction: str = "mean"

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"`fn` must be callable, but got {self.fn!r}.")
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"`name` must be a non-empty string, but got {self.name!r}.")
        if not isinstance(self.lower_is_better, bool):
            raise TypeError(
                f"`lower_is_better` must be True or False, but got {self.lower_is_better!r}."
            )

    @property
    def direction(self) -> str:
        """``"minimize"`` or ``"maximize"``, as Optuna names a study's direction."""
        return "minimize" if self.lower_is_better else "maximize"

    def batch_total(self, outputs: Any, targets: Any, n: int) -> torch.Tensor:
        """The metric summed over one batch of ``n`` samples."""
        value = self.fn(outputs, targets)
        value = value.detach().double() if torch.is_tensor(value) else torch.tensor(float(value))
        return value if self.reduction == "sum" else value * n


def default_loss(task: str) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """Cross-entropy for classification, mean squared error for regression."""
    if task == "classification":
        return lambda out, y: F.cross_entropy(logits(out), y)
    return lambda out, y: F.mse_loss(logits(out), y)


def _error_sum(out: Any, y: torch.Tensor) -> torch.Tensor:
    return (logits(out).argmax(dim=1) != y).sum()


def resolve_metric(
    metric: str | Metric, task: str, loss_fn: Callable[[Any, Any], torch.Tensor]
) -> Metric:
    """The :class:`Metric` for ``fit``'s ``metric`` argument.

    Raises:
        TypeError: If ``metric`` is a bare callable (wrap it in :class:`Metric`) or another
            type.
        ValueError: If the name is unknown, or ``"error"`` is asked of a regression task.
    """
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        raise TypeError(
            "`metric` is a bare callable: wrap it as optuna_bs.Metric(fn, name=..., "
            "lower_is_better=...) so that fit knows which way it improves."
        )
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS} or a Metric, but got {metric!r}.")
    if metric == "error":
        if task != "classification":
            raise ValueError(f"`metric` is 'error', but the data is a {task} task: use 'loss'.")
        return Metric(_error_sum, "val_error", reduction="sum")

    def loss_sum(out: Any, y: Any) -> torch.Tensor:
        return loss_fn(out, y).float() * len(y)

    return Metric(loss_sum, "val_loss", reduction="sum")
