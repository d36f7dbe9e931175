"""Lightning's batches at the trial's B: the Trainer's settings that make it
(:func:`batch_settings`), and what the callback checks as a trial starts to train: whole
updates of B, from a training DataLoader that says its batch."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from optuna_bs.rules.batch import BatchPlan, check_effective_batch, plan_batch
from optuna_bs.train.distributed import is_distributed_trial

if TYPE_CHECKING:
    from optuna_bs.rules.formulas import Hyperparameters


def batch_settings(
    hparams: Hyperparameters, max_micro_batch: int | None = None, world_size: int = 1
) -> dict[str, int]:
    """The DataModule's per-device ``batch_size``, and the Trainer's ``accumulate_grad_batches``
    and ``limit_train_batches``, that make every update of the trial's B on ``world_size``
    devices, each holding at most ``max_micro_batch`` samples.

    ``limit_train_batches`` keeps the micro-batches that make whole updates, ``n_train // B``
    per epoch as :func:`optuna_bs.fit` makes: Lightning would otherwise end an epoch whose
    micro-batches do not fill the last update with a short one (its loss still divided by the
    accumulation steps), an update neither at B nor of the weight of the others.

    Example:
        >>> from optuna_bs import Hyperparameters
        >>> batch_settings(Hyperparameters(256, 0.1, 0.9, n_train=4000), max_micro_batch=64)
        {'batch_size': 64, 'accumulate_grad_batches': 4, 'limit_train_batches': 60}
    """
    plan = plan_batch(hparams.batch_size, max_micro_batch, world_size)
    return {
        "batch_size": plan.per_device,
        "accumulate_grad_batches": plan.accumulation,
        "limit_train_batches": hparams.n_train // hparams.batch_size * plan.accumulation,
    }


def check_trial(trial: Any, world_size: int) -> None:
    """Under DDP, a trial that every rank shares, or each rank would prune on its own."""
    if world_size > 1 and trial is not None and not is_distributed_trial(trial):
        raise ValueError(
            f"`trial` must be shared by all {world_size} ranks under DDP (run the study with "
            "optuna_bs.train.optimize under torchrun), or each rank would prune on its own."
        )


def check_batches(trainer: Any, batch_size: int) -> BatchPlan:
    """The Trainer's plan of B: per-device batch, accumulation and world size, checked to
    make B, in whole updates (a warning for a DataLoader that keeps a short last batch)."""
    loader = trainer.train_dataloader
    per_device = _loader_batch_size(loader)
    _warn_partial_batches(loader, per_device, trainer.world_size)
    plan = check_effective_batch(
        batch_size, per_device, trainer.accumulate_grad_batches, trainer.world_size
    )
    micro, accumulation = trainer.num_training_batches, plan.accumulation
    if math.isfinite(micro) and micro % accumulation:
        whole = int(micro) // accumulation * accumulation
        raise ValueError(
            f"Each epoch has {int(micro)} micro-batches per device, not a multiple of "
            f"accumulate_grad_batches={accumulation}: its last update would be "
            f"{int(micro) - whole} micro-batch(es), not B; give the Trainer "
            f"limit_train_batches={whole} (batch_settings(...)['limit_train_batches'])."
        )
    return plan


def _warn_partial_batches(loader: Any, per_device: int, world_size: int) -> None:
    """Warn when each epoch ends with a batch smaller than B (the rules assume B)."""
    dataset = getattr(loader, "dataset", None)
    if getattr(loader, "drop_last", True) or not hasattr(dataset, "__len__"):
        return
    if len(dataset) % (per_device * world_size):
        warnings.warn(
            f"The training DataLoader keeps a last batch smaller than {per_device} per device "
            f"({len(dataset)} samples): that update is not at the trial's B. Give it "
            "drop_last=True.",
            stacklevel=2,
        )


def logged(trainer: Any, name: str) -> Any:
    """The validation's logged ``name``; a clear error where it was not logged."""
    value = trainer.callback_metrics.get(name)
    if value is None:
        raise ValueError(
            f"`monitor` is {name!r}, but the validation logged only "
            f"{sorted(trainer.callback_metrics)}: log it with self.log()."
        )
    return value


def train_dataset(trainer: Any) -> Any:
    """The Trainer's (first) training dataset, or ``None``."""
    return getattr(_first_loader(trainer.train_dataloader), "dataset", None)


def _first_loader(loaders: Any) -> Any:
    if isinstance(loaders, dict | list | tuple):
        return next(iter(loaders.values() if isinstance(loaders, dict) else loaders))
    return loaders


def _loader_batch_size(loaders: Any) -> int:
    """The per-device batch of the Trainer's training DataLoader."""
    loader = _first_loader(loaders)
    size = getattr(loader, "batch_size", None)
    if size is None:
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    if not isinstance(size, int):
        raise ValueError(
            "The training DataLoader has no batch_size to check the effective batch against: "
            "give it batch_size=batch_settings(hparams)['batch_size']."
        )
    return size
