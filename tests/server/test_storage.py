"""The messaging store on both backends (SQLite file in WAL mode, PostgreSQL in a schema of
its own): migrations, atomic one-time key claims under concurrency, queue order and limits,
acknowledgement, expiry, cascading deletes."""

from __future__ import annotations

import asyncio
import os

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from tidings.errors import (
    LastDeviceError,
    ProvisioningCodeError,
    QueueFullError,
    UnknownDeviceError,
    UsernameTakenError,
)
from tidings.storage.database import MIGRATIONS
from tidings.storage.messaging import MessagingStore, NewDevice, OutgoingEnvelope
from tidings.storage.schema import metadata

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000_000


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def device(one_time: int = 0, kem: int = 0, name: str = "d") -> NewDevice:
    return NewDevice(
        name=name,
        registration_id=7,
        identity_key=os.urandom(65),
        credential_hash=os.urandom(32),
        signed_prekey=b"signed",
        last_resort_kem_prekey=b"last-resort",
        one_time_prekeys=[(i, b"otk%d" % i) for i in range(1, one_time + 1)],
        kem_prekeys=[(i, b"kem%d" % i) for i in range(100, 100 + kem)],
    )


async def test_migrations_match_the_schema(store: MessagingStore) -> None:
    async with store.db.read() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    # At the newest revision, whatever migrations other parts of the project add.
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert set(metadata.tables) <= tables and version == head
    if store.db.is_sqlite:
        async with store.db.read() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            secure = (await conn.exec_driver_sql("PRAGMA secure_delete")).scalar()
        assert (mode, secure) == ("wal", 1)
    if not store.db.is_sqlite:
        async with store.db.read() as conn:
            public = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_tables"
                        " WHERE schemaname = :s AND tablename = 'accounts'"
                    ),
                    {"s": store.db.schema},
                )
            ).scalar()
        assert public == 1  # the tables live in the run's own schema


async def test_concurrent_claims_never_share_a_key(store: MessagingStore) -> None:
    account = await store.create_account("bob", device(one_time=20, kem=20), NOW)

    async def claim() -> tuple[bytes | None, bytes]:
        [bundle] = await store.claim_bundles(account, None)
        return bundle.one_time_prekey, bundle.kem_prekey

    results = await asyncio.gather(*(claim() for _ in range(40)))
    one_time = [r[0] for r in results if r[0] is not None]
    kem = [r[1] for r in results if r[1] != b"last-resort"]
    assert len(one_time) == len(set(one_time)) == 20
    assert len(kem) == len(set(kem)) == 20
    assert sum(r[1] == b"last-resort" for r in results) == 20
    assert await store.prekey_counts(account, 1) == (0, 0)


async def test_concurrent_claims_across_devices(store: MessagingStore) -> None:
    account = await store.create_account("bob", device(one_time=5, kem=5), NOW)
    await store.add_device(account, device(one_time=5, kem=5), NOW)
    results = await asyncio.gather(*(store.claim_bundles(account, None) for _ in range(8)))
    per_device: dict[int, list[bytes]] = {1: [], 2: []}
    for bundles in results:
        assert [b.device_id for b in bundles] == [1, 2]
        for b in bundles:
            if b.one_time_prekey is not None:
                per_device[b.device_id].append(b.one_time_prekey)
    for keys in per_device.values():
        assert len(keys) == len(set(keys)) == 5


async def test_queue_order_ack_limit_and_expiry(store: MessagingStore) -> None:
    account = await store.create_account("bob", device(), NOW)

    def env(i: int) -> OutgoingEnvelope:
        return OutgoingEnvelope(1, i.to_bytes(16, "big"), b"envelope %d" % i)

    # Concurrent senders: every envelope lands exactly once; order is commit order.
    await asyncio.gather(
        *(
            store.enqueue(account, [env(i)], now_ms=NOW, expires_at_ms=NOW + 1000, queue_limit=50)
            for i in range(20)
        )
    )
    queued = await store.pending(account, 1, now_ms=NOW)
    assert sorted(q.message_id for q in queued) == [env(i).message_id for i in range(20)]
    assert [q.seq for q in queued] == sorted(q.seq for q in queued)
    page = await store.pending(account, 1, now_ms=NOW, after_seq=queued[4].seq, limit=3)
    assert page == queued[5:8]
    with pytest.raises(QueueFullError):
        await store.enqueue(account, [env(99)], now_ms=NOW, expires_at_ms=NOW + 1, queue_limit=20)
    assert len(await store.pending(account, 1, now_ms=NOW)) == 20  # nothing added
    assert await store.acknowledge(account, 1, queued[0].message_id)
    assert not await store.acknowledge(account, 1, queued[0].message_id)  # idempotent
    assert not await store.acknowledge(account, 2, queued[1].message_id)  # not that device's
    assert await store.pending(account, 1, now_ms=NOW + 1001) == []  # expired: hidden
    assert (await store.purge_expired(NOW + 1001))[0] == 19


async def test_accounts_devices_and_provisioning(store: MessagingStore) -> None:
    account = await store.create_account("alice", device(one_time=2), NOW)
    with pytest.raises(UsernameTakenError):
        await store.create_account("alice", device(), NOW)
    await store.add_provisioning_code(account, b"h" * 32, NOW + 10)
    with pytest.raises(ProvisioningCodeError):
        await store.link_device("alice", b"h" * 32, device(), NOW + 11)  # expired
    await store.add_provisioning_code(account, b"g" * 32, NOW + 10)
    # Two concurrent links with one code: exactly one wins.
    outcomes = await asyncio.gather(
        store.link_device("alice", b"g" * 32, device(), NOW),
        store.link_device("alice", b"g" * 32, device(), NOW),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["ProvisioningCodeError", "tuple"]
    assert [d.device_id for d in await store.devices(account)] == [1, 2]
    await store.remove_device(account, 2)
    assert (await store.add_device(account, device(), NOW)) == 3  # ids are never reused
    with pytest.raises(UnknownDeviceError):
        await store.remove_device(account, 2)
    await store.remove_device(account, 3)
    with pytest.raises(LastDeviceError):
        await store.remove_device(account, 1)
    await store.enqueue(
        account,
        [OutgoingEnvelope(1, b"m" * 16, b"e")],
        now_ms=NOW,
        expires_at_ms=NOW + 1,
        queue_limit=5,
    )
    await store.add_attachment("a" * 43, account, 3, NOW, NOW + 5)
    assert await store.delete_account(account) == ["a" * 43]
    async with store.db.read() as conn:
        for table in ("accounts", "devices", "one_time_prekeys", "messages", "attachments"):
            assert (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() == 0
