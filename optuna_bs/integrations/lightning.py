"""The coupled search inside ``lightning.pytorch``: a callback for the trial's Trainer.

::

    from optuna_bs.integrations.lightning import TrialCallback, batch_settings

    def objective(trial):
        hp = space.suggest(trial)
        plan = batch_settings(hp, max_micro_batch=64)  # B = batch_size x accumulation
        callback = TrialCallback(trial, hp, monitor="val_error", patience=3,
                                 checkpoint_dir="checkpoints")
        trainer = L.Trainer(max_epochs=20, accumulate_grad_batches=plan["accumulate_grad_batches"],
                            limit_train_batches=plan["limit_train_batches"],  # whole updates
                            callbacks=[callback])
        trainer.fit(MyModule(lr=hp.lr, momentum=hp.momentum),
                    datamodule=MyData(batch_size=plan["batch_size"]),
                    ckpt_path=callback.ckpt_path)
        return callback.result()

Each validation epoch the callback reports the monitored metric to the trial, prunes through
the study's pruner and early-stops on ``patience`` (:class:`~optuna_bs.TrialMonitor`); a
pruned or diverged run stops the Trainer, and :meth:`TrialCallback.result` then raises
:class:`optuna.TrialPruned`. It never raises inside Lightning, so under DDP every rank stops at
the same epoch and leaves ``fit`` cleanly.

**DDP.** Run the script under ``torchrun`` with ``optuna_bs.train.optimize``: every rank
gets the same trial (a ``TorchDistributedTrial``), and the callback feeds every rank's monitor
rank 0's numbers, so every rank takes the same decision. Log the metric with
``self.log(..., sync_dist=True)``, or rank 0's value covers its share of the validation set
only; and give ``batch_settings`` the ``world_size``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from optuna_bs.rules.batch import check_effective_batch, plan_batch
from optuna_bs.train._checkpoints import (
    OWNER_KEY,
    checkpoint_file,
    owner_of,
    resumable,
    retried_trials,
    study_folder,
    study_name,
)
from optuna_bs.train.distributed import is_distributed_trial, leave_at_exit
from optuna_bs.train.monitor import TrialMonitor
from optuna_bs.train.sources import batch_len

try:
    import lightning.pytorch as pl
except ImportError as err:
    raise ImportError(
        'optuna_bs.integrations.lightning needs lightning: pip install "optuna-bs[lightning]"'
    ) from err

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

    from optuna_bs.rules.formulas import Hyperparameters

__all__ = ["TrialCallback", "batch_settings"]

_logger = logging.getLogger(__name__)


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


class TrialCallback(pl.Callback):
    """Report, prune, early-stop and record one Optuna trial trained by a Lightning Trainer.

    Args:
        trial: The trial (a ``TorchDistributedTrial`` on every rank under DDP), or ``None``
            for plain early stopping.
        hparams: The trial's hyperparameters (``space.suggest(trial)``): the effective batch
            is checked against ``hparams.batch_size``.
        monitor: The logged validation metric (``self.log("val_error", ...)``).
        direction: ``"minimize"`` or ``"maximize"``, as the study.
        patience: Validation epochs without improvement before stopping; ``None`` never.
        min_delta: The improvement that counts.
        chance_value: The monitored error of a model that learned nothing: that of always
            guessing the commonest class, 1 − its share of the training labels (``1 − 1/C``
            for C balanced classes, less where one class dominates). A run whose training
            loss rose over 10x with no gain over its first epoch ends ``"diverged"`` where
            its error sits within 5% of this (:class:`~optuna_bs.TrialMonitor`); a run that
            learned something goes on. ``"auto"`` (the default) reads it off the training
            labels when ``monitor`` is an error and the dataset shows them without a pass
            (a ``TensorDataset`` whose last tensor holds class ids, a dataset with
            ``targets``, a ``Subset`` of either); otherwise, or with ``None``, any such run
            ends ``"diverged"``.
        checkpoint_dir: Where to save ``trial_{number}.ckpt`` at each validation epoch (in a
            folder of the study's own), so a retried trial resumes from its dead trial's
            (:attr:`ckpt_path`), once it has checked that the file is that trial's;
            ``None``, or a trial without a study, keeps none.

    Raises:
        ValueError: At the start of training, if per-device batch × ``accumulate_grad_batches``
            × world size is not B, if an epoch's micro-batches do not make whole updates
            (give the Trainer ``batch_settings(...)["limit_train_batches"]``), or if under DDP
            the trial is not shared by every rank.
    """

    def __init__(
        self,
        trial: BaseTrial | None,
        hparams: Hyperparameters,
        *,
        monitor: str = "val_error",
        direction: str = "minimize",
        patience: int | None = None,
        min_delta: float = 0.0,
        chance_value: float | str | None = "auto",
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if chance_value != "auto" and not (
            chance_value is None or isinstance(chance_value, int | float)
        ):
            raise TypeError(
                f"`chance_value` must be a number, 'auto' or None, but got {chance_value!r}."
            )
        self.trial = trial
        self.hparams = hparams
        self.chance_value = chance_value
        self.monitor = TrialMonitor(
            trial,
            patience=patience,
            min_delta=min_delta,
            metric=monitor,
            direction=direction,
            chance_value=None if chance_value == "auto" else chance_value,
        )
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self._resumed_from: int | None = None
        self._owner: dict | None = None
        self._reset_epoch()

    # --- resuming -------------------------------------------------------------------------

    @property
    def checkpoint_folder(self) -> Path | None:
        """The folder of this study's checkpoints, under ``checkpoint_dir``."""
        name = study_name(self.trial)
        if self.checkpoint_dir is None or name is None:
            return None
        return study_folder(self.checkpoint_dir, name)

    @property
    def checkpoint_path(self) -> Path | None:
        """This trial's checkpoint, saved at each validation epoch."""
        folder = self.checkpoint_folder
        return None if folder is None else checkpoint_file(folder, self.trial.number, ".ckpt")

    @property
    def ckpt_path(self) -> str | None:
        """``Trainer.fit``'s ``ckpt_path``: the last checkpoint of the dead trial that this
        trial retries, or ``None`` for a fresh trial (or where that file is not the dead
        trial's)."""
        folder = self.checkpoint_folder
        found = None if folder is None else resumable(self.trial, folder, ".ckpt")
        if found is None:
            return None
        self._resumed_from = found[0]
        return str(found[1])

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state goes into each Lightning checkpoint, and comes back on resume
        (the retried trial then gets the dead trial's curve)."""
        return {"monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state_dict["monitor"])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Each checkpoint records whose it is, for the retry that may resume it."""
        checkpoint[OWNER_KEY] = self._owner

    # --- the run --------------------------------------------------------------------------

    def _reset_epoch(self) -> None:
        self._loss_sum = 0.0
        self._batches = 0
        self._samples = 0
        self._busy = 0.0
        self._tic: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            trainer.world_size > 1
            and self.trial is not None
            and not is_distributed_trial(self.trial)
        ):
            raise ValueError(
                f"`trial` must be shared by all {trainer.world_size} ranks under DDP (run the "
                "study with optuna_bs.train.optimize under torchrun), or each rank would "
                "prune on its own."
            )
        if trainer.world_size > 1:
            leave_at_exit()  # the strategy's process group, destroyed before the interpreter
        self.monitor.pruned_ = None
        self._owner = owner_of(self.trial)
        if self._resumed_from is not None and self.trial is not None:
            self.trial.set_user_attr("resumed_from_trial", self._resumed_from)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        per_device = _loader_batch_size(loader)
        _warn_partial_batches(loader, per_device, trainer.world_size)
        plan = check_effective_batch(
            self.hparams.batch_size,
            per_device,
            trainer.accumulate_grad_batches,
            trainer.world_size,
        )
        _check_whole_updates(trainer.num_training_batches, plan.accumulation)
        if self.chance_value == "auto" and self.monitor.direction == "minimize":
            if "error" in self.monitor.metric:
                self.monitor.chance_value = _constant_guess_error(_first_loader(loader))
        self._epoch_start_step = trainer.global_step
        self.monitor.attrs.update(
            micro_batch_size=plan.per_device,
            accumulation_steps=plan.accumulation,
            world_size=plan.world_size,
            resumed_from_epoch=self.monitor.epoch_,
        )
        if trainer.optimizers:
            from optuna_bs.train.optimizers import optimizer_attrs

            self.monitor.attrs.update(optimizer_attrs(trainer.optimizers[0], self.hparams))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_epoch()
        self._epoch_start_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._tic = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._tic is not None:
            self._busy += time.perf_counter() - self._tic
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            loss = loss.detach()
            if self.monitor.reference_loss_ is None:  # once per run: the loss at init
                first = float(loss)
                self.monitor.reference_loss_ = first if math.isfinite(first) else None
            # Summed where it lives: no host sync per batch (one per epoch, at validation).
            self._loss_sum = loss.float() + self._loss_sum
            self._batches += 1
        self._samples += batch_len(batch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor.metric)
        if value is None:
            raise ValueError(
                f"`monitor` is {self.monitor.metric!r}, but the validation logged only "
                f"{sorted(trainer.callback_metrics)}: log it with self.log()."
            )
        train_loss = float(self._loss_sum) / self._batches if self._batches else None
        path = self.checkpoint_path

        def keep() -> None:  # the checkpoint a retry of this trial resumes from
            trainer.save_checkpoint(path, weights_only=False)

        stop = self.monitor.end_epoch(
            float(value),
            train_loss=train_loss,
            updates=trainer.global_step - self._epoch_start_step,
            samples=self._samples * trainer.world_size,
            step_seconds=self._busy,
            share=trainer.strategy.broadcast if trainer.world_size > 1 else None,
            keep=None if path is None else keep,
            defer_prune=True,
        )
        self._epoch_start_step = trainer.global_step
        self._samples, self._busy = 0, 0.0
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.monitor.finish()

    def result(self) -> float:
        """The trial's value: the best validation epoch's metric.

        The run is over, so its checkpoint, and those of the dead trials it retried, are
        deleted (rank 0's files).

        Raises:
            optuna.TrialPruned: If the run was pruned or diverged.
        """
        folder = self.checkpoint_folder
        if folder is not None:
            for number in [*retried_trials(self.trial), self.trial.number]:
                checkpoint_file(folder, number, ".ckpt").unlink(missing_ok=True)
        if self.pruned_ is not None:
            raise self.pruned_
        return self.monitor.best_value_

    @property
    def pruned_(self) -> optuna.TrialPruned | None:
        """The prune the run ended with (raised by :meth:`result`), or ``None``."""
        return self.monitor.pruned_


def _check_whole_updates(micro_batches: float, accumulation: int) -> None:
    """Refuse an epoch whose micro-batches do not make whole updates of B."""
    if not math.isfinite(micro_batches) or micro_batches % accumulation == 0:
        return
    whole = int(micro_batches) // accumulation * accumulation
    raise ValueError(
        f"Each epoch has {int(micro_batches)} micro-batches per device, not a multiple of "
        f"accumulate_grad_batches={accumulation}: its last update would be "
        f"{int(micro_batches) - whole} micro-batch(es), not B; give the Trainer "
        f"limit_train_batches={whole} (batch_settings(...)['limit_train_batches'])."
    )


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


def _first_loader(loaders: Any) -> Any:
    if isinstance(loaders, dict | list | tuple):
        return next(iter(loaders.values() if isinstance(loaders, dict) else loaders))
    return loaders


def _class_labels(dataset: Any) -> Any:
    """The class ids of a dataset that shows them without a pass over it; else ``None``."""
    import torch
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


def _constant_guess_error(loader: Any) -> float | None:
    """The error of always guessing the commonest class of the loader's training labels."""
    import torch

    labels = _class_labels(getattr(loader, "dataset", None))
    if labels is None:
        return None
    counts = torch.unique(labels, return_counts=True)[1]
    return 1.0 - counts.max().item() / labels.numel() if len(counts) > 1 else None


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
