from __future__ import annotations

import random
import urllib.parse
import uuid
from pathlib import Path

import optuna
import pytest

from optuna_bs.errors import StorageError
from optuna_bs.study.storage import (
    DEFAULT_STORAGE,
    file_to_create,
    is_sqlite,
    make_storage,
    mask_url,
)


def test_default_is_sqlite_file_in_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = make_storage(None)
    optuna.create_study(storage=storage, study_name="s")
    assert DEFAULT_STORAGE == "sqlite:///optuna_bs.db"
    assert (tmp_path / "optuna_bs.db").exists()


def test_stores_keep_trials(storage_url):
    storage = make_storage(storage_url) if storage_url else optuna.storages.InMemoryStorage()
    name = f"t-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(storage=storage, study_name=name)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    if storage_url:
        again = optuna.load_study(storage=make_storage(storage_url), study_name=name)
        assert [t.value for t in again.trials] == [t.value for t in study.trials]
        optuna.delete_study(storage=storage, study_name=name)


def test_journal_file(tmp_path):
    path = tmp_path / "journal.log"
    study = optuna.create_study(storage=make_storage(str(path)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert path.exists() and len(study.trials) == 2


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg://alice:s3cret@db:5432/o",
            "postgresql+psycopg://alice:***@db:5432/o",
        ),
        ("mysql+pymysql://root:p%40ss@h/db", "mysql+pymysql://root:***@h/db"),
        ("postgresql://bob@db/o", "postgresql://bob@db/o"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        # an unencoded @ or : in the password
        (
            "postgresql+psycopg://postgres:p@ss:W0rd@127.0.0.1:1/t",
            "postgresql+psycopg://postgres:***@127.0.0.1:1/t",
        ),
        # a password in the query
        (
            "mysql+pymysql://root@h/db?password=s3cret&charset=utf8",
            "mysql+pymysql://root@h/db?password=***&charset=utf8",
        ),
        (
            "postgresql://u@h/db?sslmode=require&PASSWORD=x",
            "postgresql://u@h/db?sslmode=require&PASSWORD=***",
        ),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_mask_url_hides_a_password_that_holds_a_question_mark():
    url = "postgresql+psycopg://postgres:Se?cret95@127.0.0.1:5432/db"
    assert mask_url(url) == "postgresql+psycopg://postgres:***@127.0.0.1:5432/db"


def test_mask_url_of_something_else_than_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="`url` must be a str.*'NoneType'"):
        mask_url(None)


#: What a generated password is drawn from: SQLAlchemy's delimiters, what URLs percent-encode,
#: spaces and unicode, and plain letters and digits.
PASSWORD_CHARS = list("?@:/#%&=+; !$") + ["é", "ß", "密", "ü"] + list("aZk9Q")


def _random_url(rng):
    """A storage URL with a random password, and the parts of it that are no secret."""
    scheme = rng.choice(
        ["postgresql+psycopg", "postgresql", "mysql+pymysql", "mariadb+pymysql", "oracle"]
    )
    user = rng.choice(["alice", "postgres", "root", ""])
    password = "".join(rng.choice(PASSWORD_CHARS) for _ in range(rng.randint(1, 14)))
    if rng.random() < 0.25:  # the same password, percent-encoded as the docs advise
        password = urllib.parse.quote(password, safe="")
    host = rng.choice(["db", "127.0.0.1", "db.example.org", "[::1]"])
    port = rng.choice(["", f":{rng.randint(1, 65535)}"])
    database = rng.choice(["optuna", "test", "studies_1"])
    query = rng.choice(["", "?sslmode=require", "?charset=utf8mb4&connect_timeout=10"])
    public = f"{scheme}://{user}:@{host}{port}/{database}{query}"
    url = f"{scheme}://{user}:{password}@{host}{port}/{database}{query}"
    return url, password, host, database, public


def test_mask_url_never_shows_the_password_sqlalchemy_parses():
    """A property: over 2000 seeded random URLs, the password SQLAlchemy reads from the URL
    (what the driver gets) never appears in the masked URL, and its host and database do.
    Where SQLAlchemy cannot parse the URL, none of the password written into it appears."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    rng = random.Random(20240622)
    parsed = unparsed = 0
    for _ in range(2000):
        url, written, host, database, public = _random_url(rng)
        masked = mask_url(url)
        assert host in masked and f"/{database}" in masked, (url, masked)
        try:
            password = make_url(url).password
        except (sqlalchemy.exc.ArgumentError, ValueError):  # a port that is no number
            password, unparsed = written, unparsed + 1
        if not password or password in public:  # nothing to hide, or a chance match
            continue
        parsed += password is not written
        assert password not in masked, (url, masked)
    assert parsed > 1000 and unparsed > 50  # both ways were tested, on many URLs


def test_malformed_url_is_one_clear_error():
    with pytest.raises(StorageError, match="SQLAlchemy URL"):
        make_storage("not a url")


def test_unreachable_server_names_masked_url_and_hides_password():
    url = "postgresql+psycopg://user:hunter2secret@127.0.0.1:1/nowhere"
    with pytest.raises(StorageError) as info:
        make_storage(url)
    message = str(info.value)
    assert "hunter2secret" not in message
    assert "user:***@127.0.0.1:1" in message
    assert "\n" not in message


def test_is_sqlite():
    assert is_sqlite(None) and is_sqlite("sqlite:///a.db")
    assert not is_sqlite("postgresql+psycopg://u@h/db")


def test_postgres_synchronous_commit_off_is_set_on_the_session():
    import os

    import sqlalchemy

    url = os.environ.get("OPTUNA_BS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("OPTUNA_BS_TEST_POSTGRES_URL is not set: no server to test against")
    for durable, expected in ((True, "on"), (False, "off")):
        storage = make_storage(url, synchronous_commit=durable)
        with storage.engine.connect() as conn:
            value = conn.execute(sqlalchemy.text("show synchronous_commit")).scalar()
        assert value == expected


def test_an_unencoded_at_in_the_password_is_one_line_that_repeats_none_of_it():
    with pytest.raises(StorageError, match="unencoded '@'") as err:
        make_storage("postgresql+psycopg://u:S3@cr3t@127.0.0.1:1/db")
    assert "S3" not in str(err.value) and "cr3t" not in str(err.value)
    with pytest.raises(StorageError, match="port must be a number") as err:
        make_storage("postgresql+psycopg://u:S3cr3t@host:notaport/db")
    assert "S3cr3t" not in str(err.value)


def test_a_read_only_sqlite_file_or_folder_is_one_line_before_any_trial(tmp_path, monkeypatch):
    """As root every file is writable, so the permission is what os.access says."""
    import os

    import optuna_bs.study.storage as storage_module

    db = tmp_path / "ro.db"
    make_storage(f"sqlite:///{db}")  # the file exists
    real = os.access
    monkeypatch.setattr(
        storage_module.os, "access", lambda p, mode: False if str(p) == str(db) else real(p, mode)
    )
    with pytest.raises(StorageError, match=r"ro\.db' is read-only: make it writable"):
        make_storage(f"sqlite:///{db}")
    monkeypatch.setattr(
        storage_module.os, "access", lambda p, mode: False if str(p) == str(tmp_path) else True
    )
    with pytest.raises(StorageError, match="cannot be created: the folder .* is not writable"):
        make_storage(f"sqlite:///{tmp_path / 'new.db'}")
    assert not (tmp_path / "new.db").exists()


def test_file_to_create_names_a_new_file_store_and_checks_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert file_to_create(None) == Path("optuna_bs.db")
    assert file_to_create(f"sqlite:///{tmp_path / 'a.db'}") == tmp_path / "a.db"
    assert file_to_create("study.log") == Path("study.log")
    make_storage(f"sqlite:///{tmp_path / 'a.db'}")
    assert file_to_create(f"sqlite:///{tmp_path / 'a.db'}") is None  # it exists now
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u@h/db", "grpc://h:1"):
        assert file_to_create(url) is None
    with pytest.raises(StorageError, match="folder .*missing' does not exist"):
        file_to_create(f"sqlite:///{tmp_path / 'missing' / 'a.db'}")
    assert set(tmp_path.iterdir()) == {tmp_path / "a.db"}  # nothing else was created


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://",
        "postgresql+psycopg://u:hunter2@127.0.0.1:1",
        "postgresql+psycopg://u@127.0.0.1:1/",
        "mysql+pymysql://u@127.0.0.1:1",
    ],
)
def test_a_server_url_without_a_database_is_refused_before_connecting(url):
    with pytest.raises(StorageError, match="names no database: add its name after") as err:
        make_storage(url)
    assert "hunter2" not in str(err.value)
    # A database named in the query (libpq's dbname) is a database: the server is asked.
    with pytest.raises(StorageError, match="cannot open storage"):
        make_storage("postgresql+psycopg://u@127.0.0.1:1?dbname=optuna")


def test_an_unreachable_grpc_proxy_is_one_line_and_warns_nothing(monkeypatch):
    pytest.importorskip("grpc", reason="grpcio is not installed: pip install 'optuna-bs[grpc]'")
    import warnings

    import optuna_bs.study.storage as storage_module

    monkeypatch.setattr(storage_module, "GRPC_TIMEOUT", 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        with pytest.raises(StorageError, match=r"cannot reach the gRPC proxy at 'grpc://127\."):
            make_storage("grpc://127.0.0.1:1")
