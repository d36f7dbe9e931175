"""What a batch costs and what a validation epoch scores: losses, metrics and evaluation.

A loss is ``loss_fn(outputs, targets) -> scalar`` (the batch mean); the default is
cross-entropy for classification and mean squared error for regression. A validation metric
is ``"error"`` (classification error), ``"loss"`` (the validation loss), or a :class:`Metric`
that wraps the user's ``(outputs, targets) -> float`` and says whether lower is better.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from optuna_bs.train import sources
from optuna_bs.train._accelerate import Accelerator
from optuna_bs.train.sources import as_source, batch_len, forward, logits, to_device, unpack
from optuna_bs.vocabulary import METRICS, metric_name

if TYPE_CHECKING:
    from optuna_bs.data.datasets import Data
    from optuna_bs.train.sources import Datasets

_logger = logging.getLogger(__name__)


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
        return Metric(_error_sum, metric_name("error"), reduction="sum")

    def loss_sum(out: Any, y: Any) -> torch.Tensor:
        return loss_fn(out, y).float() * len(y)

    return Metric(loss_sum, metric_name("loss"), reduction="sum")


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    metric: str | Metric = "error",
    task: str = "classification",
    batch_size: int = 4096,
    loss_fn: Callable | None = None,
) -> float:
    """Return the classification error, the mean loss or a :class:`Metric` on ``(x, y)``."""
    m = resolve_metric(metric, task, loss_fn or default_loss(task))
    return Validator(_Tensors(x, y), m, None, Accelerator(x.device), batch_size, "test")(model)


def evaluate_split(
    model: torch.nn.Module,
    data: Data | Datasets,
    split_name: str = "test",
    *,
    metric: str | Metric = "error",
    loss_fn: Callable | None = None,
    batch_size: int = 1024,
) -> float | None:
    """The metric of ``model`` on a split of a ``Data`` or ``Datasets``; ``None`` if empty."""
    source = as_source(data)
    if not source.split_size(split_name):
        return None
    device = next(model.parameters()).device
    m = resolve_metric(metric, source.task, loss_fn or default_loss(source.task))
    return Validator(source, m, None, Accelerator(device), batch_size, split_name)(model)


class _Tensors(sources.TensorSource):
    """One split of tensors, as a source's evaluation batches (its ``"test"`` split)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.data = SimpleNamespace(x_test=x, y_test=y)


class Validator:
    """The metric of a model on one split, batch by batch; halves its batch on out of memory."""

    def __init__(self, source, metric: Metric, batch_loss, accel, batch_size: int, split="val"):
        self.source, self.metric, self.batch_loss = source, metric, batch_loss
        self.accel, self.batch_size, self.split = accel, batch_size, split

    def __call__(self, net: torch.nn.Module) -> float:
        while True:
            try:
                return self._run(net)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
            free_memory(self.accel.device)  # outside the except block that pins the batch
            self.batch_size //= 2
            _logger.info("Out of memory in validation: its batch is now %d.", self.batch_size)

    @torch.no_grad()
    def _run(self, net: torch.nn.Module) -> float:
        was_training = net.training
        net.eval()
        total = torch.zeros((), device=self.accel.device, dtype=torch.float64)
        pin = self.accel.device.type == "cuda"
        for batch in self.source.eval_batches(self.split, self.batch_size, pin):
            batch = to_device(batch, self.accel.device)
            n = batch_len(batch)
            with self.accel.autocast():
                if self.batch_loss is not None and self.metric.name == "val_loss":
                    total += self.batch_loss(net, batch).double() * n
                    continue
                inputs, targets = unpack(batch)
                out = forward(net, self.accel.inputs(inputs, train=False))
            out = out.float() if torch.is_tensor(out) else out
            total += self.metric.batch_total(out, targets, n).to(total.device)
        net.train(was_training)
        return total.item() / self.source.split_size(self.split)


def free_memory(device: torch.device) -> None:
    """Collect garbage and, on a GPU, return the cached blocks (after an out-of-memory error)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _class_labels(dataset: Any) -> Any:
    """The class ids of a dataset that shows them without a pass over it; else ``None``."""
    from torch.utils.data import Subset, TensorDataset

    if isinstance(dataset, Subset):
        labels = _class_labels(dataset.dataset)
        return None if labels is None else labels[torch.as_tensor(dataset.indices)]
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[-1]
    else:
        labels = getattr(dataset, "targets", None)
    if labels is None:
        return None
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        return None
    if labels.dim() != 1 or not labels.numel() or labels.is_floating_point():
        return None
    return labels


def constant_guess_error(dataset: Any) -> float | None:
    """The error of always guessing the commonest class of ``dataset``'s labels (1 − its
    share), where the dataset shows them without a pass over it; else ``None``."""
    labels = _class_labels(dataset)
    if labels is None:
        return None
    counts = torch.unique(labels, return_counts=True)[1]
    return 1.0 - counts.max().item() / labels.numel() if len(counts) > 1 else None
