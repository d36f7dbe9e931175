"""Workers: several processes on one study, and a worker that outlives a database restart.

* :func:`launch_workers` runs ``optuna-bs run`` processes side by side (``optuna-bs launch``).
* :func:`split_trials` shares a trial budget among them exactly.
* :func:`optimize_reconnecting` is ``study.optimize`` that goes on after the store drops out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from optuna_bs.errors import StorageError, in_chain

__all__ = ["launch_workers", "optimize_reconnecting", "split_trials"]

_logger = logging.getLogger(__name__)

# What a database restart looks like from a worker; the trial it cut is then failed or retried.
_CONNECTION_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.InvalidatePoolError,
    optuna.exceptions.StorageInternalError,
    optuna.exceptions.UpdateFinishedTrialError,
)
_RECONNECT_SECONDS = 120


def optimize_reconnecting(study, objective, n_trials, timeout, callbacks, show_progress_bar):
    """``study.optimize``, going on after the database drops out (a restart, a failover).

    A trial cut by the outage is failed, or, if its worker could not even say so, failed
    later by the heartbeat and retried; this worker reconnects (``pool_pre_ping``) and runs
    the rest of its trials.

    Ctrl-C (SIGINT) stops it for sure, and leaves no trial RUNNING. While a trial trains,
    the signal raises ``KeyboardInterrupt`` at once, and Optuna stores the trial as failed.
    Outside training (the trial being created, sampled or told, the store being written) it
    is only remembered: a ``KeyboardInterrupt`` there could cut Optuna between creating a
    trial and failing it. A remembered signal is honoured as the next trial starts, or
    when the trial ends; so is one that Python dropped because it landed in a finalizer
    (a garbage-collected SQLAlchemy object, say).
    """
    finished = 0
    start = time.monotonic()
    outage_since = None
    ran: list[int] = []  # the trials this process started, by number

    def tracked(trial):
        ran.append(trial.number)
        with interrupt.armed():
            return objective(trial)

    def count(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal finished, outage_since
        finished += 1
        outage_since = None
        interrupt.honour()

    with _Interrupt() as interrupt:
        while finished < n_trials:
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                return
            try:
                if outage_since is not None:  # back after an outage: count from the store
                    finished = _finished_in_store(study, ran)
                    if finished >= n_trials:
                        return
                study.optimize(
                    tracked,
                    n_trials=n_trials - finished,
                    timeout=left,
                    callbacks=[*callbacks, count],
                    show_progress_bar=show_progress_bar,
                )
                return
            except Exception as err:
                if not _is_outage(err):
                    raise
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > _RECONNECT_SECONDS:
                    raise StorageError(
                        f"lost the study store for over {_RECONNECT_SECONDS} s: "
                        f"{type(err).__name__}"
                    ) from err
                _logger.warning("Lost the study store (%s); reconnecting.", type(err).__name__)
                time.sleep(2.0)
                interrupt.honour()


class _Interrupt:
    """A SIGINT handler that remembers the signal, and raises ``KeyboardInterrupt`` only
    while :meth:`armed` (a trial's training), where Optuna fails the trial cleanly."""

    def __init__(self) -> None:
        self.seen = False
        self._armed = False
        self._previous = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        self.seen = True
        if self._armed:
            self._armed = False  # one KeyboardInterrupt per trial; Optuna then tells FAIL
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def armed(self):
        """Within it, SIGINT raises at once; a signal that came before it is raised on entry."""
        self.honour()
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def honour(self) -> None:
        """Raise ``KeyboardInterrupt`` if a SIGINT came (held back, or perhaps swallowed)."""
        if self.seen:
            raise KeyboardInterrupt


def _finished_in_store(study: optuna.Study, numbers: list[int]) -> int:
    """How many of the trials ``numbers`` the store holds as complete or pruned.

    A trial whose end was committed just as the connection dropped counts, though its worker
    saw an error. One the outage cut does not: left RUNNING, the heartbeat retries it and the
    retry counts when it runs; failed by its worker, it is run again as a new trial. So the
    budget is kept through an outage: a 4-trial run ends with 4 finished, never 3 or 5.
    """
    mine, done = set(numbers), (TrialState.COMPLETE, TrialState.PRUNED)
    return sum(t.number in mine for t in study.get_trials(deepcopy=False, states=done))


def _is_outage(err: BaseException) -> bool:
    """Whether ``err``, or an error it was raised from or during, is a lost connection.

    Optuna may re-raise a lost connection as another error while it cleans up the trial, so
    the whole chain is looked at.
    """
    return in_chain(err, _CONNECTION_ERRORS)


def split_trials(n_trials: int, workers: int) -> list[int]:
    """Share ``n_trials`` among ``workers`` as evenly as possible, the total kept exact.

    Example:
        >>> split_trials(10, 4)
        [3, 3, 2, 2]
    """
    return [n_trials // workers + (i < n_trials % workers) for i in range(workers)]


def launch_workers(
    commands: Sequence[Sequence[str]],
    *,
    envs: Sequence[dict[str, str]] | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Run worker processes side by side, their output lines prefixed with the worker id.

    Ctrl-C is passed on to every worker (each runs in its own session, so the terminal's
    SIGINT reaches it only once, from here), and the workers are waited for.

    Returns:
        0 if every worker succeeded, else the first non-zero exit status.
    """
    procs = []
    for i, command in enumerate(commands):
        env = {**os.environ, **(envs[i] if envs else {})}
        proc = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        procs.append(proc)
    lock = threading.Lock()

    def pump(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with lock:
                out(f"[worker {i}] {line.rstrip()}")

    threads = [
        threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in enumerate(procs)
    ]
    for thread in threads:
        thread.start()
    try:
        codes = [proc.wait() for proc in procs]
    except KeyboardInterrupt:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        for thread in threads:
            thread.join(timeout=5)
        return 130  # interrupted, whatever each worker made of its SIGINT
    for thread in threads:
        thread.join(timeout=5)
    return next((code for code in codes if code != 0), 0)
