"""The synchronous SQLAlchemy engine the safety repositories share (`SafetyDatabase`), on the
same database as the messaging server's async engine. How either engine is configured (URLs,
SQLite pragmas and ``BEGIN IMMEDIATE`` writers, ``search_path``, the migration lock) is
`tidings.storage.engine`'s, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, insert

from tidings.storage.engine import WRITE_OPTION, make_sync_engine, sync_url, upgrade_schema

__all__ = ["SafetyDatabase", "insert_row", "sync_url"]


class SafetyDatabase:
    """A synchronous engine for the safety repositories.

    Raises (on construction):
        ValueError: not a database URL, a ``schema`` for SQLite, or one that is not a plain
            identifier.
    """

    def __init__(self, url: str, *, schema: str = "", pool_size: int = 5) -> None:
        self.url = sync_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.schema = schema
        self.engine = make_sync_engine(self.url, schema=schema, pool_size=pool_size)

    def __repr__(self) -> str:
        # The URL may carry a password: show the dialect only.
        return f"SafetyDatabase(dialect={self.engine.dialect.name!r})"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on
        success, rolls back on any exception."""
        with self.engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def migrate(self) -> None:
        """Apply every pending Alembic migration (both schemas; idempotent)."""
        with self.write() as connection:
            upgrade_schema(connection, self.schema)

    def dispose(self) -> None:
        self.engine.dispose()


def insert_row(connection: Connection, table: Table, values: dict[str, Any]) -> None:
    """Insert one row of ``values`` into ``table`` (the repositories' shared shorthand)."""
    connection.execute(insert(table).values(**values))
