"""The synchronous SQLAlchemy engine the safety repositories share (`SafetyDatabase`).

- SQLite (``sqlite+pysqlite``): WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for
  every write transaction, so a writer takes the write lock up front and concurrent writers
  (this engine's threads, the server's async engine, other processes) *wait* for it instead of
  failing on a read-to-write upgrade. Reads use plain deferred transactions.
- PostgreSQL (``postgresql+psycopg``): ordinary transactions; optional schema via
  ``search_path``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, insert

from tidings.storage.database import MIGRATIONS, create_sqlite_file_privately

__all__ = ["SafetyDatabase", "insert_row", "sync_url"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_WRITE = "tidings_write"


def sync_url(url: str) -> str:
    """The synchronous driver URL for a database URL in any of the spellings the server
    accepts (``postgresql://``, ``postgresql+asyncpg://``, ``sqlite:///``,
    ``sqlite+aiosqlite:///``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a database URL")
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + rest
    if base == "sqlite":
        return "sqlite+pysqlite://" + rest
    return url


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN would be
    # deferred and placed before the first DML only).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SafetyDatabase:
    """A synchronous engine for the safety repositories.

    Raises (on construction):
        ValueError: a ``schema`` for SQLite, or one that is not a plain identifier.
    """

    def __init__(self, url: str, *, schema: str = "", pool_size: int = 5) -> None:
        self.url = sync_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.schema = schema
        if schema and (self.is_sqlite or not _IDENTIFIER.fullmatch(schema)):
            raise ValueError("database schema must be a plain identifier, PostgreSQL only")
        if self.is_sqlite:
            self.engine: Engine = create_engine(self.url, connect_args={"timeout": 15})
            create_sqlite_file_privately(self.engine, self.url)
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            connect_args = {"options": f"-csearch_path={schema}"} if schema else {}
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                connect_args=connect_args,
            )

    def __repr__(self) -> str:
        # The URL may carry a password: show the dialect only.
        return f"SafetyDatabase(dialect={self.engine.dialect.name!r})"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on
        success, rolls back on any exception."""
        with self.engine.connect() as connection:
            connection.execution_options(**{_WRITE: True})
            with connection.begin():
                yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def migrate(self) -> None:
        """Apply every pending Alembic migration (both schemas; idempotent)."""
        from alembic import command
        from alembic.config import Config

        with self.engine.connect() as connection:
            if not self.is_sqlite:
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(1953064041)")
                if self.schema:
                    connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()

    def dispose(self) -> None:
        self.engine.dispose()


def insert_row(connection: Connection, table: Table, values: dict[str, Any]) -> None:
    """Insert one row of ``values`` into ``table`` (the repositories' shared shorthand)."""
    connection.execute(insert(table).values(**values))
