"""Queue positions are never reused, so a WebSocket that resumes "after the last position it
sent" cannot skip an envelope (SQLite reuses a deleted top rowid without AUTOINCREMENT)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tidings.storage.database import Database, sqlite_url
from tidings.storage.messaging import MessagingStore, NewDevice, OutgoingEnvelope


def _device() -> NewDevice:
    return NewDevice(
        name="phone",
        registration_id=1,
        identity_key=bytes(65),
        credential_hash=bytes(32),
        signed_prekey=b"s",
        last_resort_kem_prekey=b"k",
        one_time_prekeys=[],
        kem_prekeys=[],
    )


def test_acknowledged_top_position_is_not_handed_out_again(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        db = Database(sqlite_url(tmp_path))
        await db.migrate()
        store = MessagingStore(db)
        account = await store.create_account("alice", _device(), 0)

        async def send() -> bytes:
            message_id = os.urandom(16)
            await store.enqueue(
                account,
                [OutgoingEnvelope(1, message_id, b"envelope")],
                now_ms=0,
                expires_at_ms=10**12,
                queue_limit=100,
            )
            return message_id

        first = await send()
        (seen,) = await store.pending(account, 1, now_ms=0)
        assert await store.acknowledge(account, 1, first)
        await send()
        (later,) = await store.pending(account, 1, after_seq=seen.seq, now_ms=0)
        await db.close()
        return seen.seq, later.seq

    first_seq, second_seq = asyncio.run(scenario())
    assert second_seq > first_seq
