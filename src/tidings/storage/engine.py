"""The one database engine layer under both engines on the server's database: the messaging
server's async engine (`tidings.storage.database.Database`) and the safety repositories'
synchronous one (`tidings.safety.sql.SafetyDatabase`).

It owns what the two must agree on:

- URL spellings: operators write ``postgresql://`` or ``sqlite:///``; `async_url` and
  `sync_url` turn any accepted spelling into the driver URL each engine needs.
- The PostgreSQL schema name (`check_schema`: a plain identifier, PostgreSQL only) and how a
  pooled connection is put into it (``search_path``).
- SQLite: WAL, foreign keys, secure delete, one busy timeout (`SQLITE_BUSY_TIMEOUT_MS`), the
  database file created private, and ``BEGIN IMMEDIATE`` for every write transaction
  (`WRITE_OPTION`): a writer takes the write lock up front, so concurrent writers (either
  engine, any thread, any process) *wait* for it instead of failing with "database is locked"
  on a read-to-write upgrade, which busy_timeout does not cover. Reads use plain ``BEGIN``.
- Migrations: `upgrade_schema` under one advisory lock (`MIGRATION_LOCK`).
- `record_from_row` and `record_values`: a result row as one of the frozen records the
  repositories return, and a record as the column values of its row.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Mapping
from contextlib import suppress
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Row, create_engine, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tidings.storage.files import create_private_file

__all__ = [
    "MIGRATIONS",
    "MIGRATION_LOCK",
    "SQLITE_BUSY_TIMEOUT_MS",
    "WRITE_OPTION",
    "apply_sqlite_pragmas",
    "async_url",
    "check_schema",
    "create_sqlite_file_privately",
    "make_async_engine",
    "make_sync_engine",
    "record_from_row",
    "record_values",
    "sqlite_url",
    "sync_url",
    "upgrade_schema",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

MIGRATION_LOCK = 0x7469_6469
"""The PostgreSQL advisory lock every migrating node takes ("tidi"; any constant works as long
as every node and both engines use this one)."""

SQLITE_BUSY_TIMEOUT_MS = 15_000
"""How long a SQLite connection waits for another writer's lock before "database is locked".
Every write transaction of either engine is short (the longest, migrations at first start and
a report stored with its evidence, take well under a second), so this is only reached under
pathological contention; it stays below the client's 20 s HTTP timeout
(`tidings.client.transport.DEFAULT_TIMEOUT`), so a request that waited the whole time still
gets its answer before the client gives up."""

WRITE_OPTION = "tidings_write"
"""Execution option on a connection whose next transaction writes (``BEGIN IMMEDIATE`` on
SQLite; no effect on PostgreSQL)."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_Record = TypeVar("_Record")


def sqlite_url(data_dir: Path) -> str:
    """The embedded default: ``<data_dir>/tidings.db``."""
    return f"sqlite+aiosqlite:///{(data_dir / 'tidings.db').resolve()}"


def _driver_url(url: str, postgresql: str, sqlite: str) -> str:
    # Anything else (another database, no scheme at all) is left for the driver to refuse.
    scheme, _, rest = url.partition("://")
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return f"{postgresql}://{rest}"
    if base == "sqlite":
        return f"{sqlite}://{rest}"
    return url


def async_url(url: str) -> str:
    """The async driver URL (asyncpg, aiosqlite) for a database URL in any spelling the server
    accepts (``postgresql://``, ``postgres://``, ``sqlite:///``, or a driver URL); anything
    else is returned as it is, for `create_async_engine` to refuse."""
    return _driver_url(url, "postgresql+asyncpg", "sqlite+aiosqlite")


def sync_url(url: str) -> str:
    """The synchronous driver URL (psycopg, pysqlite) for a database URL in any spelling the
    server accepts (``postgresql://``, ``postgresql+asyncpg://``, ``sqlite:///``,
    ``sqlite+aiosqlite:///``).

    Raises:
        ValueError: ``url`` has no ``scheme://``.
    """
    if "://" not in url:
        raise ValueError("not a database URL")
    return _driver_url(url, "postgresql+psycopg", "sqlite+pysqlite")


def check_schema(schema: str, *, is_sqlite: bool) -> None:
    """Refuse a schema name the engines could not use safely ("" means the default schema).

    Raises:
        ValueError: ``schema`` is given for SQLite, or is not a plain identifier (it is put
            into ``CREATE SCHEMA`` and ``search_path`` verbatim).
    """
    if schema and (is_sqlite or not _IDENTIFIER.fullmatch(schema)):
        raise ValueError("database schema must be a plain identifier, PostgreSQL only")


def create_sqlite_file_privately(engine: Engine, url: str) -> None:
    """Have the SQLite database file of ``url`` created with mode 0600 (whatever the umask)
    just before ``engine`` first opens it. SQLite gives its ``-wal``, ``-shm`` and ``-journal``
    files the database file's mode, so they are private too. A no-op for in-memory and
    PostgreSQL URLs; an existing file is left alone (the data directory is tightened at start).
    """
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
    """The settings of every connection to the server's SQLite file (a ``connect`` listener;
    also used by the queue writer's own connections, `tidings.storage.relay`)."""
    # Let SQLAlchemy's "begin" event issue BEGIN itself: the driver's implicit BEGIN would be
    # deferred, and placed before the first DML statement only.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # First, so that the pragmas below already wait for a lock rather than fail.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL lets readers proceed during a write; NORMAL sync is durable across process crashes
    # in WAL mode; foreign keys make device/account deletion cascade to keys and queues.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Deleted rows (acknowledged envelopes, sealed secrets) are overwritten, not left in free
    # pages of the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _configure_sqlite(engine: Engine, url: str) -> None:
    create_sqlite_file_privately(engine, url)
    event.listen(engine, "connect", apply_sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)


def _engine_args(url: str, schema: str, pool_size: int) -> dict[str, Any]:
    """The engine arguments for the driver URL ``url``: none for SQLite (one file, no pool to
    size); for PostgreSQL the pool, and ``search_path`` as a connection setting (so every
    pooled connection sees ``schema``, not only the one that ran the migrations), spelled as
    the driver takes it."""
    check_schema(schema, is_sqlite=url.startswith("sqlite"))
    if url.startswith("sqlite"):
        return {}
    connect_args: dict[str, Any] = {}
    if schema and url.startswith("postgresql+asyncpg"):
        connect_args = {"server_settings": {"search_path": schema}}
    elif schema:
        connect_args = {"options": f"-csearch_path={schema}"}
    return {
        "connect_args": connect_args,
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_pre_ping": True,
    }


def make_async_engine(url: str, *, schema: str = "", pool_size: int = 10) -> AsyncEngine:
    """An async engine (asyncpg or aiosqlite) for ``url``, configured as the module docstring
    says; on PostgreSQL every pooled connection sees ``schema`` (``search_path``).

    Raises:
        ValueError: a bad schema (`check_schema`).
    """
    url = async_url(url)
    engine = create_async_engine(url, **_engine_args(url, schema, pool_size))
    if url.startswith("sqlite"):
        _configure_sqlite(engine.sync_engine, url)
    return engine


def make_sync_engine(url: str, *, schema: str = "", pool_size: int = 5) -> Engine:
    """A synchronous engine (psycopg or pysqlite) for ``url``, configured as the module
    docstring says; on PostgreSQL every pooled connection sees ``schema`` (``search_path``).

    Raises:
        ValueError: not a database URL (`sync_url`), a bad schema (`check_schema`).
    """
    url = sync_url(url)
    engine = create_engine(url, **_engine_args(url, schema, pool_size))
    if url.startswith("sqlite"):
        _configure_sqlite(engine, url)
    return engine


def upgrade_schema(connection: Connection, schema: str = "") -> None:
    """Apply every pending Alembic migration (both schemas, messaging and safety; idempotent)
    on ``connection``, inside the caller's transaction (which commits). On PostgreSQL the
    migration lock is taken first, so cluster nodes starting together do not race on
    CREATE TABLE: one migrates, the others wait and then find nothing left to do; ``schema``
    is created if missing."""
    if connection.dialect.name != "sqlite":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        if schema:
            connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@functools.cache
def _enum_fields(record_type: type) -> dict[str, type[Enum]]:
    """Field name -> the `Enum` it holds (``E`` or ``E | None``), for the fields that hold one."""
    hints = typing.get_type_hints(record_type)
    found: dict[str, type[Enum]] = {}
    for f in dataclasses.fields(record_type):
        hint = hints[f.name]
        options = typing.get_args(hint) or (hint,)
        enums = [o for o in options if isinstance(o, type) and issubclass(o, Enum)]
        if len(enums) == 1:
            found[f.name] = enums[0]
    return found


def record_from_row(record_type: type[_Record], row: Row[Any], **converted: Any) -> _Record:
    """``record_type`` (a dataclass) built from ``row``: each field takes the column of the
    same name, an `Enum` field (or optional one) the member of that column's value, a binary
    column ``bytes`` (drivers may hand out ``memoryview``); the fields given in ``converted``
    (renamed columns, values the caller decodes) take that value instead.

    Raises:
        AttributeError: a field has neither a column of its name nor a ``converted`` value.
        ValueError: a column holds no member of its field's enum.
    """
    enums = _enum_fields(typing.cast(type, record_type))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(record_type):  # type: ignore[arg-type]
        if f.name in converted:
            values[f.name] = converted[f.name]
            continue
        value = getattr(row, f.name)
        if isinstance(value, memoryview):
            value = bytes(value)
        elif value is not None and f.name in enums:
            value = enums[f.name](value)
        values[f.name] = value
    return record_type(**values)


def record_values(
    record: Any, *, renamed: Mapping[str, str] | None = None, **converted: Any
) -> dict[str, Any]:
    """The column values of ``record`` (a dataclass instance), the inverse of
    `record_from_row`: each field under its own name (or ``renamed[field]``), an `Enum` as its
    value; ``converted`` adds or replaces columns (values the caller encodes)."""
    names = renamed or {}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        values[names.get(f.name, f.name)] = value.value if isinstance(value, Enum) else value
    values.update(converted)
    return values
