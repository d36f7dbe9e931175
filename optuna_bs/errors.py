"""The exceptions optuna-bs raises for bad input, and how it reads an exception's chain."""

from __future__ import annotations

__all__ = [
    "OptunaBSError",
    "ConfigError",
    "StorageError",
    "NotEnoughTrialsError",
    "WorkerDiedError",
    "in_chain",
]


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


def in_chain(err: BaseException | None, types: type | tuple[type, ...]) -> bool:
    """Whether ``err``, or an error it was raised from or during (``__cause__``,
    ``__context__``), is one of ``types``: what a cleanup raised says little, what it was
    cleaning up after says what happened (a lost connection, a Ctrl-C)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, types):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False
