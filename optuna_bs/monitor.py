"""Report, prune and early-stop for any training loop, in three lines.

``TrialMonitor`` is the one place where optuna-bs decides, epoch by epoch, whether a run goes on.
The built-in trainer (:func:`optuna_bs.fit`) uses it, and so can a user's own loop::

    monitor = TrialMonitor(trial, patience=5)
    for epoch in range(max_epochs):
        train_one_epoch(model, ...)
        if monitor.step(validation_error(model, ...)):
            break
    return monitor.best_value_
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import TYPE_CHECKING

import optuna

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = ["TrialMonitor", "STOP_REASONS"]

_logger = logging.getLogger(__name__)

#: Every value a trial's ``stop_reason`` user attr can take.
STOP_REASONS = ("completed", "early_stopped", "pruned", "diverged", "oom")


class TrialMonitor:
    """Early stopping plus Optuna pruning on a validation value that is minimised.

    Call :meth:`step` once per epoch, after validation, with the epoch's validation value
    (error or loss). It reports the value to the trial as intermediate value ``epoch``, asks
    the study's pruner whether to stop, and counts epochs without improvement.

    * When the pruner says so, or the value is NaN or inf, it records ``stop_reason``
      (``"pruned"`` or ``"diverged"``) on the trial and raises :class:`optuna.TrialPruned`
      with a message naming the epoch. Without a trial, a diverged run makes ``step`` return
      ``True`` instead.
    * After ``patience`` epochs without an improvement of more than ``min_delta``, ``step``
      returns ``True``: the loop should stop, restore its best weights and return
      :attr:`best_value_`. The trial then completes normally with its *best* epoch's value.

    Learned state ends in an underscore and is reset by :meth:`reset`, so one monitor can be
    used for several fits (as skorch's ``EarlyStopping``).

    Args:
        trial: The Optuna trial to report to, or ``None`` for plain early stopping.
        patience: Epochs without improvement before stopping; ``None`` never stops early.
        min_delta: The improvement, in the value's units, that counts as one.
        metric: The name of the monitored value, recorded on the trial as ``metric``.

    Raises:
        TypeError: If ``patience`` is not an integer or ``None``, or ``min_delta`` not a
            number.
        ValueError: If ``patience`` < 1 or ``min_delta`` < 0.

    Example:
        >>> monitor = TrialMonitor(None, patience=2)
        >>> [monitor.step(v) for v in (0.5, 0.4, 0.45, 0.41)]
        [False, False, False, True]
        >>> monitor.best_value_, monitor.best_epoch_, monitor.stop_reason_
        (0.4, 2, 'early_stopped')
    """

    def __init__(
        self,
        trial: BaseTrial | None,
        *,
        patience: int | None = None,
        min_delta: float = 0.0,
        metric: str = "val_error",
    ) -> None:
        if patience is not None:
            if isinstance(patience, bool) or not isinstance(patience, int):
                raise TypeError(f"`patience` must be an integer or None, but got {patience!r}.")
            if patience < 1:
                raise ValueError(f"`patience` must be >= 1 or None, but got patience={patience}.")
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real):
            raise TypeError(f"`min_delta` must be a number, but got min_delta={min_delta!r}.")
        if not min_delta >= 0:  # also rejects NaN
            raise ValueError(
                f"`min_delta` must be a number >= 0, but got min_delta={min_delta!r}."
            )
        self.trial = trial
        # Optuna cannot report intermediate values of a multi-objective trial, nor prune it.
        study = getattr(trial, "study", None)
        self._reports = trial is not None and (study is None or len(study.directions) == 1)
        self.patience = patience
        self.min_delta = float(min_delta)
        self.metric = metric
        self.reset()

    def reset(self) -> None:
        """Forget everything learned: call before a new fit."""
        self.epoch_ = 0
        self.best_value_ = math.inf
        self.best_epoch_ = 0
        self.misses_ = 0
        self.improved_ = False
        self.stop_reason_: str | None = None
        self.history_: list[float] = []

    def step(self, value: float) -> bool:
        """Take one epoch's validation value; return ``True`` when training should stop.

        The same as :meth:`update` then :meth:`check`.

        Args:
            value: The epoch's validation value (lower is better).

        Returns:
            ``True`` when patience has run out (or, without a trial, the run diverged).
            :attr:`improved_` tells whether this epoch is the best so far.

        Raises:
            optuna.TrialPruned: If the pruner stops the trial or the value is not finite.
        """
        self.update(value)
        return self.check()

    def update(self, value: float) -> None:
        """Count one epoch's validation value, without reporting it.

        A trainer that checkpoints calls ``update``, saves, then :meth:`check`, so a
        checkpoint never misses a value the trial has already seen.
        """
        value = float(value)
        self.epoch_ += 1
        self.history_.append(value)
        self.improved_ = math.isfinite(value) and value < self.best_value_ - self.min_delta
        if self.improved_:
            self.best_value_, self.best_epoch_, self.misses_ = value, self.epoch_, 0
        else:
            self.misses_ += 1

    def check(self) -> bool:
        """Report the last value to the trial and decide: stop, prune, or go on.

        Returns:
            ``True`` when patience has run out (or, without a trial, the run diverged).

        Raises:
            optuna.TrialPruned: If the pruner stops the trial or the value is not finite.
        """
        value = self.history_[-1]
        if not math.isfinite(value):
            return self.stop("diverged", f"validation value {value} at epoch {self.epoch_}")
        if self._reports:
            self.trial.report(value, self.epoch_)
            if self.trial.should_prune():
                return self.stop("pruned", f"{self.metric}={value:.4g} at epoch {self.epoch_}")
        if self.patience is not None and self.misses_ >= self.patience:
            self.stop_reason_ = "early_stopped"
            return True
        return False

    def state_dict(self) -> dict:
        """The learned state, for a checkpoint (plain Python values only)."""
        return {
            "epoch": self.epoch_,
            "best_value": self.best_value_,
            "best_epoch": self.best_epoch_,
            "misses": self.misses_,
            "improved": self.improved_,
            "history": list(self.history_),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.epoch_ = int(state["epoch"])
        self.best_value_ = float(state["best_value"])
        self.best_epoch_ = int(state["best_epoch"])
        self.misses_ = int(state["misses"])
        self.improved_ = bool(state["improved"])
        self.history_ = [float(v) for v in state["history"]]
        self.stop_reason_ = None

    def stop(self, reason: str, detail: str) -> bool:
        """End the run now for ``reason`` (one of :data:`STOP_REASONS`).

        With a trial, ``"pruned"``, ``"diverged"`` and ``"oom"`` are recorded as the trial's
        ``stop_reason`` and raise :class:`optuna.TrialPruned`; without one, return ``True``.
        """
        if reason not in STOP_REASONS:
            raise ValueError(f"`reason` must be one of {STOP_REASONS}, but got {reason!r}.")
        self.stop_reason_ = reason
        if self.trial is None or reason in ("completed", "early_stopped"):
            return True
        self.trial.set_user_attr("stop_reason", reason)
        self.trial.set_user_attr("metric", self.metric)
        _logger.info("Trial %d %s: %s.", self.trial.number, reason, detail)
        raise optuna.TrialPruned(f"{reason}: {detail}")
