"""The one database behind the service, the worker and the records: engine, sessions and migrations.

`FTLAB_DATABASE_URL` names it (any SQLAlchemy URL, e.g. `postgresql+psycopg://…`); the default is a SQLite
file at `FTLAB_HOME/ftlab.db`, opened in WAL mode with a busy timeout so a server and several workers can
share it. A session that may write starts its SQLite transaction with `BEGIN IMMEDIATE`: writers queue on the
busy timeout instead of failing when a read transaction later tries to write. A read-only session
(`read_only=True`: what every GET of the service uses) starts a plain deferred transaction, which in WAL mode
never waits for a writer and never makes one wait. The schema is managed by Alembic (migrations ship inside
this package) and `init_db()` brings any database to the newest revision.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from ftlab.config import home

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "ftlab_read_only"  # the execution option that marks a read-only session's connection
MIGRATIONS = Path(__file__).with_name("migrations")


def database_url() -> str:
    """`$FTLAB_DATABASE_URL`, or the SQLite file `FTLAB_HOME/ftlab.db`."""
    return os.environ.get("FTLAB_DATABASE_URL") or f"sqlite:///{home() / 'ftlab.db'}"


@cache
def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process (the connection pool lives in it)."""
    url = url or database_url()
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy, not pysqlite, issue BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
            _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives a killed process
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN" if connection.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _enable_wal(cursor) -> None:
    """Switch the file to WAL (it stays so). Two processes opening a fresh file at once can get "database is
    locked" here without the busy timeout ever waiting — SQLite refuses that lock upgrade outright to avoid a
    deadlock (seen: 2 rounds in 15 of four processes) — so the switch is retried within the same timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@cache
def _sessionmaker(url: str, read_only: bool) -> sessionmaker[Session]:
    engine = get_engine(url)
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}) if read_only else engine, expire_on_commit=False)


def new_session(url: str | None = None, *, read_only: bool = False) -> Session:
    """A session on the database; `read_only` ones take no write lock on SQLite (and must not write)."""
    return _sessionmaker(url or database_url(), read_only)()


def request_session(*, read_only: bool = False) -> Iterator[Session]:
    """A session for one HTTP request (the service's dependency wraps it): routes commit what they change
    before they answer; anything left uncommitted is rolled back."""
    db = new_session(read_only=read_only)
    try:
        yield db
    finally:
        db.rollback()
        db.close()


@contextmanager
def session_scope(url: str | None = None, *, read_only: bool = False) -> Iterator[Session]:
    """A session whose transaction commits when the block ends and rolls back if it raises."""
    session = new_session(url, read_only=read_only)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    return config


def init_db(url: str | None = None) -> None:
    """Create or upgrade the schema to the newest migration. Safe to call from several processes at once:
    on SQLite the migration runs inside one `BEGIN IMMEDIATE` transaction, so the others wait and find it done.
    A database already at the newest revision is only read (no write lock)."""
    from alembic import command
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    import ftlab.records.tables  # noqa: F401 - loaded before the lock is taken; the migrations' env imports it

    url = url or database_url()
    config = alembic_config(url)
    head = ScriptDirectory.from_config(config).get_current_head()
    engine = get_engine(url)
    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already serialises migrators
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7305)")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
