"""The synchronous SQLAlchemy engine the safety repositories share (`SafetyDatabase`), on the
same database as the messaging server's async engine. How either engine is configured (URLs,
SQLite pragmas and ``BEGIN IMMEDIATE`` writers, ``search_path``, the migration lock) is
`tidings.storage.engine`'s, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Row,
    Table,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError
from tidings.storage.engine import (
    WRITE_OPTION,
    make_sync_engine,
    record_from_row,
    record_values,
    sync_url,
    upgrade_schema,
)

__all__ = ["RecordTable", "SafetyDatabase", "during", "insert_row", "sync_url", "update_row"]

_T = TypeVar("_T")


def during(column: ColumnElement[Any], start_ms: int, end_ms: int) -> ColumnElement[bool]:
    """``start_ms <= column < end_ms``: the period test of every aggregate, in SQL as
    `tidings.safety.memory_rows.in_period` is in memory (a NULL time is in no period)."""
    return and_(column >= start_ms, column < end_ms)


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


class RecordTable(Generic[_T]):
    """The rows of one table as records of one type (a frozen dataclass), keyed by one
    column: the insert, get, update and select shapes every repository shares. Rows become
    records by `record_from_row` unless ``decode`` is given, records rows by `record_values`
    unless ``encode`` is (for a table that stores something the record does not hold as it
    is: a renamed column, an encoded or sealed value)."""

    def __init__(
        self,
        db: SafetyDatabase,
        table: Table,
        key: str,
        record_type: type[_T],
        *,
        decode: Callable[[Row[Any]], _T] | None = None,
        encode: Callable[[_T], dict[str, Any]] = record_values,
    ) -> None:
        self.db = db
        self.table = table
        self.key = key
        self.decode: Callable[[Row[Any]], _T] = decode or (
            lambda row: record_from_row(record_type, row)
        )
        self.encode = encode

    def insert(self, record: _T, *, conflict: str = "") -> None:
        """Insert ``record`` in a transaction of its own.

        Raises:
            ConflictError: with message ``conflict`` when one is given and a unique key
                (the record's id, a unique index) refuses the row; without one the
                `IntegrityError` propagates.
        """
        try:
            with self.db.write() as connection:
                insert_row(connection, self.table, self.encode(record))
        except IntegrityError:
            if not conflict:
                raise
            raise ConflictError(conflict) from None

    def get(self, key_value: Any) -> _T | None:
        """The record whose key is ``key_value``, or None."""
        return self.db.first(
            select(self.table).where(self.table.c[self.key] == key_value), self.decode
        )

    def update(self, record: _T, *conditions: ColumnElement[bool], conflict: str = "") -> None:
        """Store ``record`` over the row of its key (in a transaction of its own), where
        ``conditions`` (a version check, a state) hold.

        Raises:
            ConflictError: with message ``conflict`` when one is given and no row matched
                (without one, a missing row is left unnoticed).
        """
        with self.db.write() as connection:
            changed = update_row(connection, self.table, self.key, self.encode(record), *conditions)
            if conflict and changed != 1:
                raise ConflictError(conflict)

    def where(
        self, condition: ColumnElement[bool], *order_by: Any, limit: int | None = None
    ) -> list[_T]:
        """The records meeting ``condition``, ordered by ``order_by``, at most ``limit``."""
        query = select(self.table).where(condition).order_by(*order_by)
        if limit is not None:
            query = query.limit(limit)
        return self.db.all(query, self.decode)

    def delete(self, condition: ColumnElement[bool]) -> None:
        """Delete the rows meeting ``condition`` (in a transaction of its own)."""
        with self.db.write() as connection:
            connection.execute(delete(self.table).where(condition))

    def count_by(self, condition: ColumnElement[bool], *columns: Any) -> dict[tuple[str, ...], int]:
        """``SELECT columns, COUNT(*) WHERE condition GROUP BY columns`` as {values: count}
        (values as text, in the order of ``columns``; none: the one total under ``()``).
        Counted in the database, uncapped."""
        query = select(*columns, func.count()).select_from(self.table).where(condition)
        if columns:
            query = query.group_by(*columns)
        rows = self.db.all(query, tuple)
        return {tuple(str(v) for v in row[:-1]): int(row[-1]) for row in rows if row[-1]}

    def count(self) -> int:
        """How many rows the table holds."""
        with self.db.read() as connection:
            query = select(func.count()).select_from(self.table)
            return int(connection.execute(query).scalar_one())
