"""What a framework's adapter counts between two validations, for the end-of-epoch decision.

The Lightning and Hugging Face callbacks each see the steps of someone else's loop. Each
step they time (:meth:`EpochTally.tic`, :meth:`EpochTally.toc`), take its training loss and
samples (:meth:`EpochTally.add`), and at validation hand the sums to the shared decision,
:meth:`~optuna_bs.TrialMonitor.end_epoch` (:meth:`EpochTally.end_epoch`)::

    stop = tally.end_epoch(value, trainer.global_step, share=..., keep=...)
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna_bs.train.monitor import TrialMonitor


class EpochTally:
    """The training loss, samples, updates and busy seconds of ``monitor``'s run since its
    last validation. The first finite loss of a run is its reference loss (the loss at init).
    """

    def __init__(self, monitor: TrialMonitor, step: int = 0) -> None:
        self.monitor = monitor
        self.restart(step)

    def restart(self, step: int) -> None:
        """Start counting at the framework's global ``step``."""
        self._step, self._loss, self._losses, self._samples = step, 0.0, 0, 0
        self._busy, self._tic = 0.0, None

    def tic(self) -> None:
        self._tic = time.perf_counter()

    def toc(self) -> None:
        if self._tic is not None:
            self._busy += time.perf_counter() - self._tic
            self._tic = None

    def add(self, loss: Any = None, samples: int = 0) -> None:
        """Count one step's training ``loss`` (a float, or a tensor, summed on its device so
        that no step waits on the host) and its ``samples``."""
        if loss is not None:
            if hasattr(loss, "detach"):
                loss = loss.detach().float()
            if self.monitor.reference_loss_ is None:  # once per run: one host sync
                first = float(loss)
                self.monitor.reference_loss_ = first if math.isfinite(first) else None
            self._loss, self._losses = loss + self._loss, self._losses + 1
        self._samples += samples

    def end_epoch(self, value: float, step: int, batch_size: int | None = None, **kw) -> bool:
        """The monitor's end-of-epoch decision (``kw``: its ``share`` and ``keep``), with a
        prune deferred until the framework's loop has ended, on the steps up to global
        ``step``; with ``batch_size``, the samples are the updates × it, not those counted.
        Counting starts again from ``step``. Returns ``True`` when training should stop."""
        updates = step - self._step
        counted = {
            "train_loss": float(self._loss) / self._losses if self._losses else None,
            "updates": updates,
            "samples": self._samples if batch_size is None else updates * batch_size,
            "step_seconds": self._busy,
        }
        self.restart(step)
        return self.monitor.end_epoch(float(value), **counted, **kw, defer_prune=True)
