"""Workers: several processes on one study, and a worker that outlives a database restart.

* :func:`launch_workers` runs ``optuna-bs run`` processes side by side (``optuna-bs launch``),
  and fails (and queues again) the trial of a worker that dies.
* :func:`split_trials` shares a trial budget among them exactly.
* :func:`optimize_reconnecting` is ``study.optimize`` that goes on after the store drops out.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from optuna_bs.errors import (
    DiskFullError,
    StorageError,
    WorkerDiedError,
    disk_full,
    first_line,
    in_chain,
)
from optuna_bs.study._interrupt import Interrupt

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
_RECONNECT_PAUSE = 2.0  # seconds between attempts to reach the store again
#: Seconds a worker back from an outage waits for the retry of a trial of its own that another
#: worker's heartbeat check has failed: that worker queues the retry a moment after failing it.
_RETRY_WAIT = 5.0
#: The environment variable naming a worker of ``launch``. Each trial the worker starts records
#: it (the system attr ``worker``), so that ``launch`` finds the trial of a worker that died.
WORKER_ENV = "OPTUNA_BS_WORKER"
_WORKER_ATTR = "worker"
_POLL_SECONDS = 0.05


def optimize_reconnecting(study, objective, n_trials, timeout, callbacks, show_progress_bar):
    """``study.optimize``, going on after the database drops out (a restart, a failover).

    A trial cut by the outage is failed, or, if its worker could not even say so, failed
    and queued again (:func:`_settle_cut_trials`) once the store is back; this worker
    reconnects (``pool_pre_ping``), takes the queued retries first and runs the rest of its
    trials.

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
        _record_worker(trial)
        with interrupt.armed():
            return objective(trial)

    def count(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal finished, outage_since
        finished += 1
        outage_since = None
        interrupt.honour()

    with Interrupt() as interrupt:
        while finished < n_trials:
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                return
            try:
                if outage_since is not None:  # back after an outage: count from the store
                    finished = _finished_in_store(study, ran)
                    if finished >= n_trials:
                        return
                    _settle_cut_trials(study, ran)
                study.optimize(
                    tracked,
                    n_trials=n_trials - finished,
                    timeout=left,
                    callbacks=[*callbacks, count],
                    show_progress_bar=show_progress_bar,
                )
                return
            except Exception as err:
                if disk_full(err) and not isinstance(err, DiskFullError):
                    raise DiskFullError(
                        f"no space left on the device of the study store ({first_line(err)})"
                    ) from err
                if not _is_outage(err):
                    raise
                # A Ctrl-C can cut a call to the store and surface as a lost connection (an
                # AssertionError of SQLAlchemy's, a connection error in its chain): the user
                # asked to stop, so stop, instead of reconnecting.
                interrupt.honour()
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > _RECONNECT_SECONDS:
                    raise StorageError(
                        f"lost the study store for over {_RECONNECT_SECONDS} s: "
                        f"{type(err).__name__}"
                    ) from err
                _logger.warning("Lost the study store (%s); reconnecting.", type(err).__name__)
                time.sleep(_RECONNECT_PAUSE)
                interrupt.honour()


def _record_worker(trial: optuna.Trial) -> None:
    """Record on ``trial`` which ``launch`` worker runs it, and its process (under ``launch``
    only). The trial's number goes with it: a retry inherits its dead trial's system attrs."""
    worker = os.environ.get(WORKER_ENV)
    if worker:
        mark = {"id": worker, "pid": os.getpid(), "trial": trial.number}
        trial.storage.set_trial_system_attr(trial._trial_id, _WORKER_ATTR, mark)


def _finished_in_store(study: optuna.Study, numbers: list[int]) -> int:
    """How many of the trials ``numbers`` the store holds as complete or pruned.

    A trial whose end was committed just as the connection dropped counts, though its worker
    saw an error. One the outage cut does not: left RUNNING, the heartbeat retries it and the
    retry counts when it runs; failed by its worker, it is run again as a new trial. So the
    budget is kept through an outage: a 4-trial run ends with 4 finished, never 3 or 5.
    """
    mine, done = set(numbers), (TrialState.COMPLETE, TrialState.PRUNED)
    return sum(t.number in mine for t in study.get_trials(deepcopy=False, states=done))


def _settle_cut_trials(study: optuna.Study, numbers: list[int]) -> None:
    """Before a worker back from an outage asks for a trial: its trials the outage cut get
    their retries queued, so that its next trials take them rather than fresh ones.

    A trial of ``numbers`` still RUNNING is dead (this worker's objective has left it): it is
    failed and queued again at once, as :func:`launch_workers` does for a dead worker's,
    instead of waiting for the heartbeat. One that another worker's heartbeat check has
    failed is queued again by that worker a moment later: up to :data:`_RETRY_WAIT` seconds
    are given for it to appear. Asked in between, this worker would start a fresh trial in
    its place, and the retry would be left WAITING once every worker's budget is spent.
    """
    mine = set(numbers)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    _fail_and_retry(study, [t for t in running if t.number in mine])
    if _retry_callback(study) is None:
        return  # no store-side retries: a failed trial is run again as a fresh one
    deadline = time.monotonic() + _RETRY_WAIT
    while True:
        trials = study.get_trials(deepcopy=False)
        queued = {n for t in trials for n in _retried(t)}
        waiting = [
            t.number
            for t in trials
            if t.number in mine and t.state == TrialState.FAIL and t.number not in queued
        ]
        if not waiting or time.monotonic() >= deadline:
            return
        time.sleep(10 * _POLL_SECONDS)


def _retry_callback(study: optuna.Study):
    """The store's retry of a dead trial (``RetryHeartbeatStaleTrialCallback``), or ``None``
    where the store has no heartbeat."""
    return getattr(study._storage, "get_heartbeat_stale_trial_callback", lambda: None)()


def _fail_and_retry(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[int]:
    """Fail ``trials`` (RUNNING, their workers dead) and queue each again with the store's
    retry callback, as the heartbeat does; the numbers of those this call failed (another
    worker's heartbeat check may have been first)."""
    storage, retry = study._storage, _retry_callback(study)
    numbers = []
    for trial in trials:
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # the heartbeat of another worker was first
        numbers.append(trial.number)
        if retry is not None:
            retry(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    return numbers


def _is_outage(err: BaseException) -> bool:
    """Whether ``err``, or an error it was raised from or during, is a lost connection.

    Optuna may re-raise a lost connection as another error while it cleans up the trial, so
    the whole chain is looked at.
    """
    return in_chain(err, _CONNECTION_ERRORS) and not disk_full(err)


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
    study: optuna.Study | None = None,
) -> int:
    """Run worker processes side by side, their output lines prefixed with the worker id.

    Ctrl-C is passed on to every worker (each runs in its own session, so the terminal's
    SIGINT reaches it only once, from here), and the workers are waited for.

    With ``study`` (the study the workers run), a worker that dies (killed by a signal, or
    ending with an error) while it runs a trial leaves nothing RUNNING: as soon as it has
    died, its trial is failed and, where the store retries dead trials (an RDB store's
    heartbeat), queued again for the other workers, as the heartbeat would after its grace
    period.

    Returns:
        0 if every worker succeeded, else the first non-zero exit status.

    Raises:
        WorkerDiedError: With ``study``, once every worker has ended, if one was killed by a
            signal or left a trial running; the message is one line naming each such worker
            and its trial.
    """
    tag = f"{socket.gethostname()}:{os.getpid()}"  # this launch: its workers' trials say so
    lock = threading.Lock()

    def pump(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with lock:
                out(f"[worker {i}] {line.rstrip()}")

    procs, threads = [], []
    for i, command in enumerate(commands):
        env = {**os.environ, **(envs[i] if envs else {})}
        if study is not None:
            env[WORKER_ENV] = f"{tag}/{i}"
        proc = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        procs.append(proc)
        threads.append(threading.Thread(target=pump, args=(i, proc), daemon=True))
        threads[-1].start()
    codes: list[int | None] = [None] * len(procs)
    deaths: list[str] = []
    try:
        with Interrupt() as interrupt:  # a Ctrl-C that lands in a finalizer is not lost
            _wait_for_workers(procs, codes, deaths, study, tag, interrupt)
    except KeyboardInterrupt:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in threads:
            thread.join(timeout=5)
        return 130  # interrupted, whatever each worker made of its SIGINT
    for thread in threads:
        thread.join(timeout=5)
    if deaths:
        raise WorkerDiedError("; ".join(deaths))
    return next((code for code in codes if code != 0), 0)


def _bury(study: optuna.Study, worker: str, index: int, proc: subprocess.Popen) -> str | None:
    """Fail the trials that dead worker ``index`` left RUNNING, queue each again where the
    store retries dead trials, and say so in one sentence (``None`` if the worker ended with
    an error of its own and left nothing running: its error says what happened)."""
    code = proc.returncode
    how = f"was killed by {_signal_name(-code)}" if code < 0 else f"ended with status {code}"
    try:
        numbers, retried = _release_trials(study, worker)
    except Exception as err:
        if not _is_outage(err):
            raise
        if code >= 0:  # its own error (a lost store, likely) says what happened
            return None
        return (
            f"worker {index} (pid {proc.pid}) {how}; the store is out of reach "
            f"({type(err).__name__}): its trial is left to the heartbeat"
        )
    if not numbers:
        return None if code >= 0 else f"worker {index} (pid {proc.pid}) {how} between trials"
    which = ", ".join(map(str, numbers))
    trials = f"trial {which}" if len(numbers) == 1 else f"trials {which}"
    then = "failed and queued again" if retried else "failed"
    return f"worker {index} (pid {proc.pid}) {how} while running {trials} ({then})"


def _release_trials(study: optuna.Study, worker: str) -> tuple[list[int], bool]:
    """The numbers of the trials ``worker`` left RUNNING, failed and queued again
    (:func:`_fail_and_retry`), and whether each was queued again."""
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mark = trial.system_attrs.get(_WORKER_ATTR) or {}
        if mark.get("id") == worker and mark.get("trial") == trial.number:
            dead.append(trial)  # not another worker's: a retry carries its dead trial's mark
    numbers = _fail_and_retry(study, dead)
    # The callback queues nothing once a trial has used up its retries (``max_retry``).
    queued = {n for t in study.get_trials(deepcopy=False) for n in _retried(t)}
    return numbers, bool(numbers) and set(numbers) <= queued


def _retried(trial: FrozenTrial) -> list[int]:
    return trial.system_attrs.get("retry_history", [])


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _wait_for_workers(procs, codes, deaths, study, tag, interrupt: Interrupt) -> None:
    """Poll the workers until each has ended, burying those that die; a Ctrl-C seen by
    ``interrupt`` raises ``KeyboardInterrupt`` here."""
    while None in codes:
        interrupt.honour()
        for i, proc in enumerate(procs):
            if codes[i] is not None or proc.poll() is None:
                continue
            codes[i] = proc.returncode
            if proc.returncode != 0 and study is not None:
                death = _bury(study, f"{tag}/{i}", i, proc)
                if death:
                    deaths.append(death)
        time.sleep(_POLL_SECONDS)
