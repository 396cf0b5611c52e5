"""The group-commit writer's statements reach their rows through an index, however much the
other queues hold: an ack batch and a queue count cost the same with 1,000 or 20,000 messages
queued for another device (SQLite, counted in virtual-machine steps), and PostgreSQL's generic
plans — what a statement prepared on a new, empty table keeps — use the right index."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.server.test_relay_batching import pg_db  # noqa: F401  (fixture)
from tests.server.test_storage import NOW, device
from tests.support.services import PG_URL
from tidings.storage import relay
from tidings.storage.database import Database, sqlite_url
from tidings.storage.messaging import MessagingStore

pytestmark = pytest.mark.anyio


def vm_steps(conn: sqlite3.Connection, work: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions (in hundreds) that ``work`` runs: no clock."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        work()
    finally:
        conn.set_progress_handler(None, 100)
    return steps[0]


def rows(account: int, device_id: int, tag: int, n: int) -> list[relay.Row]:
    return [
        (account, device_id, bytes([tag]) + i.to_bytes(15, "big"), b"e", NOW, NOW + 1)
        for i in range(n)
    ]


async def test_sqlite_acks_and_counts_do_not_read_other_queues(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path))
    await db.migrate()
    store = MessagingStore(db)
    try:
        account = await store.create_account("bob", device(), NOW)
        await store.add_device(account, device(), NOW)
    finally:
        await store.close()
        await db.close()
    conn = sqlite3.connect(tmp_path / "tidings.db", isolation_level=None)
    statements = relay.SqliteStatements(conn)
    try:
        costs = []
        for tag, backlog in ((1, 1_000), (2, 20_000)):
            statements.insert(rows(account, 2, tag, backlog), returning=False)
            mine = rows(account, 1, 100 + tag, 60)
            statements.insert(mine, returning=False)
            acks = [(account, 1, r[2]) for r in mine[:50]]
            deleted: set[relay.AckRow] = set()
            delete = vm_steps(conn, lambda: deleted.update(statements.delete_acked(acks)))
            assert deleted == set(acks)
            counted: list[tuple[int, int, int]] = []
            count = vm_steps(
                conn, lambda: counted.extend(statements.count_queues([(account, 1)]))
            )
            assert counted == [(account, 1, 10 * tag)]  # 10 left of each round's 60
            costs.append((delete, count))
        (delete_small, count_small), (delete_large, count_large) = costs
        # A scan of the table would cost 21 times as much with the larger backlog.
        assert delete_large <= delete_small * 1.5 + 2
        assert count_large <= count_small * 1.5 + 2
    finally:
        conn.close()


def _numbered(sql: str) -> str:
    """psycopg's %s placeholders as the server's $n."""
    parts = sql.split("%s")
    return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))


async def test_postgres_generic_plans_use_the_fitting_index(pg_db: Database) -> None:  # noqa: F811
    conn = psycopg.connect(PG_URL, autocommit=True)
    try:
        conn.execute(f'SET search_path TO "{pg_db.schema}"')
        conn.execute("SET plan_cache_mode = force_generic_plan")
        plans = {}
        for name, sql in (("ack", relay._PG_DELETE), ("count", relay._PG_COUNT)):
            conn.execute(f"PREPARE {name} AS {_numbered(sql)}")
        plans["ack"] = conn.execute(
            "EXPLAIN EXECUTE ack('{}'::bytea[], '{}'::bigint[], '{}'::integer[], '{}'::bytea[])"
        ).fetchall()
        plans["count"] = conn.execute(
            "EXPLAIN EXECUTE count('{}'::bigint[], '{}'::integer[])"
        ).fetchall()
    finally:
        conn.close()
    ack_plan = "\n".join(line for (line,) in plans["ack"])
    count_plan = "\n".join(line for (line,) in plans["count"])
    assert "messages_message_id_key" in ack_plan, ack_plan
    assert "Seq Scan on messages" not in ack_plan, ack_plan
    assert "ix_messages_queue" in count_plan, count_plan
    assert "Seq Scan on messages" not in count_plan, count_plan
