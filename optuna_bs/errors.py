"""The exceptions optuna-bs raises for bad input."""

from __future__ import annotations

__all__ = ["OptunaBSError", "ConfigError", "StorageError", "NotEnoughTrialsError"]


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
