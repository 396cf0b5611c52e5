"""The synchronous SQLAlchemy engine the safety repositories share (`SafetyDatabase`), on the
same database as the messaging server's async engine. How either engine is configured (URLs,
SQLite pragmas and ``BEGIN IMMEDIATE`` writers, ``search_path``, the migration lock) is
`tidings.storage.engine`'s, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Executable, Row, Table, insert, update

from tidings.storage.engine import WRITE_OPTION, make_sync_engine, sync_url, upgrade_schema

__all__ = ["SafetyDatabase", "insert_row", "sync_url", "update_row"]

_T = TypeVar("_T")


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

    def first(self, query: Executable, convert: Callable[[Row[Any]], _T]) -> _T | None:
        """The first row of ``query`` (in its own read transaction) as ``convert`` makes it,
        or None when there is none."""
        with self.read() as connection:
            row = connection.execute(query).first()
        return None if row is None else convert(row)

    def all(self, query: Executable, convert: Callable[[Row[Any]], _T]) -> list[_T]:
        """Every row of ``query`` (in its own read transaction), each as ``convert`` makes
        it."""
        with self.read() as connection:
            return [convert(row) for row in connection.execute(query).all()]

    def migrate(self) -> None:
        """Apply every pending Alembic migration (both schemas; idempotent)."""
        with self.write() as connection:
            upgrade_schema(connection, self.schema)

    def dispose(self) -> None:
        self.engine.dispose()


def insert_row(connection: Connection, table: Table, values: dict[str, Any]) -> None:
    """Insert one row of ``values`` into ``table`` (the repositories' shared shorthand)."""
    connection.execute(insert(table).values(**values))


def update_row(
    connection: Connection,
    table: Table,
    key: str,
    values: dict[str, Any],
    *conditions: ColumnElement[bool],
) -> int:
    """Set every column of ``values`` but ``key`` on the row whose ``key`` column equals
    ``values[key]`` and that meets ``conditions`` (a version check, a state); returns how many
    rows changed (0 or 1), for the caller to turn 0 into its conflict."""
    changes = {name: value for name, value in values.items() if name != key}
    result = connection.execute(
        update(table).where(table.c[key] == values[key], *conditions).values(**changes)
    )
    return result.rowcount
