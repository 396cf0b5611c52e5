"""Committed envelopes carried between cluster nodes (`tidings.server.pushed_envelopes`), and
delivery where queue positions commit out of order (PostgreSQL, several writers).

- A device on node B gets what node A committed from the push, without reading its queue.
- An envelope committed "late", at a position below one already sent, still reaches the
  connected device (before, the connection read only past the highest position it had sent,
  so it waited for the device's next connection).
- The hub ignores its own pushes and malformed messages, reads the queue on a bare hint (a node
  that sends hints only), and after a lost subscription.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from tests.server.test_cluster import start_nodes, stop_nodes
from tests.support.devices import outgoing
from tests.support.services import PG_URL
from tests.support.websocket import alice_and_bob
from tidings.errors import DecodeError
from tidings.server.hub import MAX_OUTBOX_BYTES, RECENTLY_ACKED, Mailbox, RedisHub
from tidings.server.pushed_envelopes import (
    MAX_PUSH_BYTES,
    NODE_TAG_LEN,
    decode_pushes,
    encode_pushes,
)
from tidings.storage.relay import StoredEnvelope
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e

# -- the codec ---------------------------------------------------------------------------------

_stored = st.builds(
    StoredEnvelope,
    st.integers(1, 2**63 - 1),
    st.integers(1, 2**31 - 1),
    st.integers(1, 2**63 - 1),
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=300),
)


@given(st.lists(_stored, max_size=40))
def test_pushes_round_trip_in_order(stored: list[StoredEnvelope]) -> None:
    node = bytes(range(NODE_TAG_LEN))
    back: list[StoredEnvelope] = []
    for message in encode_pushes(node, stored):
        tag, items = decode_pushes(message)
        assert tag == node
        back.extend(items)
    assert back == stored


def test_a_large_batch_is_cut_into_messages_of_bounded_size() -> None:
    big = [StoredEnvelope(1, 1, seq, bytes(16), bytes(60_000)) for seq in range(1, 41)]
    messages = list(encode_pushes(bytes(NODE_TAG_LEN), big))
    assert len(messages) > 1
    assert all(len(m) < MAX_PUSH_BYTES + 61_000 for m in messages)
    assert [s for m in messages for s in decode_pushes(m)[1]] == big


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m[:-1],  # truncated
        lambda m: m + b"\0",  # trailing
        lambda m: b"x" + m[1:],  # another prefix
        lambda m: m[: 1 + NODE_TAG_LEN] + b"\x00\x02" + m[1 + NODE_TAG_LEN + 2 :],  # count
        lambda m: m[: 1 + NODE_TAG_LEN + 2] + bytes(8) + m[1 + NODE_TAG_LEN + 10 :],  # account 0
        lambda m: m[: 1 + NODE_TAG_LEN + 22] + b"\x00\x0f" + m[1 + NODE_TAG_LEN + 24 :],  # id len
        lambda m: b"",
    ],
)
def test_malformed_pushes_are_decode_errors(mutate: Any) -> None:
    (message,) = encode_pushes(bytes(NODE_TAG_LEN), [StoredEnvelope(3, 2, 9, bytes(16), b"env")])
    with pytest.raises(DecodeError):
        decode_pushes(mutate(message))


# -- the mailbox where positions commit out of order -------------------------------------------


def test_an_unordered_mailbox_sends_a_late_position_once() -> None:
    box = Mailbox(True, ordered=False)
    assert box.read_after() == 0  # reads from the start: a lower position may still come
    box.sent(10, b"a" * 16)
    assert not box.is_new(10) and box.is_new(7)  # 7 committed after 10 was sent
    assert box.missing([7, 10]) and not box.missing([10])
    box.sent(7, b"b" * 16)
    assert not box.missing([7, 10])
    box.acknowledged(b"a" * 16)
    assert not box.is_new(10)  # acknowledged lately: a push still in flight is not re-sent
    for seq in range(100, 100 + RECENTLY_ACKED):
        box.sent(seq, seq.to_bytes(16, "big"))
        box.acknowledged(seq.to_bytes(16, "big"))
    assert box.is_new(10)  # forgotten (a duplicate at worst: at-least-once on the wire)


def test_an_ordered_mailbox_keeps_only_the_highest_position() -> None:
    box = Mailbox(True)
    box.sent(10, b"a" * 16)
    assert box.read_after() == 10 and not box.is_new(7) and box.is_new(11)
    assert box.missing([11]) and not box.missing([3, 10])


# -- the hub's listener, without a Redis ------------------------------------------------------


@pytest.mark.anyio
async def test_the_listener_delivers_foreign_pushes_and_reads_on_a_bare_hint() -> None:
    hub = RedisHub("redis://127.0.0.1:1/0")  # never connected: only the listener's parsing
    hub.pushes_complete, hub.ordered = True, False
    try:
        async with hub.subscribe(5, 1) as box, hub.subscribe(6, 1) as other:
            item = StoredEnvelope(5, 1, 40, bytes(16), b"env")
            (own,) = encode_pushes(hub._node, [item])
            hub._on_hint(own)
            assert not box.pushed  # its own commit was handed over at the commit
            (foreign,) = encode_pushes(os.urandom(NODE_TAG_LEN), [item])
            hub._on_hint(foreign)
            assert list(box.pushed) == [item] and box.is_set() and not other.is_set()
            hub._on_hint(foreign[:-3])  # garbled: ignored, the subscription goes on
            assert list(box.pushed) == [item]
            box.clear()
            hub._on_hint(b"5:1")  # a node that only sends hints: read the queue
            assert box.is_set() and box.stale and not other.stale
            hub.wake_all_local()  # a lost subscription: every connection reads its queue
            assert other.stale
    finally:
        await hub._redis.aclose()
        await hub._publisher_redis.aclose()


@pytest.mark.anyio
async def test_the_outbox_to_redis_is_bounded_in_bytes_and_local_delivery_goes_on() -> None:
    """Redis not draining the outbox (down, or not answering): copies for the other nodes stop
    at `MAX_OUTBOX_BYTES` (their sweeps find the envelopes); this node's own connections still
    get every envelope at once."""
    hub = RedisHub("redis://127.0.0.1:1/0")  # started never: nothing drains the outbox
    hub.pushes_complete = True
    try:
        async with hub.subscribe(5, 1) as box:
            batch = [
                StoredEnvelope(5, 1, seq, seq.to_bytes(16, "big"), bytes(60_000))
                for seq in range(1, 9)
            ]
            batches = MAX_OUTBOX_BYTES // (8 * 60_000) + 5
            for n in range(batches):
                hub.deliver_committed(
                    [StoredEnvelope(5, 1, n * 8 + i.seq, i.message_id, i.envelope) for i in batch]
                )
                box.pushed.clear()  # as the connection takes them
            assert hub._outbox_bytes <= MAX_OUTBOX_BYTES + MAX_PUSH_BYTES + 60_100
            hub.deliver_committed([StoredEnvelope(5, 1, 10**9, bytes(16), b"last")])
            assert [item.envelope for item in box.pushed] == [b"last"]
    finally:
        await hub._redis.aclose()
        await hub._publisher_redis.aclose()


# -- two live nodes ------------------------------------------------------------------------------


async def _pg(schema: str, sql: str, *args: Any) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _envelope(ws: Any) -> pb.Envelope:
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "envelope", frame
    return codec.decode(pb.Envelope, b64d(frame["envelope"]))


def test_node_b_delivers_node_a_commits_without_reading_and_a_late_commit_arrives(
    tmp_path: Path, pg_schema: str, redis_url: str
) -> None:
    # The sweep reads each range twice, an interval apart: the late row below must land within
    # that window, which an interval of 1.5 s leaves wide open.
    started, schema = start_nodes(tmp_path, pg_schema, redis_url, sweep_interval_s=1.5)
    node_a, node_b = started
    reads: list[int] = []
    real_pending = node_b.app.state.tidings.store.pending

    async def counting_pending(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return await real_pending(*args, **kwargs)

    node_b.app.state.tidings.store.pending = counting_pending

    async def main() -> None:
        async with httpx.AsyncClient(base_url=node_a.url) as http:
            alice, bob = await alice_and_bob(http)
            await _pg(schema, "SELECT setval('messages_id_seq', 1000)")

            async def send() -> str:
                sent = await http.put(
                    "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
                )
                assert sent.status_code == 200, sent.text
                message_id: str = sent.json()["message_ids"][0]
                return message_id

            async with connect(node_b.ws_url, additional_headers=bob.auth) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "queue_empty"}
                backlog_reads = len(reads)
                ids = [await send() for _ in range(5)]
                got = [await _envelope(ws) for _ in range(5)]
                assert [b64e(e.message_id) for e in got] == ids
                # Carried over Redis: no queue read on B (one at most, were a sweep to land
                # between A's commit and the push; reading per hint took one or two a message).
                assert len(reads) - backlog_reads <= 1

                # A batch of another writer that took position 500 and commits only now.
                rows = await _pg(
                    schema,
                    "SELECT account_id, device_id, envelope, created_at_ms, expires_at_ms "
                    "FROM messages ORDER BY id LIMIT 1",
                )
                account_id, device_id, stored, created, expires = rows[0]
                late = codec.decode(pb.Envelope, bytes(stored))
                late.message_id = os.urandom(16)
                await _pg(
                    schema,
                    "INSERT INTO messages (id, account_id, device_id, message_id, envelope, "
                    "created_at_ms, expires_at_ms) VALUES (500, $1, $2, $3, $4, $5, $6)",
                    account_id,
                    device_id,
                    late.message_id,
                    codec.encode(late),
                    created,
                    expires,
                )
                # No push or hint for it: the sweep finds position 500 and the connection,
                # which sent 1001-1005 (none acknowledged), reads it from the start.
                arrived = await _envelope(ws)
                assert arrived.message_id == late.message_id
                with pytest.raises(TimeoutError):  # and nothing is sent twice
                    await asyncio.wait_for(ws.recv(), 1.0)

    try:
        asyncio.run(main())
    finally:
        stop_nodes(started, schema)
