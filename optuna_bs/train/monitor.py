"""Report, prune, early-stop and record, for any training loop.

``TrialMonitor`` is the one place where optuna-bs decides, epoch by epoch, whether a run goes on,
and the one place that writes what happened onto the trial (:data:`RUN_ATTRS`). The built-in
trainer (:func:`optuna_bs.fit`) uses it, and so can a user's own loop::

    with TrialMonitor(trial, patience=5) as monitor:
        for epoch in range(max_epochs):
            updates, samples = train_one_epoch(model, ...)
            if monitor.step(validation_error(model, ...), updates=updates, samples=samples):
                break
    return monitor.best_value_

The ``with`` block records ``best_epoch``, ``epochs_run``, ``stop_reason``, ``n_updates``,
``train_seconds`` and ``samples_per_second`` however the run ends, which is what
``optuna-bs report`` and its Pareto fronts read. (Without ``with``, pass ``max_epochs`` or call
:meth:`TrialMonitor.finish` after the loop.)
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from optuna_bs._validation import check_int, check_real
from optuna_bs.vocabulary import DIRECTIONS, RUN_ATTRS, STOP_REASONS

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

#: With the names of the flat layout's ``optuna_bs.monitor``, which still imports as this module.
__all__ = ["TrialMonitor", "STOP_REASONS", "RUN_ATTRS", "DIRECTIONS"]

_logger = logging.getLogger(__name__)


class TrialMonitor:
    """Early stopping plus Optuna pruning on a validation value, and the run's record.

    Call :meth:`step` once per epoch, after validation, with the epoch's validation value
    and, optionally, the epoch's parameter updates and training samples. It reports the value
    to the trial as intermediate value ``epoch``, asks the study's pruner whether to stop,
    and counts epochs without improvement.

    * When the pruner says so, or the value is NaN or inf, it records the run (below) with
      ``stop_reason`` ``"pruned"`` or ``"diverged"`` and raises :class:`optuna.TrialPruned`
      with a message naming the epoch. Without a trial, a diverged run makes ``step`` return
      ``True`` instead.
    * **A finite collapse is a divergence too.** When the loop passes ``train_loss``, an
      epoch whose training loss is more than ``collapse_factor`` times the reference loss
      (:attr:`reference_loss_`: the first update's loss where the loop sets it, else the
      first epoch's mean), from the second epoch on, while its validation value is no better
      than the first epoch's (and, with ``chance_value``, within 5% of chance) ends the run
      ``"diverged"``: a run stuck at chance error after its loss blew up, with no NaN to show
      it.
    * After ``patience`` epochs without an improvement of more than ``min_delta``, ``step``
      returns ``True``: the loop should stop, restore its best weights and return
      :attr:`best_value_`. The trial then completes normally with its *best* epoch's value.
    * **The record.** On every end (completed, early-stopped, pruned, diverged, out of
      memory) the trial gets the user attrs :data:`RUN_ATTRS` plus :attr:`attrs`: at a stop,
      when ``max_epochs`` epochs have run, on leaving a ``with`` block, or at :meth:`finish`,
      whichever comes first (once).

    Learned state ends in an underscore and is reset by :meth:`reset`, so one monitor can be
    used for several fits (as skorch's ``EarlyStopping``).

    Args:
        trial: The Optuna trial to report to, or ``None`` for plain early stopping.
        patience: Epochs without improvement before stopping; ``None`` never stops early.
        min_delta: The improvement, in the value's units, that counts as one.
        metric: The name of the monitored value, recorded on the trial as ``metric``.
        direction: ``"minimize"`` (an error or loss) or ``"maximize"`` (an accuracy); it
            must match the study's direction.
        max_epochs: The loop's epoch budget: the run is recorded as ``"completed"`` when it
            is reached. ``None`` leaves that to ``with`` or :meth:`finish`.
        collapse_factor: The rise of the training loss over the first epoch's that, with no
            validation gain over the first epoch, counts as a collapse (> 1).
        chance_value: The value of a model that learned nothing: for the error, that of
            always guessing the commonest class, 1 − its share (``1 − 1/C`` for C balanced
            classes). When given, a collapse must also sit within 5% of it.

    Raises:
        TypeError: If ``patience`` or ``max_epochs`` is not an integer or ``None``, or
            ``min_delta`` or ``collapse_factor`` not a number.
        ValueError: If ``patience`` or ``max_epochs`` < 1, ``min_delta`` < 0 or NaN,
            ``collapse_factor`` <= 1 or NaN, or ``direction`` is unknown or differs from the
            study's.

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
        direction: str = "minimize",
        max_epochs: int | None = None,
        collapse_factor: float = 10.0,
        chance_value: float | None = None,
    ) -> None:
        if patience is not None:
            check_int("patience", patience, low=1)
        self.min_delta = check_real("min_delta", min_delta, 0.0, finite=False)
        if direction not in DIRECTIONS:
            raise ValueError(
                f"`direction` must be one of {DIRECTIONS}, but got direction={direction!r}."
            )
        if max_epochs is not None:
            check_int("max_epochs", max_epochs, low=1)
        self.collapse_factor = check_real(
            "collapse_factor", collapse_factor, 1.0, low_open=True, finite=False
        )
        self.chance_value = None if chance_value is None else float(chance_value)
        self.trial = trial
        # Optuna cannot report intermediate values of a multi-objective trial, nor prune it.
        study = getattr(trial, "study", None)
        self._reports = trial is not None and (study is None or len(study.directions) == 1)
        if study is not None and study.directions[0].name.lower() != direction:
            raise ValueError(
                f"`direction` is {direction!r}, but the study's is "
                f"{study.directions[0].name.lower()!r}: {metric} would be pruned the wrong way."
            )
        self.patience = patience
        self.metric = metric
        self.direction = direction
        self.max_epochs = max_epochs
        #: Extra user attrs recorded with the run (``fit`` adds its micro-batch, say).
        self.attrs: dict[str, object] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything learned: call before a new fit."""
        self.epoch_ = 0
        self._sign = 1.0 if self.direction == "minimize" else -1.0
        self.best_value_ = self._sign * math.inf
        self.best_epoch_ = 0
        self.misses_ = 0
        self.improved_ = False
        self.stop_reason_: str | None = None
        self.history_: list[float] = []
        self.train_losses_: list[float | None] = []
        self.reference_loss_: float | None = None
        self.n_updates_ = 0
        self.n_samples_ = 0
        self.step_seconds_: float | None = None
        self.recorded_ = False
        self.pruned_: optuna.TrialPruned | None = None
        self._seconds_before = 0.0
        self._start = time.perf_counter()

    def __enter__(self) -> TrialMonitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A pruned run has been recorded by ``stop``; any other error leaves the trial FAIL.
        if exc_type is None:
            self.finish()

    @property
    def train_seconds_(self) -> float:
        """Wall-clock seconds since the monitor started (over every resumed part)."""
        return self._seconds_before + time.perf_counter() - self._start

    def step(
        self,
        value: float,
        *,
        updates: int = 0,
        samples: int = 0,
        step_seconds: float | None = None,
        train_loss: float | None = None,
    ) -> bool:
        """Take one epoch's validation value; return ``True`` when training should stop.

        The same as :meth:`update` then :meth:`check`.

        Args:
            value: The epoch's validation value.
            updates: The epoch's parameter updates (optimizer steps), for ``n_updates``.
            samples: The epoch's training samples, for ``samples_per_second``.
            step_seconds: The epoch's seconds in training steps only; without it,
                ``samples_per_second`` counts all wall-clock time.
            train_loss: The epoch's mean training loss, to catch a finite collapse.

        Returns:
            ``True`` when patience has run out (or, without a trial, the run diverged).
            :attr:`improved_` tells whether this epoch is the best so far.

        Raises:
            optuna.TrialPruned: If the pruner stops the trial or the value is not finite.
        """
        self.update(
            value,
            updates=updates,
            samples=samples,
            step_seconds=step_seconds,
            train_loss=train_loss,
        )
        return self.check()

    def end_epoch(
        self,
        value: float,
        *,
        train_loss: float | None = None,
        updates: int = 0,
        samples: int = 0,
        step_seconds: float | None = None,
        share: Callable[[Any], Any] | None = None,
        keep: Callable[[], None] | None = None,
        defer_prune: bool = False,
    ) -> bool:
        """The end-of-epoch decision: the one that ``fit``, the Lightning callback and the
        Hugging Face callback take. Return ``True`` when training should stop.

        1. Under several processes, ``share`` (a broadcast from rank 0) gives every rank rank
           0's value, training loss and reference loss, so every rank decides alike.
        2. A non-finite training loss is the epoch's value: the run ends ``"diverged"``.
        3. The epoch is counted (:meth:`update`).
        4. ``keep`` saves what the epoch leaves (the best weights, a checkpoint) *before* the
           value is reported: a worker killed in between re-reports it on resuming.
        5. The value is reported and judged (:meth:`check`). With ``defer_prune``, a prune is
           kept in :attr:`pruned_` and the epoch returns ``True`` instead of raising: for a
           framework that ends its own loop and raises it once training has ended.
        6. Under ``share``, rank 0's verdict is every rank's (only rank 0 may hold the trial).

        Raises:
            optuna.TrialPruned: Without ``defer_prune``, as :meth:`check`.
        """
        if share is not None:
            value, train_loss, self.reference_loss_ = share(
                (value, train_loss, self.reference_loss_)
            )
        if train_loss is not None and not math.isfinite(train_loss):
            value = train_loss
        self.update(
            value,
            updates=updates,
            samples=samples,
            step_seconds=step_seconds,
            train_loss=train_loss,
        )
        if keep is not None:
            keep()
        try:
            stop = self.check()
        except optuna.TrialPruned as pruned:
            if not defer_prune:
                raise
            self.pruned_, stop = pruned, True
        return share(stop) if share is not None else stop

    def update(
        self,
        value: float,
        *,
        updates: int = 0,
        samples: int = 0,
        step_seconds: float | None = None,
        train_loss: float | None = None,
    ) -> None:
        """Count one epoch's validation value, without reporting it.

        A trainer that checkpoints calls ``update``, saves, then :meth:`check`, so a
        checkpoint never misses a value the trial has already seen.
        """
        value = float(value)
        self.epoch_ += 1
        self.history_.append(value)
        self.train_losses_.append(None if train_loss is None else float(train_loss))
        self.count(updates=updates, samples=samples, step_seconds=step_seconds)
        bar = self._sign * self.best_value_ - self.min_delta
        self.improved_ = math.isfinite(value) and self._sign * value < bar
        if self.improved_:
            self.best_value_, self.best_epoch_, self.misses_ = value, self.epoch_, 0
        else:
            self.misses_ += 1

    def count(self, *, updates: int = 0, samples: int = 0, step_seconds: float | None = None):
        """Add training work that has no validation value (an epoch that ran out of memory)."""
        self.n_updates_ += int(updates)
        self.n_samples_ += int(samples)
        if step_seconds is not None:
            self.step_seconds_ = (self.step_seconds_ or 0.0) + float(step_seconds)

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
        if self._collapsed():
            first = self.reference_loss_ or self.train_losses_[0]
            return self.stop(
                "diverged",
                f"training loss {self.train_losses_[-1]:.4g} is over {self.collapse_factor:g}x "
                f"the first {first:.4g} with {self.metric}={value:.4g} no better than at "
                f"epoch 1 (epoch {self.epoch_})",
            )
        if self._reports:
            self.trial.report(value, self.epoch_)
            if self.trial.should_prune():
                return self.stop("pruned", f"{self.metric}={value:.4g} at epoch {self.epoch_}")
        if self.patience is not None and self.misses_ >= self.patience:
            return self.stop("early_stopped", f"no improvement for {self.misses_} epochs")
        if self.max_epochs is not None and self.epoch_ >= self.max_epochs:
            self.finish()
        return False

    def _collapsed(self) -> bool:
        if len(self.train_losses_) < 2:  # one epoch cannot tell a collapse from a bad start
            return False
        last = self.train_losses_[-1]
        reference = self.reference_loss_ or self.train_losses_[0]
        if last is None or reference is None or not reference > 0:
            return False
        value = self._sign * self.history_[-1]
        if not (
            last > self.collapse_factor * reference and value >= self._sign * self.history_[0]
        ):
            return False
        # Where chance is known (classification error), the value must sit there too.
        return self.chance_value is None or value >= self._sign * self.chance_value * 0.95

    def run_attrs(self) -> dict[str, object]:
        """What the run did, as the trial records it: :data:`RUN_ATTRS` and :attr:`attrs`."""
        seconds = self.train_seconds_
        busy = self.step_seconds_ if self.step_seconds_ else seconds
        return {
            "best_epoch": self.best_epoch_,
            "epochs_run": self.epoch_,
            "stop_reason": self.stop_reason_ or "completed",
            "metric": self.metric,
            "n_updates": self.n_updates_,
            "train_seconds": seconds,
            "samples_per_second": self.n_samples_ / busy if busy > 0 else 0.0,
            **self.attrs,
        }

    def finish(self) -> dict[str, object]:
        """Record the run on the trial now (once), as ``"completed"`` unless it stopped.

        Returns:
            The recorded attrs (also without a trial).
        """
        attrs = self.run_attrs()
        if self.trial is not None and not self.recorded_:
            for key, value in attrs.items():
                self.trial.set_user_attr(key, value)
        self.recorded_ = True
        return attrs

    def state_dict(self) -> dict:
        """The learned state, for a checkpoint (plain Python values only)."""
        return {
            "epoch": self.epoch_,
            "best_value": self.best_value_,
            "best_epoch": self.best_epoch_,
            "misses": self.misses_,
            "improved": self.improved_,
            "history": list(self.history_),
            "train_losses": list(self.train_losses_),
            "reference_loss": self.reference_loss_,
            "n_updates": self.n_updates_,
            "n_samples": self.n_samples_,
            "step_seconds": self.step_seconds_,
            "seconds": self.train_seconds_,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved; the clock goes on from its seconds."""
        self.epoch_ = int(state["epoch"])
        self.best_value_ = float(state["best_value"])
        self.best_epoch_ = int(state["best_epoch"])
        self.misses_ = int(state["misses"])
        self.improved_ = bool(state["improved"])
        self.history_ = [float(v) for v in state["history"]]
        self.train_losses_ = list(state.get("train_losses", [None] * len(self.history_)))
        self.reference_loss_ = state.get("reference_loss")
        self.n_updates_ = int(state.get("n_updates", 0))
        self.n_samples_ = int(state.get("n_samples", 0))
        self.step_seconds_ = state.get("step_seconds")
        self._seconds_before = float(state.get("seconds", 0.0))
        self._start = time.perf_counter()
        if self._reports:  # a retry continues the dead trial's curve, from its checkpoint
            with warnings.catch_warnings():  # the same trial resumed has them already
                warnings.simplefilter("ignore")
                for epoch, value in enumerate(self.history_, start=1):
                    if math.isfinite(value):
                        self.trial.report(value, epoch)
        self.stop_reason_ = None
        self.recorded_ = False

    def stop(self, reason: str, detail: str) -> bool:
        """End the run now for ``reason`` (one of :data:`STOP_REASONS`) and record it.

        With a trial, ``"pruned"``, ``"diverged"`` and ``"oom"`` raise
        :class:`optuna.TrialPruned`; ``"completed"`` and ``"early_stopped"``, or any reason
        without a trial, return ``True``.
        """
        if reason not in STOP_REASONS:
            raise ValueError(f"`reason` must be one of {STOP_REASONS}, but got {reason!r}.")
        self.stop_reason_ = reason
        self.finish()
        if self.trial is None or reason in ("completed", "early_stopped"):
            return True
        _logger.info("Trial %d %s: %s.", self.trial.number, reason, detail)
        raise optuna.TrialPruned(f"{reason}: {detail}")
