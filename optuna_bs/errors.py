"""The exceptions optuna-bs raises for bad input, and how it reads an exception's chain."""

from __future__ import annotations

import errno


class OptunaBSError(Exception):
    """Base class of every error of optuna-bs's own.

    The CLI turns an ``OptunaBSError`` (and a ``ValueError`` or ``TypeError`` raised while
    checking input) into one line on stderr and exit status 2.
    """


class ConfigError(OptunaBSError, ValueError):
    """A study file or a study configuration is invalid: a key, a type or a value."""


class StorageError(OptunaBSError, ValueError):
    """A storage URL is malformed or its server cannot be reached."""


class NotEnoughTrialsError(OptunaBSError):
    """The study has too few usable complete trials, or batch sizes, for what was asked."""


class WorkerDiedError(OptunaBSError):
    """A worker of ``launch`` died (killed by a signal, say) in the middle of its trials: the
    trial it left running was failed, and queued again where the store retries dead trials."""


class DiskFullError(OptunaBSError):
    """No space was left on the device of a checkpoint or of the study store."""


def _chain(err: BaseException | None):
    """``err``, then the errors it was raised from or during (``__cause__``, ``__context__``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        yield err
        seen.add(id(err))
        err = err.__cause__ or err.__context__


def in_chain(err: BaseException | None, types: type | tuple[type, ...]) -> bool:
    """Whether ``err``, or an error it was raised from or during (``__cause__``,
    ``__context__``), is one of ``types``: what a cleanup raised says little, what it was
    cleaning up after says what happened (a lost connection, a Ctrl-C)."""
    return any(isinstance(e, types) for e in _chain(err))


# How a full device reads: an errno where the OS error survives, the words where it does not
# (SQLite's SQLITE_FULL through SQLAlchemy). Torch's writer says neither ("unexpected pos"):
# TrainingState.save names that case itself.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def disk_full(err: BaseException | None) -> bool:
    """Whether ``err``, or an error in its chain, says that a device has no space left."""
    return any(
        isinstance(e, DiskFullError)
        or (isinstance(e, OSError) and e.errno in _FULL_ERRNOS)
        or any(words in str(e).lower() for words in _FULL_WORDS)
        for e in _chain(err)
    )


def first_line(err: BaseException) -> str:
    """The first line of the error a chain started from: a driver's own message under
    SQLAlchemy's, say, without the SQL and the link SQLAlchemy adds."""
    while err.__cause__ is not None:
        err = err.__cause__
    err = getattr(err, "orig", None) or err
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
