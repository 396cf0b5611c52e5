"""The group-commit writer (`tidings.storage.relay`) on both backends: concurrent senders,
acks racing sends, a failure between batch and commit, queue limits from in-memory sizes,
one bad item in a batch, and the HTTP answer when a batch cannot be committed."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import count_rows
from tests.server.test_storage import NOW, device
from tests.support.devices import DeviceKit, outgoing
from tests.support.services import PG_URL
from tidings.errors import QueueFullError, StorageUnavailableError
from tidings.server.config import ServerConfig
from tidings.storage.database import Database, sqlite_url
from tidings.storage.messaging import MessagingStore, OutgoingEnvelope

pytestmark = pytest.mark.anyio

_ids = itertools.count(1)


def env(device_id: int = 1) -> OutgoingEnvelope:
    n = next(_ids)
    return OutgoingEnvelope(device_id, n.to_bytes(16, "big"), b"envelope %d" % n)


async def send(
    store: MessagingStore, account: int, *envelopes: OutgoingEnvelope, limit: int = 10_000
) -> None:
    await store.enqueue(
        account, envelopes, now_ms=NOW, expires_at_ms=NOW + 60_000, queue_limit=limit
    )


async def queued_ids(store: MessagingStore, account: int, device_id: int) -> list[bytes]:
    items = await store.pending(account, device_id, now_ms=NOW, limit=100_000)
    return [q.message_id for q in items]


async def test_concurrent_senders_are_stored_exactly_once_in_few_batches(
    store: MessagingStore,
) -> None:
    account = await store.create_account("bob", device(), NOW)
    await store.add_device(account, device(), NOW)
    sends = [(env(1), env(2)) for _ in range(300)]
    batches_before = store.queue.batches
    await asyncio.gather(*(send(store, account, *pair) for pair in sends))
    for device_id in (1, 2):
        stored = await queued_ids(store, account, device_id)
        expected = [pair[device_id - 1].message_id for pair in sends]
        assert sorted(stored) == sorted(expected) and len(set(stored)) == 300
    # Grouped: 300 concurrent sends did not take 300 transactions.
    assert store.queue.batches - batches_before < 30


async def test_acks_racing_sends(store: MessagingStore) -> None:
    account = await store.create_account("bob", device(), NOW)
    acked: list[bytes] = []
    results: list[bool] = []

    async def sender() -> None:
        for _ in range(20):
            await asyncio.gather(*(send(store, account, env()) for _ in range(10)))

    async def receiver() -> None:
        for _ in range(40):
            ids = await queued_ids(store, account, 1)
            fresh = [i for i in ids if i not in acked]
            # Every envelope acked twice at once: one deletes it, the other finds it gone.
            outcome = await asyncio.gather(
                *(store.acknowledge(account, 1, i) for i in fresh for _ in range(2))
            )
            acked.extend(fresh)
            results.extend(outcome)
            await asyncio.sleep(0)

    await asyncio.gather(sender(), receiver())
    remaining = await queued_ids(store, account, 1)
    assert len(remaining) + len(acked) == 200 and not set(remaining) & set(acked)
    assert results.count(True) == len(acked) and results.count(False) == len(acked)


async def test_failure_before_commit_fails_every_waiter_and_stores_nothing(
    store: MessagingStore,
) -> None:
    account = await store.create_account("bob", device(), NOW)
    await send(store, account, env())
    [kept] = await queued_ids(store, account, 1)

    def crash() -> None:
        raise RuntimeError("power cut between batch and commit")

    store.queue.before_commit = crash
    outcomes = await asyncio.gather(
        *(send(store, account, env()) for _ in range(20)),
        store.acknowledge(account, 1, kept),
        return_exceptions=True,
    )
    assert all(isinstance(o, StorageUnavailableError) for o in outcomes)
    assert await queued_ids(store, account, 1) == [kept]  # nothing half-written, ack undone
    # The writer recovers for the next batch, and its queue sizes are still right.
    store.queue.before_commit = None
    await asyncio.gather(*(send(store, account, env(), limit=3) for _ in range(2)))
    with pytest.raises(QueueFullError):
        await send(store, account, env(), limit=3)
    assert await store.acknowledge(account, 1, kept)
    assert len(await queued_ids(store, account, 1)) == 2


async def test_queue_limit_holds_within_and_across_batches(store: MessagingStore) -> None:
    account = await store.create_account("bob", device(), NOW)
    outcomes = await asyncio.gather(
        *(send(store, account, env(), limit=5) for _ in range(12)), return_exceptions=True
    )
    assert outcomes.count(None) == 5
    assert all(isinstance(o, QueueFullError) for o in outcomes if o is not None)
    ids = await queued_ids(store, account, 1)
    assert len(ids) == 5
    assert await store.acknowledge(account, 1, ids[0])
    await send(store, account, env(), limit=5)  # the ack made room
    with pytest.raises(QueueFullError):
        await send(store, account, env(), limit=5)
    # Deleted outside the writer (expiry): the sizes are re-read, not trusted.
    gone, _ = await store.purge_expired(NOW + 120_000)
    assert gone == 5
    await asyncio.gather(*(send(store, account, env(), limit=5) for _ in range(5)))


async def test_one_bad_send_does_not_sink_its_batch(store: MessagingStore) -> None:
    account = await store.create_account("bob", device(), NOW)
    good = [env() for _ in range(10)]
    outcomes = await asyncio.gather(
        *(send(store, account, e) for e in good),
        send(store, account, env(device_id=9)),  # no such device: the foreign key refuses it
        return_exceptions=True,
    )
    assert outcomes[:10] == [None] * 10
    assert isinstance(outcomes[10], StorageUnavailableError)
    assert sorted(await queued_ids(store, account, 1)) == sorted(e.message_id for e in good)


async def test_sqlite_writer_fsyncs_every_commit(tmp_path: Path) -> None:
    """The default durability on SQLite: the writer's own connection runs synchronous=FULL
    (2: the WAL is fsynced at every commit); ``relaxed`` runs NORMAL (1)."""
    for durability, expected in (("full", 2), ("relaxed", 1)):
        db = Database(sqlite_url(tmp_path / durability))
        (tmp_path / durability).mkdir()
        await db.migrate()
        store = MessagingStore(db, durability=durability)
        try:
            account = await store.create_account("bob", device(), NOW)
            await send(store, account, env())
            writer = store.queue._writer
            assert writer is not None
            pragma = await writer.run(lambda conn: conn.execute("PRAGMA synchronous").fetchone())
            assert pragma == (expected,)
        finally:
            await store.close()
            await db.close()
    with pytest.raises(ValueError):
        MessagingStore(db, durability="sometimes")


def test_http_send_answers_503_when_its_batch_cannot_commit(
    client: TestClient, register: Callable[..., DeviceKit], config: ServerConfig
) -> None:
    alice, bob = register("alice"), register("bob")

    def crash() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    store: MessagingStore = client.app.state.tidings.store  # type: ignore[attr-defined]
    store.queue.before_commit = crash
    body = {"messages": [outgoing(bob)]}
    response = client.put(f"/v1/messages/{bob.username}", json=body, headers=alice.auth)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert count_rows(config, "messages") == 0
    store.queue.before_commit = None
    response = client.put(f"/v1/messages/{bob.username}", json=body, headers=alice.auth)
    assert response.status_code == 200, response.text
    assert count_rows(config, "messages") == 1


async def test_raw_sqlite_and_core_statements_agree(tmp_path: Path) -> None:
    """The embedded writer's `sqlite3` statements do what the Core ones (PostgreSQL's) do, on
    the same file: positions in row order across several multi-row pages, deletes by (account,
    device, message id) only — another device's id deletes nothing — and queue counts."""
    from sqlalchemy import create_engine

    from tidings.storage.relay import _SQLITE_PAGE, CoreStatements, SqliteStatements

    db = Database(sqlite_url(tmp_path))
    await db.migrate()
    store = MessagingStore(db)
    try:
        account = await store.create_account("bob", device(), NOW)
    finally:
        await store.close()
        await db.close()
    path = tmp_path / "tidings.db"
    raw = sqlite3.connect(path, isolation_level=None)
    core = create_engine(f"sqlite:///{path}").connect()
    try:
        count = _SQLITE_PAGE * 2 + 7
        results = []
        for n, statements in enumerate((SqliteStatements(raw), CoreStatements(core))):
            rows = [
                (account, 1, bytes([n]) + i.to_bytes(15, "big"), b"e%d" % i, NOW, NOW + 1)
                for i in range(count)
            ]
            seqs = statements.insert(rows, returning=True)
            assert seqs == sorted(seqs) and len(set(seqs)) == count
            acks = [(account, 1, rows[0][2]), (account, 2, rows[1][2]), (account, 1, b"x" * 16)]
            results.append(
                (
                    statements.delete_acked(acks),
                    list(statements.count_queues([(account, 1), (account, 2)])),
                )
            )
        raw_result, core_result = results
        assert raw_result[0] == {(account, 1, bytes([0]) + bytes(15))}
        assert core_result[0] == {(account, 1, bytes([1]) + bytes(15))}
        assert raw_result[1] == [(account, 1, count - 1)]
        assert core_result[1] == [(account, 1, 2 * count - 2)]
    finally:
        raw.close()
        core.close()


@pytest.fixture
async def pg_db(pg_schema: str) -> AsyncIterator[Database]:
    """A migrated PostgreSQL schema of its own (dropped afterwards)."""
    db = Database(PG_URL, schema=f"{pg_schema}_{os.urandom(3).hex()}")
    await db.migrate()
    try:
        yield db
    finally:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{db.schema}" CASCADE')
        await db.close()


async def test_postgres_writer_commits_with_its_own_durability(pg_db: Database) -> None:
    """The PostgreSQL writer's own connection carries the durability (``synchronous_commit``
    on, or off when relaxed) and the schema."""
    for durability, expected in (("full", "on"), ("relaxed", "off")):
        store = MessagingStore(pg_db, durability=durability)
        try:
            account = await store.create_account(f"bob-{durability}", device(), NOW)
            await send(store, account, env())
            writer = store.queue._pg_writer
            assert writer is not None
            setting = await writer.run(
                lambda conn: conn.execute("SHOW synchronous_commit").fetchone()
            )
            assert setting == (expected,)
            path = await writer.run(lambda conn: conn.execute("SHOW search_path").fetchone())
            assert path == (f'"{pg_db.schema}"',) or path == (pg_db.schema,)
        finally:
            await store.close()


async def test_postgres_writer_survives_a_lost_connection(pg_db: Database) -> None:
    """The server ends the writer's session (a restart, a failover): the next batch finds the
    connection broken before its COMMIT, reconnects and commits; no sender is failed, and the
    new connection carries the same settings."""
    store = MessagingStore(pg_db, durability="relaxed")
    try:
        account = await store.create_account("bob", device(), NOW)
        await send(store, account, env())
        writer = store.queue._pg_writer
        assert writer is not None
        pid = await writer.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone())
        async with pg_db.write() as conn:
            await conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid[0]})")
        kept = [env(), env()]
        await asyncio.gather(*(send(store, account, e) for e in kept))
        stored = await queued_ids(store, account, 1)
        assert all(e.message_id in stored for e in kept)
        after = await writer.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone())
        assert after != pid
        setting = await writer.run(lambda conn: conn.execute("SHOW synchronous_commit").fetchone())
        assert setting == ("off",)
    finally:
        await store.close()


async def test_postgres_and_core_statements_agree(pg_db: Database) -> None:
    """`PostgresStatements` (psycopg, arrays) do what the Core ones do on the same schema."""
    from sqlalchemy import create_engine

    from tidings.storage.engine import sync_url
    from tidings.storage.relay import CoreStatements, PostgresStatements, _PostgresThread

    store = MessagingStore(pg_db)
    try:
        account = await store.create_account("bob", device(), NOW)
    finally:
        await store.close()
    thread = _PostgresThread(pg_db.url, pg_db.schema)
    core = create_engine(
        sync_url(pg_db.url), connect_args={"options": f"-csearch_path={pg_db.schema}"}
    )
    try:
        results = []
        for n in range(2):
            rows = [
                (account, 1, bytes([n]) + i.to_bytes(15, "big"), b"e%d" % i, NOW, NOW + 1)
                for i in range(700)
            ]
            acks = [(account, 1, rows[0][2]), (account, 2, rows[1][2]), (account, 1, b"x" * 16)]

            def batch(statements: Any) -> tuple[list[int], set[Any], list[Any]]:
                seqs = statements.insert(rows, returning=True)
                deleted = statements.delete_acked(acks)
                return seqs, deleted, list(statements.count_queues([(account, 1), (account, 2)]))

            if n == 0:
                result = await thread.run(lambda conn: batch(PostgresStatements(conn)))
            else:
                with core.begin() as conn:
                    result = batch(CoreStatements(conn))
            results.append(result)
        (pg_seqs, pg_deleted, pg_counts), (core_seqs, core_deleted, core_counts) = results
        assert pg_seqs == sorted(pg_seqs) and len(set(pg_seqs)) == 700
        assert core_seqs == sorted(core_seqs) and min(core_seqs) > max(pg_seqs)
        assert pg_deleted == {(account, 1, bytes([0]) + bytes(15))}
        assert core_deleted == {(account, 1, bytes([1]) + bytes(15))}
        assert pg_counts == [(account, 1, 699)] and core_counts == [(account, 1, 1398)]
    finally:
        await thread.close()
        core.dispose()
