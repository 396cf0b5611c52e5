"""Both engines on one database: the messaging server's async engine (`Database`) and the
safety repositories' synchronous one (`SafetyDatabase`) write to the same SQLite file (and
PostgreSQL schema) at the same time, from several asyncio tasks and several threads. No
writer may fail with "database is locked", and every write is there afterwards."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.services import PG_URL, pg_admin
from tidings.safety.case_model import Enforcement, EnforcementKind, NoteRecord
from tidings.safety.sql import (
    SafetyDatabase,
    SqlCaseRepository,
    SqlEnforcementRepository,
    SqlStaffRepository,
)
from tidings.safety.staff import ThrottleRecord
from tidings.storage.database import Database, sqlite_url
from tidings.storage.messaging import MessagingStore, NewDevice, OutgoingEnvelope
from tidings.storage.safety_schema import account_enforcements, safety_login_throttle, safety_notes
from tidings.storage.schema import accounts, messages

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000_000
TASKS = 4  # asyncio tasks on the messaging store
THREADS = 4  # threads on the safety repositories
ROUNDS = 15  # writes per task / thread


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
async def both(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Database, SafetyDatabase]]:
    """The two engines on one fresh database, migrated (by the async side)."""
    if request.param == "sqlite":
        url, schema = sqlite_url(tmp_path), ""
    else:
        schema = f"{request.getfixturevalue('pg_schema')}_{os.urandom(3).hex()}"
        url = PG_URL
    db = Database(url, schema=schema)
    await db.migrate()
    safety_db = SafetyDatabase(url, schema=schema)
    try:
        yield db, safety_db
    finally:
        safety_db.dispose()
        await db.close()
        if schema:
            pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _device() -> NewDevice:
    return NewDevice(
        name="d",
        registration_id=7,
        identity_key=os.urandom(65),
        credential_hash=os.urandom(32),
        signed_prekey=b"signed",
        last_resort_kem_prekey=b"last-resort",
        one_time_prekeys=[(1, b"otk")],
        kem_prekeys=[(100, b"kem")],
    )


async def _messaging_writer(store: MessagingStore, task: int) -> None:
    """Each round: a new account (insert), then an envelope for it (count, then insert: a
    transaction that reads before it writes)."""
    for i in range(ROUNDS):
        account_id = await store.create_account(f"m{task}x{i}", _device(), NOW)
        envelope = OutgoingEnvelope(device_id=1, message_id=os.urandom(16), envelope=b"e")
        await store.enqueue(
            account_id, [envelope], now_ms=NOW, expires_at_ms=NOW + 1, queue_limit=10
        )


def _safety_writer(safety_db: SafetyDatabase, thread: int) -> None:
    """Each round: a note, an enforcement and a throttle record (update, then insert when
    the update found nothing: a transaction that reads before it writes)."""
    cases = SqlCaseRepository(safety_db)
    enforcements = SqlEnforcementRepository(safety_db)
    staff = SqlStaffRepository(safety_db, os.urandom(32))
    for i in range(ROUNDS):
        tag = f"t{thread}x{i}"
        cases.add_note(NoteRecord(f"note_{tag}", "case_1", "staff_1", NOW + i, "text"))
        enforcements.add_enforcement(
            Enforcement(f"enf_{tag}", f"user_{tag}", EnforcementKind.WARN, None, "dec_1", "c", NOW)
        )
        staff.put_throttle(ThrottleRecord(f"key_{tag}", 1, NOW, 0))


async def test_concurrent_writers_through_both_engines_all_land(
    both: tuple[Database, SafetyDatabase],
) -> None:
    db, safety_db = both
    store = MessagingStore(db)
    await asyncio.gather(
        *(_messaging_writer(store, t) for t in range(TASKS)),
        *(asyncio.to_thread(_safety_writer, safety_db, t) for t in range(THREADS)),
    )
    async with db.read() as conn:
        for table in (accounts, messages):
            count = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            assert count == TASKS * ROUNDS, table.name
    with safety_db.read() as conn:
        for table in (safety_notes, account_enforcements, safety_login_throttle):
            count = conn.execute(select(func.count()).select_from(table)).scalar_one()
            assert count == THREADS * ROUNDS, table.name
