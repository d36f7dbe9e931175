"""Storage URL -> Optuna storage, with credentials masked in every message.

* ``None`` gives the embedded SQLite file ``optuna_bs.db`` in the current directory, for one
  worker;
* ``postgresql+psycopg://…`` and ``mysql+pymysql://…`` give shared RDB stores for many workers;
* ``grpc://HOST:PORT`` reaches Optuna's gRPC storage proxy (``optuna-bs storage-proxy``), for
  hundreds of workers in front of one database;
* a path ending in ``.log`` or ``.jsonl`` gives Optuna's journal file store.

RDB stores get a heartbeat: a trial whose worker died (SIGKILL, pre-emption) is failed once its
heartbeat is ``grace_period`` seconds old, and ``RetryHeartbeatStaleTrialCallback`` queues it
again with its parameters and intermediate values, so the trainer can resume it from its last
checkpoint. The heartbeat does not pass through the gRPC proxy.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna

from optuna_bs.errors import StorageError, first_line
from optuna_bs.study._interrupt import Interrupt

_logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///optuna_bs.db"
HEARTBEAT_INTERVAL = 10  # seconds; a dead worker's trial is retried after 2x this
GRPC_TIMEOUT = 10  # seconds a worker waits for the gRPC proxy to answer
_JOURNAL_SUFFIXES = (".log", ".jsonl")
_DRIVERS = {
    "postgresql": "pip install 'optuna-bs[postgres]'",
    "mysql": "pip install 'optuna-bs[mysql]'",
}


_QUERY_SECRETS = ("password", "passwd", "pwd")


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    SQLAlchemy (``sqlalchemy.engine.make_url``) says whether the URL holds a password; it
    may hold ``?``, ``/``, ``#``, ``:`` or an unencoded ``@``. Then everything between the
    user's ``:`` and the URL's last ``@`` is masked: a host or database that holds an ``@``
    is masked with it, rather than any part of the password shown. A URL that SQLAlchemy
    cannot parse is masked the same way. A ``password=`` in the query is masked too.

    Raises:
        TypeError: If ``url`` is not a string.

    Example:
        >>> mask_url("postgresql+psycopg://alice:s3cret@db:5432/optuna")
        'postgresql+psycopg://alice:***@db:5432/optuna'
        >>> mask_url("postgresql+psycopg://alice:Se?cr@t@db/optuna?password=x&sslmode=require")
        'postgresql+psycopg://alice:***@db/optuna?password=***&sslmode=require'
    """
    if not isinstance(url, str):
        raise TypeError(f"`url` must be a str, but got an object of type {type(url).__name__!r}.")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # a journal file's path: nothing to hide
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        has_password = make_url(url).password is not None
    except (sqlalchemy.exc.ArgumentError, ValueError):  # a scheme it cannot read, a bad port
        has_password = True  # cannot tell: mask what could be one
    before, at, after = rest.rpartition("@")
    if not (has_password and at):
        return f"{scheme}{sep}{_mask_query(rest)}"
    user = re.match(r"[^:/@]*:", before)  # SQLAlchemy's user ends at the first ':'
    return f"{scheme}{sep}{user[0] if user else ''}***@{_mask_query(after)}"


def _mask_query(text: str) -> str:
    """``text`` with the value of each ``password=`` (however its key is encoded) of its
    query masked."""
    from urllib.parse import unquote_plus

    head, q, query = text.partition("?")
    if not q:
        return text
    pairs = re.split(r"([&;])", query)
    for i in range(0, len(pairs), 2):
        key, eq, _ = pairs[i].partition("=")
        if eq and unquote_plus(key).strip().lower() in _QUERY_SECRETS:
            pairs[i] = f"{key}=***"
    return f"{head}?{''.join(pairs)}"


def is_sqlite(url: str | None) -> bool:
    """Whether ``url`` (``None`` for the default) names a SQLite store."""
    return url is None or url.startswith("sqlite")


def file_to_create(url: str | None) -> Path | None:
    """The file that opening the store at ``url`` would create: an SQLite or journal file
    that does not exist yet, checked to be creatable; ``None`` for an existing file, an
    in-memory database or a server.

    Work that may fail (the probes of ``"auto"``) runs before such a store is opened, so that
    a failure leaves no empty database behind.

    Raises:
        StorageError: If the file's folder does not exist or is not writable.
    """
    url = DEFAULT_STORAGE if url is None else url
    if url.endswith(_JOURNAL_SUFFIXES) and "://" not in url:
        path = Path(url)
    elif url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///").partition("?")[0])
    else:
        return None
    if path.exists():
        return None
    folder = path.parent
    if not folder.is_dir():
        raise StorageError(
            f"cannot open storage {mask_url(url)!r}: the folder {str(folder)!r} does not exist."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(
            f"the file {str(path)!r} of storage {mask_url(url)!r} cannot be created: the folder "
            f"{str(folder)!r} is not writable; choose another --storage."
        )
    return path


def make_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    synchronous_commit: bool = True,
) -> optuna.storages.BaseStorage:
    """Open (creating its tables if need be) the study store at ``url``.

    Args:
        url: An SQLAlchemy URL, ``grpc://HOST:PORT``, a journal file path, or ``None`` for
            :data:`DEFAULT_STORAGE`.
        heartbeat_interval: Seconds between a running trial's heartbeats (RDB stores only);
            ``None`` turns the heartbeat and the retry of dead workers' trials off.
        grace_period: Seconds after its last heartbeat at which a trial counts as dead;
            ``None`` for twice the interval.
        max_retry: How many times a dead worker's trial is queued again.
        synchronous_commit: PostgreSQL only: ``False`` lets a commit return before its WAL
            is flushed to disk. Each of a trial's ~20 writes then costs about 2 ms instead
            of a disk flush (about 6 ms here); a crash of the *server* may lose the last
            fraction of a second of writes (the database stays consistent, and a trial whose
            end was lost is failed by the heartbeat and retried). Workers dying lose nothing.

    Returns:
        An Optuna storage.

    Raises:
        StorageError: If the URL is malformed or a PostgreSQL or MySQL URL names no
            database, its driver is missing, or the server cannot be reached; the message
            holds the URL with its password masked.
    """
    url = DEFAULT_STORAGE if url is None else url
    if url.endswith(_JOURNAL_SUFFIXES) and "://" not in url:
        try:
            backend = optuna.storages.journal.JournalFileBackend(url)
        except OSError as err:
            raise StorageError(f"cannot open journal file {url!r}: {err.strerror}.") from err
        return optuna.storages.JournalStorage(backend)
    if url.startswith("grpc://"):
        return _grpc_proxy(url)
    import sqlalchemy.exc  # here, not at the top: the CLI's --help needs no database driver
    from sqlalchemy.engine import make_url

    authority = url.partition("://")[2].partition("/")[0]
    if authority.count("@") > 1:  # the driver would take part of the password for the host
        raise StorageError(
            f"`storage` {mask_url(url)!r}: its password holds an unencoded '@'; percent-encode "
            "it (@ as %40, : as %3A, / as %2F)."
        )
    try:
        parsed = make_url(url)
        _ = parsed.port  # a port that is not a number fails here, not deep in the driver
    except ValueError as err:
        raise StorageError(f"`storage` {mask_url(url)!r}: its port must be a number.") from err
    except sqlalchemy.exc.ArgumentError as err:
        raise StorageError(
            f"`storage` must be an SQLAlchemy URL such as 'sqlite:///optuna_bs.db' or "
            f"'postgresql+psycopg://user@host/db', grpc://HOST:PORT or a journal file ending "
            f"in .log, but got {mask_url(url)!r}."
        ) from err
    if parsed.get_backend_name() in _DRIVERS and not (
        parsed.database or {"dbname", "database", "db"} & set(parsed.query)
    ):  # the server would be asked for its default database (libpq's is the user's name)
        raise StorageError(
            f"`storage` {mask_url(url)!r} names no database: add its name after the host, as "
            f"in '{parsed.drivername}://user@host/optuna'."
        )
    engine_kwargs: dict = {"pool_pre_ping": True}
    if not synchronous_commit and parsed.get_backend_name() == "postgresql":
        engine_kwargs["connect_args"] = {"options": "-c synchronous_commit=off"}
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _check_sqlite_file(Path(parsed.database))
    if parsed.get_backend_name() == "sqlite":
        # Wait for a lock instead of failing at once when a reader holds the file.
        engine_kwargs = {"connect_args": {"timeout": 30}}
    try:
        with warnings.catch_warnings():  # the retry callback is "experimental" since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat = {}
            if heartbeat_interval is not None:
                heartbeat = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period or 2 * heartbeat_interval,
                    # The retry does not inherit the dead trial's curve: one that resumes
                    # from its checkpoint reports it again (TrialMonitor.load_state_dict),
                    # and one that starts afresh has a curve of its own run only.
                    "heartbeat_stale_trial_callback": (
                        optuna.storages.RetryHeartbeatStaleTrialCallback(
                            max_retry=max_retry, inherit_intermediate_values=False
                        )
                    ),
                }
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs, **heartbeat
                    )
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as err:
                    # Two processes creating one fresh database race on its tables and its
                    # schema-version row; the loser finds the schema made a moment later.
                    racing = isinstance(err, sqlalchemy.exc.IntegrityError) or (
                        "already exists" in str(err)
                    )
                    if attempt == 2 or not racing:
                        raise
                    time.sleep(0.5 * (attempt + 1))
    except ModuleNotFoundError as err:
        fix = _DRIVERS.get(parsed.get_backend_name(), "install its SQLAlchemy driver")
        raise StorageError(f"storage {mask_url(url)!r} needs {err.name}: {fix}.") from err
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as err:
        cause = first_line(err)
        if parsed.password:
            cause = cause.replace(parsed.password, "***")
        raise StorageError(f"cannot open storage {mask_url(url)!r}: {cause}") from err


def _check_sqlite_file(database: Path) -> None:
    """A read-only SQLite file, or a folder it cannot be created in, is one line now rather
    than SQLite's "attempt to write a readonly database" at the first trial."""
    if database.exists():
        if not os.access(database, os.R_OK | os.W_OK):
            raise StorageError(
                f"the SQLite file {str(database)!r} is read-only: make it writable "
                f"(chmod u+w) or choose another --storage."
            )
        return
    folder = database.parent if str(database.parent) else Path(".")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(
            f"the SQLite file {str(database)!r} cannot be created: the folder {str(folder)!r} "
            "is not writable; choose another --storage."
        )


def _grpc_proxy(url: str) -> optuna.storages.BaseStorage:
    host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise StorageError(f"`storage` must look like grpc://HOST:PORT, but got {url!r}.")
    try:
        with warnings.catch_warnings():  # "experimental" since Optuna 4.2: noise on stderr
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    except ImportError as err:
        raise StorageError(
            f"storage {url!r} needs grpcio: pip install 'optuna-bs[grpc]'."
        ) from err
    try:  # else the first call fails, with a traceback, once the study is being created
        proxy.wait_server_ready(timeout=GRPC_TIMEOUT)
    except ConnectionError as err:
        proxy.close()
        raise StorageError(
            f"cannot reach the gRPC proxy at {url!r} within {GRPC_TIMEOUT} s: start it with "
            "`optuna-bs storage-proxy`, or check the host and port."
        ) from err
    return proxy


def serve_proxy(url: str | None, *, host: str = "127.0.0.1", port: int = 13000) -> None:
    """Serve the store at ``url`` to gRPC clients (``grpc://HOST:PORT``) until interrupted.

    The proxy keeps one pool of database connections for any number of workers. Trials run
    through it have no heartbeat, so a dead worker's trial is not retried.
    """
    storage = make_storage(url, heartbeat_interval=None)
    pool = ThreadPoolExecutor(max_workers=10, thread_name_prefix="grpc-proxy")
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            optuna.storages.run_grpc_proxy_server(storage, host=host, port=port, thread_pool=pool)
        except BaseException as err:  # handed to the main thread
            failed.append(err)

    server = threading.Thread(target=serve, name="grpc-proxy-server", daemon=True)
    # The server runs in a thread; the main thread waits for Ctrl-C, held by Interrupt so
    # that one landing in a finalizer (a collected SQLAlchemy object) still stops the proxy.
    with Interrupt() as interrupt:
        server.start()
        while server.is_alive() and not interrupt.seen:
            server.join(0.2)
    if failed:
        if isinstance(failed[0], ImportError):
            raise StorageError(
                "the gRPC proxy needs grpcio: pip install 'optuna-bs[grpc]'."
            ) from failed[0]
        raise failed[0]
    # Ctrl-C must stop the proxy. Exit joins the pool's threads, and one still inside a
    # database call would hold the process; after 5 s it is ended regardless.
    pool.shutdown(wait=False, cancel_futures=True)
    watchdog = threading.Timer(5.0, os._exit, args=(130,))
    watchdog.daemon = True
    watchdog.start()
    raise KeyboardInterrupt
