"""Group commit for the durable per-device queues: one writer per database.

Every send (a set of envelopes, all or nothing) and every acknowledgement is queued here; one
writer task drains the queue and commits everything waiting in ONE transaction per batch —
acknowledgements first (one ``DELETE ... RETURNING``), then the queue-limit check, then one
multi-row insert. Each caller's future completes only after its batch committed, so a send is
acknowledged to its sender only once it is durable, and an envelope is deleted only after its
recipient's ack (the Synapse event-persist queue, RocksDB write groups).

Where the batch runs:

- SQLite file (embedded mode): on a dedicated thread owning its own connection (the
  standard library's `sqlite3`, no SQLAlchemy: its per-statement execute costs more than the
  statements themselves at the batch sizes a node sees, `bench/relay_hot_path.py`;
  ``BEGIN IMMEDIATE``), one thread hop per batch, while the `Database` write turn is held so
  the process's other writers never interleave with it;
- PostgreSQL: on a dedicated thread owning its own psycopg connection (fixed statements over
  arrays, `PostgresStatements`), one thread hop and five round trips per batch (``BEGIN``,
  delete, count, insert, ``COMMIT``) — through the async engine and SQLAlchemy Core each
  statement also paid a greenlet switch and Core's execute, and the batch a ``SET LOCAL``;
- an in-memory SQLite: on the `Database`'s async engine, SQLAlchemy Core through
  ``run_sync``.

Durability (`DURABILITY_FULL`, the default): an acknowledged batch survives a process crash
and a power loss — SQLite WAL with ``synchronous=FULL`` (the WAL is fsynced at every commit),
PostgreSQL with ``synchronous_commit = on`` on the writer's connection. `DURABILITY_RELAXED`
(``relay_durability = "relaxed"``) survives a process crash but may lose the last batches on a
power loss (SQLite ``synchronous=NORMAL``; PostgreSQL ``synchronous_commit = off``).

Queue limits: on SQLite (one node owns the file) the per-device queue sizes are kept in memory,
seeded from the database the first time a device is written to and forgotten (re-seeded) after
anything else deletes envelopes (`QueueWriter.forget_counts`). On PostgreSQL, where other nodes
write the same queues, every batch counts its devices' queues in its own transaction: the
database stays the source of truth, and concurrent batches of different nodes may each admit one
envelope per device past the limit (the bound: ``queue_limit`` + one per node).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from sqlalchemy import (
    Connection,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    make_url,
    select,
)
from sqlalchemy import tuple_ as sql_tuple
from sqlalchemy.exc import IntegrityError

from tidings.errors import QueueFullError, StorageUnavailableError, TidingsError
from tidings.storage.database import Database, apply_sqlite_pragmas
from tidings.storage.schema import messages

log = logging.getLogger("tidings.storage.relay")

DURABILITY_FULL = "full"
DURABILITY_RELAXED = "relaxed"
DURABILITY_MODES = (DURABILITY_FULL, DURABILITY_RELAXED)
MAX_BATCH = 512
"""Items (sends + acks) per transaction: bounds one commit's latency and statement size."""

T = TypeVar("T")
QueueKey = tuple[int, int]
"""(account id, device id): one device's queue."""


@dataclass(frozen=True, slots=True)
class OutgoingEnvelope:
    device_id: int
    message_id: bytes
    envelope: bytes


@dataclass(frozen=True, slots=True)
class _Send:
    account_id: int
    envelopes: Sequence[OutgoingEnvelope]
    now_ms: int
    expires_at_ms: int
    queue_limit: int
    future: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class _Ack:
    account_id: int
    device_id: int
    message_id: bytes
    future: asyncio.Future[bool]


@dataclass(frozen=True, slots=True)
class _BatchResult:
    send_errors: list[TidingsError | None]
    acked: list[bool]
    sizes: dict[QueueKey, int]
    """Queue sizes after the commit of every device the batch counted or touched."""
    stored: list[StoredEnvelope]
    """What the batch inserted, in queue order (only when the writer was asked for it)."""


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    """An envelope as committed: its queue and its position there (``seq``)."""

    account_id: int
    device_id: int
    seq: int
    message_id: bytes
    envelope: bytes


Committed = Callable[[list[StoredEnvelope]], None]
"""Listener called (on the event loop) with every batch's envelopes right after its commit."""


BeforeCommit = Callable[[], None]
"""Test hook: called inside the batch transaction just before the commit (raise to fail it)."""


Row = tuple[int, int, bytes, bytes, int, int]
"""One envelope to insert: account id, device id, message id, envelope, created, expires."""
AckRow = tuple[int, int, bytes]
"""(account id, device id, message id) of an acknowledged envelope."""


class _BatchStatements(Protocol):
    """The three statements of a batch, on one connection inside its transaction."""

    def delete_acked(self, rows: list[AckRow]) -> set[AckRow]:
        """Delete these envelopes; returns those that were there."""
        ...

    def count_queues(self, queues: list[QueueKey]) -> Iterable[tuple[int, int, int]]:
        """(account id, device id, envelopes queued) of those of ``queues`` that hold any."""
        ...

    def insert(self, rows: list[Row], *, returning: bool) -> list[int]:
        """Insert every row (one statement or a few); with ``returning``, each row's queue
        position in the order of ``rows`` (else an empty list)."""
        ...


# Built once: a batch of one message should not pay for building its statements.
_m = messages.c
# Every statement on `messages` reaches its rows through an index, whatever the queues hold:
# SQLite reads a row-value IN over the whole table (the plan is "SCAN messages"), so the
# message ids are named on their own as well (the unique index), and queues are counted by
# joining the keys to ix_messages_queue. At 200,000 queued rows an ack batch of 50 took
# 16.5 ms that way, 0.5 ms this way (docs/performance.md, "Relay, stops 19-20").
_DELETE_ACKED = (
    delete(messages)
    .where(_m.message_id.in_(bindparam("ids", expanding=True)))
    .where(
        sql_tuple(_m.account_id, _m.device_id, _m.message_id).in_(bindparam("rows", expanding=True))
    )
    .returning(_m.account_id, _m.device_id, _m.message_id)
)
_COUNT_QUEUES = (
    select(_m.account_id, _m.device_id, func.count())
    .where(_m.account_id.in_(bindparam("accounts", expanding=True)))
    .where(sql_tuple(_m.account_id, _m.device_id).in_(bindparam("queues", expanding=True)))
    .group_by(_m.account_id, _m.device_id)
)
_INSERT = insert(messages)
_INSERT_RETURNING = insert(messages).returning(_m.id, sort_by_parameter_order=True)
_ROW_COLUMNS = (
    "account_id",
    "device_id",
    "message_id",
    "envelope",
    "created_at_ms",
    "expires_at_ms",
)


class CoreStatements:
    """`_BatchStatements` through SQLAlchemy Core (PostgreSQL, an in-memory SQLite)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def delete_acked(self, rows: list[AckRow]) -> set[AckRow]:
        found = self.conn.execute(_DELETE_ACKED, {"ids": [r[2] for r in rows], "rows": rows})
        return {(int(a), int(d), bytes(mid)) for a, d, mid in found}

    def count_queues(self, queues: list[QueueKey]) -> Iterable[tuple[int, int, int]]:
        accounts = sorted({a for a, _ in queues})
        counted = self.conn.execute(_COUNT_QUEUES, {"accounts": accounts, "queues": queues})
        return [(int(a), int(d), int(n)) for a, d, n in counted]

    def insert(self, rows: list[Row], *, returning: bool) -> list[int]:
        params = [dict(zip(_ROW_COLUMNS, row, strict=True)) for row in rows]
        if not returning:
            self.conn.execute(_INSERT, params)
            return []
        return [int(seq) for seq in self.conn.execute(_INSERT_RETURNING, params).scalars()]


_SQLITE_PAGE = 500
"""Rows per multi-row statement on SQLite (6 parameters a row: far below its 32,766)."""
# The `messages` table of `tidings.storage.schema` (test_relay_batching runs both statement
# sets on SQLite); "{values}" takes only "?" placeholders, one group per row (`_placeholders`).
_SQLITE_DELETE = (
    "DELETE FROM messages WHERE message_id IN ({ids}) "
    "AND (account_id, device_id, message_id) IN (VALUES {values}) "
    "RETURNING account_id, device_id, message_id"
)
_SQLITE_COUNT = (
    "SELECT q.column1, q.column2, count(*) FROM (VALUES {values}) AS q "
    "JOIN messages ON messages.account_id = q.column1 AND messages.device_id = q.column2 "
    "GROUP BY q.column1, q.column2"
)
_SQLITE_INSERT = (
    "INSERT INTO messages (account_id, device_id, message_id, envelope, created_at_ms, "
    "expires_at_ms) VALUES (?, ?, ?, ?, ?, ?)"
)
_SQLITE_INSERT_RETURNING = (
    "INSERT INTO messages (account_id, device_id, message_id, envelope, created_at_ms, "
    "expires_at_ms) VALUES {values} RETURNING id, message_id"
)


def _placeholders(rows: int, width: int) -> str:
    group = "(" + ", ".join("?" * width) + ")"
    return ", ".join([group] * rows)


def _pages(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _SQLITE_PAGE):
        yield items[start : start + _SQLITE_PAGE]


class SqliteStatements:
    """`_BatchStatements` on a `sqlite3` connection (the embedded node's writer thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def delete_acked(self, rows: list[AckRow]) -> set[AckRow]:
        deleted: set[AckRow] = set()
        for page in _pages(rows):
            sql = _SQLITE_DELETE.format(
                ids=", ".join("?" * len(page)), values=_placeholders(len(page), 3)
            )
            params = [row[2] for row in page] + [v for row in page for v in row]
            deleted.update(self.conn.execute(sql, params))
        return deleted

    def count_queues(self, queues: list[QueueKey]) -> Iterable[tuple[int, int, int]]:
        counted: list[tuple[int, int, int]] = []
        for page in _pages(queues):
            sql = _SQLITE_COUNT.format(values=_placeholders(len(page), 2))
            counted.extend(self.conn.execute(sql, [v for key in page for v in key]))
        return counted

    def insert(self, rows: list[Row], *, returning: bool) -> list[int]:
        if not returning:
            self.conn.executemany(_SQLITE_INSERT, rows)
            return []
        # RETURNING's row order is not promised by SQLite: matched back by message id (unique).
        position: dict[bytes, int] = {}
        for page in _pages(rows):
            sql = _SQLITE_INSERT_RETURNING.format(values=_placeholders(len(page), 6))
            position.update(
                (mid, seq) for seq, mid in self.conn.execute(sql, [v for row in page for v in row])
            )
        return [position[row[2]] for row in rows]


# PostgreSQL writer statements (psycopg): one fixed statement each, whatever the batch size,
# with the rows as arrays (`unnest`), so the server prepares each once per connection.
# The delete names the message ids on their own as well: a generic plan made while the table
# was empty (psycopg prepares a statement after five runs) otherwise walks the device's whole
# queue in ix_messages_queue for every ack, and queues grow under load (docs/performance.md,
# "Relay, stops 19-20"). The unique index on message_id finds each row at once.
_PG_DELETE = (
    "DELETE FROM messages WHERE message_id = ANY(%s::bytea[]) "
    "AND (account_id, device_id, message_id) IN "
    "(SELECT * FROM unnest(%s::bigint[], %s::integer[], %s::bytea[])) "
    "RETURNING account_id, device_id, message_id"
)
# Counted one queue at a time through ix_messages_queue: as an IN over the arrays, the generic
# plan of a new table hashes the keys and reads the whole table (tests/server/test_relay_plans).
# The keys are distinct (a set's); empty queues are left out, as a GROUP BY leaves them out.
_PG_COUNT = (
    "SELECT q.account_id, q.device_id, c.n FROM unnest(%s::bigint[], %s::integer[]) "
    "AS q(account_id, device_id) CROSS JOIN LATERAL (SELECT count(*) AS n FROM messages m "
    "WHERE m.account_id = q.account_id AND m.device_id = q.device_id) AS c WHERE c.n > 0"
)
_PG_INSERT = (
    "INSERT INTO messages (account_id, device_id, message_id, envelope, created_at_ms, "
    "expires_at_ms) SELECT * FROM unnest(%s::bigint[], %s::integer[], %s::bytea[], "
    "%s::bytea[], %s::bigint[], %s::bigint[])"
)
_PG_INSERT_RETURNING = _PG_INSERT + " RETURNING id, message_id"


class PostgresStatements:
    """`_BatchStatements` on a psycopg connection (the PostgreSQL writer's thread)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def delete_acked(self, rows: list[AckRow]) -> set[AckRow]:
        accounts, devices, ids = zip(*rows, strict=True)
        found = self.conn.execute(
            _PG_DELETE, (list(ids), list(accounts), list(devices), list(ids))
        )
        return {(int(a), int(d), bytes(mid)) for a, d, mid in found}

    def count_queues(self, queues: list[QueueKey]) -> Iterable[tuple[int, int, int]]:
        accounts, devices = zip(*queues, strict=True)
        counted = self.conn.execute(_PG_COUNT, (list(accounts), list(devices)))
        return [(int(a), int(d), int(n)) for a, d, n in counted]

    def insert(self, rows: list[Row], *, returning: bool) -> list[int]:
        columns = tuple(list(column) for column in zip(*rows, strict=True))
        if not returning:
            self.conn.execute(_PG_INSERT, columns)
            return []
        # RETURNING's row order is not promised for INSERT ... SELECT: matched by message id.
        position = {
            bytes(mid): int(seq) for seq, mid in self.conn.execute(_PG_INSERT_RETURNING, columns)
        }
        return [position[row[2]] for row in rows]


def _commit_batch(
    statements: _BatchStatements,
    sends: Sequence[_Send],
    acks: Sequence[_Ack],
    cached: dict[QueueKey, int] | None,
    before_commit: BeforeCommit | None,
    want_stored: bool = False,
) -> _BatchResult:
    """One batch inside the caller's transaction: acks, queue-limit check, inserts. A send that
    would overfill a queue gets `QueueFullError` and stores nothing; the others go in.
    ``cached``: the in-memory queue sizes (None: count every touched queue in the database)."""
    deleted: set[AckRow] = set()
    if acks:
        deleted = statements.delete_acked([(a.account_id, a.device_id, a.message_id) for a in acks])
    sizes: dict[QueueKey, int] = {}
    if cached is not None:
        # Cached sizes of every queue the batch touches, less what its acks just deleted.
        touched = {(a.account_id, a.device_id) for a in acks}
        touched.update((s.account_id, e.device_id) for s in sends for e in s.envelopes)
        for key in touched:
            size = cached.get(key)
            if size is not None:
                sizes[key] = size
        for account_id, device_id, _ in deleted:
            if (account_id, device_id) in sizes:
                sizes[(account_id, device_id)] -= 1
    unknown = {(s.account_id, e.device_id) for s in sends for e in s.envelopes} - sizes.keys()
    if unknown:
        sizes.update(dict.fromkeys(unknown, 0))
        sizes.update({(a, d): n for a, d, n in statements.count_queues(sorted(unknown))})
    send_errors: list[TidingsError | None] = []
    rows_in: list[Row] = []
    for s in sends:
        if any(sizes[(s.account_id, e.device_id)] >= s.queue_limit for e in s.envelopes):
            send_errors.append(QueueFullError("a recipient device's queue is full; try again"))
            continue
        send_errors.append(None)
        for e in s.envelopes:
            sizes[(s.account_id, e.device_id)] += 1
            rows_in.append(
                (s.account_id, e.device_id, e.message_id, e.envelope, s.now_ms, s.expires_at_ms)
            )
    stored: list[StoredEnvelope] = []
    if rows_in and want_stored:
        # One multi-row insert still; RETURNING gives each row's queue position.
        seqs = statements.insert(rows_in, returning=True)
        stored = [
            StoredEnvelope(r[0], r[1], seq, r[2], r[3])
            for r, seq in zip(rows_in, seqs, strict=True)
        ]
    elif rows_in:
        statements.insert(rows_in, returning=False)
    if before_commit is not None:
        before_commit()
    acked = []
    for a in acks:
        row = (a.account_id, a.device_id, a.message_id)
        acked.append(row in deleted)
        deleted.discard(row)  # the same ack twice in a batch: only the first deleted it
    return _BatchResult(send_errors, acked, sizes, stored)


def _decrement(counts: dict[Any, int], key: object) -> None:
    left = counts.pop(key) - 1
    if left:
        counts[key] = left


class _Closable(Protocol):
    def close(self) -> None: ...


ConnT = TypeVar("ConnT", bound=_Closable)


class _ConnectionThread(Generic[ConnT]):
    """A dedicated thread (a pool of one worker, named ``name``) owning one connection,
    ``conn``: the subclass's ``run`` opens it on the thread at its first call and uses it only
    there. `close` closes it on the thread (if it was opened), then ends the thread."""

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self.conn: ConnT | None = None

    async def close(self) -> None:
        def close_connection() -> None:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

        await asyncio.get_running_loop().run_in_executor(self._pool, close_connection)
        self._pool.shutdown(wait=True)


class _SqliteThread(_ConnectionThread[sqlite3.Connection]):
    """A dedicated thread owning one `sqlite3` connection to the SQLite file: each `run` is one
    thread hop for a whole transaction, instead of several per statement.

    ``writer``: ``BEGIN IMMEDIATE`` (take the write lock up front instead of failing to
    upgrade) and the WAL fsync policy of ``durability``; else a reader (WAL readers never wait
    for the writer)."""

    def __init__(self, path: str, *, writer: bool, durability: str = DURABILITY_FULL) -> None:
        super().__init__("tidings-queue-writer" if writer else "tidings-queue-reader")
        self._path = path
        self._begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
        self._synchronous = "FULL" if durability == DURABILITY_FULL else "NORMAL"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        apply_sqlite_pragmas(conn, None)  # the settings of every connection to the file
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one transaction on the thread (committed if it returns, else rolled
        back)."""

        def in_thread() -> T:
            if self.conn is None:
                self.conn = self._connect()
            conn = self.conn
            conn.execute(self._begin)
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return await asyncio.get_running_loop().run_in_executor(self._pool, in_thread)


class _PostgresThread(_ConnectionThread[Any]):
    """A dedicated thread owning one psycopg connection, for the PostgreSQL writer: one thread
    hop per batch and no SQLAlchemy on the hot path.

    The connection's own ``synchronous_commit`` carries ``durability`` and its ``search_path``
    the `Database` schema, both set once per connection with ``SET`` (a session setting, not
    a startup option, so a session-mode pooler passes it; only this connection's transactions
    are relaxed). TCP keepalives find a dead peer within about a minute. A connection that
    broke (the server restarted, a failover, an idle connection dropped) is replaced; a batch
    that found it broken before its ``COMMIT`` was sent is run again once on the new one, so a
    restart fails no sender (after ``COMMIT`` was sent the outcome is unknown: the batch fails
    with `StorageUnavailableError`, as any failed batch does)."""

    def __init__(self, url: str, schema: str, *, durability: str = DURABILITY_FULL) -> None:
        super().__init__("tidings-queue-writer")
        self._conninfo = (
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        setting = "on" if durability == DURABILITY_FULL else "off"
        self._setup = [f"SET synchronous_commit = {setting}"]
        if schema:  # a plain identifier (`check_schema`)
            self._setup.append(f'SET search_path = "{schema}"')

    def _connection(self) -> Any:
        if self.conn is None or self.conn.closed or self.conn.broken:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=10,
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
            for statement in self._setup:
                conn.execute(statement)
            self.conn = conn
        return self.conn

    async def run(self, fn: Callable[[Any], T]) -> T:
        """``fn`` in one transaction on the thread (committed if it returns, else rolled
        back)."""

        def in_thread() -> T:
            for attempt in (1, 2):
                conn = self._connection()
                statements_done = False
                try:
                    with conn.transaction():
                        result = fn(conn)
                        statements_done = True
                    return result
                except psycopg.OperationalError:
                    if attempt == 1 and not statements_done and conn.broken:
                        continue  # nothing was committed: once more on a new connection
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

        return await asyncio.get_running_loop().run_in_executor(self._pool, in_thread)


class _CoreThread:
    """A dedicated thread owning one SQLAlchemy (sync driver) connection to the SQLite file,
    for the reads that take a Core `Connection` (`QueueWriter.read`): one hop per read."""

    def __init__(self, path: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="tidings-queue-reader"
        )
        self.engine = create_engine(f"sqlite:///{path}", pool_size=1, max_overflow=0)

        def on_connect(dbapi_connection: Any, record: Any) -> None:
            apply_sqlite_pragmas(dbapi_connection, record)  # isolation_level None: ours

        def on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        event.listen(self.engine, "connect", on_connect)
        event.listen(self.engine, "begin", on_begin)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        def in_thread() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(self._pool, in_thread)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.engine.dispose)
        self._pool.shutdown(wait=True)


class QueueWriter:
    """The group-commit writer of one `Database` (see the module docstring).

    `enqueue` and `acknowledge` are safe to call from any number of tasks of one event loop;
    the writer task starts on demand and ends when the queue is empty."""

    def __init__(self, db: Database, *, durability: str = DURABILITY_FULL) -> None:
        """Raises:
        ValueError: ``durability`` is not one of `DURABILITY_MODES`."""
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}")
        self.db = db
        self.durability = durability
        self.before_commit: BeforeCommit | None = None
        self.on_committed: Committed | None = None
        """Set (SQLite, one node: the writer sees every insert) to hand committed envelopes
        to their connected devices without a read; see `tidings.server.hub.LocalHub`."""
        self._sends: list[_Send] = []
        self._acks: list[_Ack] = []
        self._task: asyncio.Task[None] | None = None
        self._acking: dict[tuple[int, int, bytes], int] = {}
        self._acking_per_queue: dict[QueueKey, int] = {}
        url = make_url(db.url)
        path = url.database or ""
        self._sqlite_path = (
            path
            if db.is_sqlite and path not in ("", ":memory:") and not path.startswith("file:")
            else ""
        )
        self._writer: _SqliteThread | None = None
        self._pg_writer: _PostgresThread | None = None
        self._reader: _CoreThread | None = None
        # One node owns an SQLite file: queue sizes can live in memory. Elsewhere: counted.
        self._sizes: dict[QueueKey, int] | None = {} if db.is_sqlite else None
        self._sizes_generation = 0
        self.batches = 0
        """Committed batches (for tests and the bench's logs)."""

    # -- the callers' side -------------------------------------------------------------------

    async def enqueue(
        self,
        account_id: int,
        envelopes: Sequence[OutgoingEnvelope],
        *,
        now_ms: int,
        expires_at_ms: int,
        queue_limit: int,
    ) -> None:
        """Store every envelope durably, all or nothing; returns once its batch committed.

        Raises:
            QueueFullError: a recipient device already holds ``queue_limit`` envelopes.
            StorageUnavailableError: the batch could not be committed (nothing of it stored).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sends.append(
            _Send(account_id, tuple(envelopes), now_ms, expires_at_ms, queue_limit, future)
        )
        self._wake()
        await future

    async def acknowledge(self, account_id: int, device_id: int, message_id: bytes) -> bool:
        """Delete one envelope of this device; idempotent. Returns whether it was there.

        Raises:
            StorageUnavailableError: the batch could not be committed (nothing deleted).
        """
        return await self.acknowledge_soon(account_id, device_id, message_id)

    def acknowledge_soon(
        self, account_id: int, device_id: int, message_id: bytes
    ) -> asyncio.Future[bool]:
        """`acknowledge` without a coroutine (a WebSocket queues its acks without a task per
        ack): the future gets whether the envelope was there, or `StorageUnavailableError`,
        once its batch committed (or failed)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._acks.append(_Ack(account_id, device_id, message_id, future))
        row, queue = (account_id, device_id, message_id), (account_id, device_id)
        acking, per_queue = self._acking, self._acking_per_queue
        acking[row] = acking.get(row, 0) + 1
        per_queue[queue] = per_queue.get(queue, 0) + 1

        def settled(_: asyncio.Future[bool]) -> None:
            _decrement(acking, row)
            _decrement(per_queue, queue)

        future.add_done_callback(settled)
        self._wake()
        return future

    def acks_waiting(self, account_id: int, device_id: int) -> int:
        """How many acks of this device's envelopes wait for their batch."""
        return self._acking_per_queue.get((account_id, device_id), 0)

    def is_being_acknowledged(self, account_id: int, device_id: int, message_id: bytes) -> bool:
        """Whether an ack of this envelope waits for its batch: readers of this node hide it
        (read-your-acks); if the batch fails, it shows again."""
        return (account_id, device_id, message_id) in self._acking

    def forget_counts(self) -> None:
        """Forget the in-memory queue sizes: call after deleting envelopes outside the writer
        (purge, device or account deletion). A batch in flight does not write its sizes back."""
        if self._sizes is not None:
            self._sizes.clear()
            self._sizes_generation += 1

    async def close(self) -> None:
        """Wait for the batch in flight, then release the writer's thread and connection."""
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        threads = (self._writer, self._reader, self._pg_writer)
        self._writer = self._reader = self._pg_writer = None
        for thread in threads:
            if thread is not None:
                await thread.close()

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run the read ``fn`` on a connection of its own: on an SQLite file, the dedicated
        reader thread (one hop per read); else the `Database`'s async engine."""
        if self._sqlite_path:
            if self._reader is None:
                self._reader = _CoreThread(self._sqlite_path)
            return await self._reader.run(fn)
        async with self.db.read() as conn:
            return await conn.run_sync(fn)

    # -- the writer --------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._sends or self._acks:
            # One turn of the loop first: every sender already runnable joins this batch.
            await asyncio.sleep(0)
            acks, self._acks = self._acks[:MAX_BATCH], self._acks[MAX_BATCH:]
            room = MAX_BATCH - len(acks)
            sends, self._sends = self._sends[:room], self._sends[room:]
            await self._run(sends, acks)

    async def _run(self, sends: list[_Send], acks: list[_Ack]) -> None:
        generation = self._sizes_generation
        try:
            result = await self._commit(sends, acks)
        except (IntegrityError, sqlite3.IntegrityError, psycopg.IntegrityError):
            # One bad item (say, a device removed meanwhile) must not sink the others: each
            # alone, in a transaction of its own.
            if len(sends) + len(acks) > 1:
                for s in sends:
                    await self._run([s], [])
                for a in acks:
                    await self._run([], [a])
                return
            self._fail(sends, acks, "the envelope could not be stored")
            return
        except Exception as exc:  # every waiting caller gets an answer, and the writer goes on
            log.warning("queue batch failed", extra={"error": type(exc).__name__})
            self._fail(sends, acks, "storage is unavailable; try again")
            return
        self.batches += 1
        if self._sizes is not None and generation == self._sizes_generation:
            self._sizes.update(result.sizes)
        if result.stored and self.on_committed is not None:
            try:
                self.on_committed(result.stored)
            except Exception as exc:  # a lost push only delays delivery to the next read
                log.warning(
                    "committed-envelope listener failed", extra={"error": type(exc).__name__}
                )
        for s, error in zip(sends, result.send_errors, strict=True):
            if not s.future.done():
                if error is None:
                    s.future.set_result(None)
                else:
                    s.future.set_exception(error)
        for a, acked in zip(acks, result.acked, strict=True):
            if not a.future.done():
                a.future.set_result(acked)

    def _fail(self, sends: Sequence[_Send], acks: Sequence[_Ack], why: str) -> None:
        futures: list[asyncio.Future[Any]] = [s.future for s in sends]
        futures.extend(a.future for a in acks)
        for f in futures:
            if not f.done():
                f.set_exception(StorageUnavailableError(why))

    async def _commit(self, sends: list[_Send], acks: list[_Ack]) -> _BatchResult:
        sizes, hook = self._sizes, self.before_commit
        if self._sqlite_path:
            if self._writer is None:
                self._writer = _SqliteThread(
                    self._sqlite_path, writer=True, durability=self.durability
                )
            writer = self._writer
            want = self.on_committed is not None
            async with self.db.write_turn():
                return await writer.run(
                    lambda conn: _commit_batch(
                        SqliteStatements(conn), sends, acks, sizes, hook, want
                    )
                )
        want = self.on_committed is not None
        if not self.db.is_sqlite:
            if self._pg_writer is None:
                self._pg_writer = _PostgresThread(
                    self.db.url, self.db.schema, durability=self.durability
                )
            return await self._pg_writer.run(
                lambda conn: _commit_batch(PostgresStatements(conn), sends, acks, sizes, hook, want)
            )
        async with self.db.write() as conn:  # an in-memory SQLite: the Database's own
            return await conn.run_sync(
                lambda sync: _commit_batch(CoreStatements(sync), sends, acks, sizes, hook, want)
            )
