"""The coupled search inside ``lightning.pytorch``: a callback for the trial's Trainer.

::

    from optuna_bs.integrations.lightning import TrialCallback, batch_settings

    def objective(trial):
        hp = space.suggest(trial)
        plan = batch_settings(hp, max_micro_batch=64)  # B = batch_size x accumulation
        callback = TrialCallback(trial, hp, patience=3, checkpoint_dir="checkpoints")
        trainer = L.Trainer(max_epochs=20, callbacks=[callback],
                            accumulate_grad_batches=plan["accumulate_grad_batches"],
                            limit_train_batches=plan["limit_train_batches"])  # whole updates
        trainer.fit(MyModule(hp), datamodule=MyData(plan["batch_size"]),
                    ckpt_path=callback.ckpt_path)  # a retry resumes its dead trial's
        return callback.result()

Each validation takes ``fit``'s end-of-epoch decision (``TrialMonitor.end_epoch``); a pruned
run stops the Trainer and :meth:`TrialCallback.result` raises :class:`optuna.TrialPruned` after
``fit``. Under DDP (``optuna_bs.train.optimize`` in ``torchrun``) every rank takes rank 0's
decision: log with ``sync_dist=True`` and give ``batch_settings`` the ``world_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from optuna_bs.integrations._lightning_batches import (
    batch_settings,
    check_batches,
    check_trial,
    logged,
    train_dataset,
)
from optuna_bs.train._checkpoints import OWNER_KEY, StudyCheckpoints, owner_of
from optuna_bs.train._tally import EpochTally
from optuna_bs.train.distributed import leave_at_exit
from optuna_bs.train.metrics import constant_guess_error
from optuna_bs.train.monitor import TrialMonitor
from optuna_bs.train.optimizers import optimizer_attrs
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


class TrialCallback(pl.Callback):
    """Report, prune, early-stop and record one Optuna trial trained by a Lightning Trainer.

    Args:
        trial: The trial (shared by every rank under DDP), or ``None`` to early-stop only.
        hparams: The trial's hyperparameters (``space.suggest(trial)``), its B checked.
        monitor: The logged validation metric (``self.log("val_error", ...)``).
        direction, patience, min_delta: As :class:`~optuna_bs.TrialMonitor`'s: the study's
            direction, validations without improvement before stopping, the gain that counts.
        chance_value: The error of a model that learned nothing, which tells a collapsed run
            (``"diverged"``) from one that learned (:class:`~optuna_bs.TrialMonitor`).
            ``"auto"``: 1 − the commonest class's share of the training labels, where
            ``monitor`` is an error and the dataset shows them without a pass (a
            ``TensorDataset``, a dataset with ``targets``, a ``Subset`` of either).
        checkpoint_dir: Where to save ``trial_{number}.ckpt`` at each validation epoch (in
            the study's own folder), for a retry to resume (:attr:`ckpt_path`).

    Raises:
        ValueError: As training starts, if the Trainer's updates are not whole updates of B
            (:func:`batch_settings` gives them), or if under DDP the ranks do not share the
            trial.
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
        if chance_value != "auto" and not isinstance(chance_value, int | float | None):
            raise TypeError(f"`chance_value` must be a number, 'auto' or None: {chance_value!r}.")
        self.trial, self.hparams, self.chance_value = trial, hparams, chance_value
        self.monitor = TrialMonitor(
            trial,
            patience=patience,
            min_delta=min_delta,
            metric=monitor,
            direction=direction,
            chance_value=None if chance_value == "auto" else chance_value,
        )
        self.checkpoint_dir = checkpoint_dir
        self.tally = EpochTally(self.monitor)
        self._resumed_from, self._owner = None, None

    @property
    def checkpoints(self) -> StudyCheckpoints | None:
        """This study's checkpoints, in a folder of its own under ``checkpoint_dir``."""
        return StudyCheckpoints.of(self.checkpoint_dir, self.trial, suffix=".ckpt")

    @property
    def ckpt_path(self) -> str | None:
        """``Trainer.fit``'s ``ckpt_path``: the last checkpoint of the dead trial this trial
        retries, if that file is that trial's; else ``None``."""
        found = self.checkpoints and self.checkpoints.resumable(self.trial)
        self._resumed_from = found[0] if found else None
        return str(found[1]) if found else None

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state, in each checkpoint: a retry gets the dead trial's curve."""
        return {"monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state_dict["monitor"])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Each checkpoint records whose it is, for the retry that may resume it."""
        checkpoint[OWNER_KEY] = self._owner

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_trial(self.trial, trainer.world_size)
        if trainer.world_size > 1:
            leave_at_exit()  # the strategy's process group, destroyed before the interpreter
        self.monitor.pruned_ = None
        self._owner = owner_of(self.trial)
        if self._resumed_from is not None and self.trial is not None:
            self.trial.set_user_attr("resumed_from_trial", self._resumed_from)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        plan = check_batches(trainer, self.hparams.batch_size)
        monitor = self.monitor
        if self.chance_value == "auto" and monitor.direction == "minimize":
            if "error" in monitor.metric:
                monitor.chance_value = constant_guess_error(train_dataset(trainer))
        self.tally.restart(trainer.global_step)
        monitor.attrs.update(**plan.attrs, resumed_from_epoch=monitor.epoch_)
        if trainer.optimizers:
            monitor.attrs.update(optimizer_attrs(trainer.optimizers[0], self.hparams))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tally.restart(trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.tally.tic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.tally.toc()
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.tally.add(loss, batch_len(batch) * trainer.world_size)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        path = self.checkpoints and self.checkpoints.path(self.trial.number)

        def keep() -> None:  # the checkpoint a retry of this trial resumes from
            trainer.save_checkpoint(path, weights_only=False)

        if self.tally.end_epoch(
            logged(trainer, self.monitor.metric),
            trainer.global_step,
            share=trainer.strategy.broadcast if trainer.world_size > 1 else None,
            keep=path and keep,
        ):
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.monitor.finish()

    def result(self) -> float:
        """The trial's value, its best validation's, once its checkpoints (and its dead
        trials') are deleted; raises :class:`optuna.TrialPruned` if pruned or diverged."""
        if self.checkpoints is not None:
            self.checkpoints.drop(self.trial)
        if self.pruned_ is not None:
            raise self.pruned_
        return self.monitor.best_value_

    @property
    def pruned_(self) -> optuna.TrialPruned | None:
        """The prune the run ended with (raised by :meth:`result`), or ``None``."""
        return self.monitor.pruned_
