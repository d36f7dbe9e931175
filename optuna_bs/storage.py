"""Storage URL -> Optuna storage, with credentials masked in every message.

``None`` gives the embedded SQLite file ``optuna_bs.db`` in the current directory;
``postgresql+psycopg://…`` and ``mysql+pymysql://…`` give shared RDB stores; a path ending in
``.log`` or ``.jsonl`` gives Optuna's journal file store.
"""

from __future__ import annotations

import logging
import re

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from optuna_bs.errors import StorageError

__all__ = ["DEFAULT_STORAGE", "make_storage", "mask_url", "is_sqlite"]

_logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///optuna_bs.db"
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_DRIVERS = {
    "postgresql": "pip install 'optuna-bs[postgres]'",
    "mysql": "pip install 'optuna-bs[mysql]'",
}


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Example:
        >>> mask_url("postgresql+psycopg://alice:s3cret@db:5432/optuna")
        'postgresql+psycopg://alice:***@db:5432/optuna'
    """
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def is_sqlite(url: str | None) -> bool:
    """Whether ``url`` (``None`` for the default) names a SQLite store."""
    return url is None or url.startswith("sqlite")


def make_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """Open (creating its tables if need be) the study store at ``url``.

    Args:
        url: An SQLAlchemy URL, a journal file path, or ``None`` for :data:`DEFAULT_STORAGE`.

    Returns:
        An Optuna storage.

    Raises:
        StorageError: If the URL is malformed, its driver is missing, or the server cannot be
            reached; the message holds the URL with its password masked.
    """
    url = DEFAULT_STORAGE if url is None else url
    if url.endswith(_JOURNAL_SUFFIXES) and "://" not in url:
        try:
            backend = optuna.storages.journal.JournalFileBackend(url)
        except OSError as err:
            raise StorageError(f"cannot open journal file {url!r}: {err.strerror}.") from err
        return optuna.storages.JournalStorage(backend)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as err:
        raise StorageError(
            f"`storage` must be an SQLAlchemy URL such as 'sqlite:///optuna_bs.db' or "
            f"'postgresql+psycopg://user@host/db', or a journal file ending in .log, "
            f"but got {mask_url(url)!r}."
        ) from err
    engine_kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        # Wait for a lock instead of failing at once when a reader holds the file.
        engine_kwargs = {"connect_args": {"timeout": 30}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ModuleNotFoundError as err:
        fix = _DRIVERS.get(parsed.get_backend_name(), "install its SQLAlchemy driver")
        raise StorageError(f"storage {mask_url(url)!r} needs {err.name}: {fix}.") from err
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as err:
        cause = _first_line(err)
        if parsed.password:
            cause = cause.replace(parsed.password, "***")
        raise StorageError(f"cannot open storage {mask_url(url)!r}: {cause}") from err


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__
