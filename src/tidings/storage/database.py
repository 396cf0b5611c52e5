"""The database handle: an async SQLAlchemy engine for SQLite (embedded, WAL) or PostgreSQL,
and the Alembic migrations that bring its schema to the current version."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, make_url
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tidings.storage.files import create_private_file

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x7469_6469  # "tidi": any constant shared by all nodes
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def sqlite_url(data_dir: Path) -> str:
    """The embedded default: ``<data_dir>/tidings.db``."""
    return f"sqlite+aiosqlite:///{(data_dir / 'tidings.db').resolve()}"


def async_url(url: str) -> str:
    """Accept the plain ``postgresql://`` / ``sqlite:///`` spellings operators write."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
    return url


def create_sqlite_file_privately(engine: Engine, url: str) -> None:
    """Have the SQLite database file of ``url`` created with mode 0600 (whatever the umask)
    just before ``engine`` first opens it. SQLite gives its ``-wal``, ``-shm`` and ``-journal``
    files the database file's mode, so they are private too. A no-op for in-memory and
    PostgreSQL URLs; an existing file is left alone (the data directory is tightened at start).
    Both engines on the server's database (this module's and the safety side's) use it."""
    url_ = make_url(url)
    database = url_.database
    if not url_.get_backend_name().startswith("sqlite") or not database:
        return
    if database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)

    def create(*_: Any) -> None:
        # A missing directory: SQLite then reports "unable to open database file" as before.
        with suppress(OSError):
            create_private_file(path)

    event.listen(engine, "do_connect", create)


def apply_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """The pragmas of every server connection to the SQLite file (a ``connect`` listener)."""
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; NORMAL sync is durable across process crashes
    # in WAL mode; foreign keys make device/account deletion cascade to keys and queues.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # Acknowledged envelopes are overwritten, not left in free pages of the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


class Database:
    """One engine per process.

    `write()` yields a connection inside a read-write transaction, `read()` one for reads. On
    SQLite the writers of this process take turns on an asyncio lock: SQLite has one writer at a
    time anyway, and a deferred transaction that upgrades from read to write under contention
    fails with "database is locked" instead of waiting (busy_timeout does not cover that case).
    PostgreSQL writers run concurrently and rely on row locks.
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
        if schema and (self.is_sqlite or not _IDENTIFIER.fullmatch(schema)):
            raise ValueError("database schema must be a plain identifier, PostgreSQL only")
        if self.is_sqlite:
            self.engine: AsyncEngine = create_async_engine(self.url)
            create_sqlite_file_privately(self.engine.sync_engine, self.url)
            event.listen(self.engine.sync_engine, "connect", apply_sqlite_pragmas)
        else:
            # search_path as a connection setting: every pooled connection sees the schema,
            # not only the one that ran the migrations.
            connect_args = {"server_settings": {"search_path": schema}} if schema else {}
            self.engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                connect_args=connect_args,
            )

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self.engine.begin() as connection:
                yield connection
            return
        async with self._write_lock, self.engine.begin() as connection:
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

        def upgrade(connection: Connection) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        async with self.engine.begin() as connection:
            if not self.is_sqlite:
                # Cluster nodes starting together would race on CREATE TABLE: one migrates,
                # the others wait here and then find nothing left to do.
                await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            if self.schema:
                await connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await connection.run_sync(upgrade)

    async def close(self) -> None:
        await self.engine.dispose()
