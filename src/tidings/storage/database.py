"""The messaging server's database handle: an async SQLAlchemy engine for SQLite (embedded,
WAL) or PostgreSQL, and the Alembic migrations that bring its schema to the current version.
The engine itself (URLs, pragmas, write transactions, the migration lock) is configured by
`tidings.storage.engine`, shared with the safety repositories' engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.storage.engine import (
    MIGRATIONS,
    WRITE_OPTION,
    apply_sqlite_pragmas,
    async_url,
    create_sqlite_file_privately,
    make_async_engine,
    sqlite_url,
    upgrade_schema,
)

# Re-exported: the server, the CLI and the tests import these from here.
__all__ = [
    "MIGRATIONS",
    "Database",
    "apply_sqlite_pragmas",
    "async_url",
    "create_sqlite_file_privately",
    "sqlite_url",
]


class Database:
    """One engine per process.

    `write()` yields a connection inside a read-write transaction (``BEGIN IMMEDIATE`` on
    SQLite, so it waits for a writer of the other engine or another process instead of failing
    on a read-to-write upgrade), `read()` one for reads. On SQLite the writers of this process
    also take turns on an asyncio lock: SQLite has one writer at a time anyway, and a task
    waiting on the lock costs nothing, where one waiting in busy_timeout holds a pool
    connection. PostgreSQL writers run concurrently and rely on row locks.
    """

    def __init__(self, url: str, *, pool_size: int = 10, schema: str = "") -> None:
        """``schema`` (PostgreSQL only) puts every table, and Alembic's version table, in that
        schema instead of ``public``: several deployments or test runs can share a database.

        Raises:
            ValueError: ``schema`` is given for SQLite, or is not a plain identifier.
        """
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.schema = schema
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self.engine = make_async_engine(self.url, schema=schema, pool_size=pool_size)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            await connection.execution_options(**{WRITE_OPTION: True})
            async with connection.begin():
                yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction; commits on success, rolls back on any
        exception."""
        if self._write_lock is None:
            async with self._transaction() as connection:
                yield connection
            return
        async with self._write_lock, self._transaction() as connection:
            yield connection

    @asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        """This process's SQLite write turn without a connection: for a writer with a
        connection of its own (`tidings.storage.relay`). A no-op on PostgreSQL."""
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            yield connection

    async def migrate(self) -> None:
        """Apply every pending migration (idempotent; creates the schema if one is set)."""
        async with self.write() as connection:
            await connection.run_sync(upgrade_schema, self.schema)

    async def close(self) -> None:
        await self.engine.dispose()
