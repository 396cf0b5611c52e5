"""The node sweep (`tidings.server.sweep`): the lost-hint safety net that replaced the
per-connection poll. An envelope whose hint never came is delivered within about one interval;
one sweep costs the same reads whatever the number of connections; positions committed out of
order (PostgreSQL) are still found; nothing already sent is woken for again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.server.test_storage import device
from tests.support.devices import DeviceKit, outgoing
from tests.support.live import LiveServer
from tests.support.services import pg_run
from tidings.server import sweep as sweep_module
from tidings.server.config import ServerConfig
from tidings.server.hub import LocalHub, Mailbox
from tidings.server.routes import websocket as websocket_module
from tidings.server.sweep import QueueSweep
from tidings.storage.messaging import MessagingStore, OutgoingEnvelope
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e

NOW = 1_700_000_000_000


def test_an_envelope_whose_hint_was_lost_comes_by_the_sweep(config: ServerConfig) -> None:
    """No hint (the hub's notify dropped) and, on SQLite, no push from the commit either: the
    envelope still reaches the connected device, by the sweep, within about one interval."""
    server = LiveServer(replace(config, sweep_interval_s=0.2)).start()
    try:
        state = server.app.state.tidings

        async def no_hint(account_id: int, device_id: int) -> None:
            return None

        state.hub.notify = no_hint
        state.store.queue.on_committed = None
        woken: list[int] = []
        real_wake = state.hub.wake_stale

        def counting_wake(newest: dict[tuple[int, int], int]) -> int:
            count: int = real_wake(newest)
            woken.append(count)
            return count

        state.hub.wake_stale = counting_wake

        async def main() -> None:
            async with httpx.AsyncClient(base_url=server.url) as http:
                alice, bob = await _register(http, "alice", "bob")
                async with connect(server.ws_url, additional_headers=bob.auth) as ws:
                    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert first == {"type": "queue_empty"}
                    sent = await http.put(
                        "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
                    )
                    assert sent.status_code == 200, sent.text
                    started = time.monotonic()
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    elapsed = time.monotonic() - started
                    assert frame["type"] == "envelope"
                    envelope = codec.decode(pb.Envelope, b64d(frame["envelope"]))
                    assert b64e(envelope.message_id) == sent.json()["message_ids"][0]
                    assert elapsed < 2.0, elapsed  # about one 0.2 s interval, not 5 s or 60 s
                    assert sum(woken) == 1  # the sweep woke bob's connection, once
                    with pytest.raises(TimeoutError):  # and it is sent only once
                        await asyncio.wait_for(ws.recv(), 0.6)

        asyncio.run(main())
    finally:
        server.stop()


async def _register(http: httpx.AsyncClient, *names: str) -> list[DeviceKit]:
    kits = []
    for name in names:
        kit = DeviceKit(one_time=1, kem=1)
        body = {"username": name, "device": kit.device_keys()}
        assert (await http.post("/v1/accounts", json=body)).status_code == 201
        kit.username, kit.device_id = name, 1
        kits.append(kit)
    return kits


def test_a_ban_whose_invalidation_was_lost_closes_the_socket_at_the_timed_recheck(
    config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The enforcement is no longer re-read every 5 s; a ban written without any invalidation
    (as if it were lost) still closes the socket at the connection's own jittered re-check,
    and that re-check reads the enforcement only, not the queue."""
    monkeypatch.setattr(websocket_module, "ENFORCEMENT_RECHECK_S", (0.2, 0.3))
    server = LiveServer(replace(config, sweep_interval_s=3600)).start()
    try:
        state = server.app.state.tidings
        reads: list[int] = []
        real_pending = state.store.pending

        async def counting_pending(*args: Any, **kwargs: Any) -> Any:
            reads.append(1)
            return await real_pending(*args, **kwargs)

        state.store.pending = counting_pending

        async def main() -> None:
            async with httpx.AsyncClient(base_url=server.url) as http:
                (bob,) = await _register(http, "bob")
                async with connect(server.ws_url, additional_headers=bob.auth) as ws:
                    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert first == {"type": "queue_empty"}
                    backlog_reads = len(reads)
                    await asyncio.sleep(1.0)  # three or more timed re-checks
                    assert len(reads) == backlog_reads
                    insert = (
                        "INSERT INTO account_enforcements (enforcement_id, username, kind, "
                        "until_ms, decision_id, case_id, created_ms, revoked_ms) VALUES "
                        f"('e1', 'bob', 'ban', NULL, 'd1', 'c1', {NOW}, NULL)"
                    )
                    if config.database_url:
                        _, error = pg_run(insert, config.database_schema)
                        assert not error, error
                    else:
                        with sqlite3.connect(config.data_dir / "tidings.db") as db:
                            db.execute(insert)
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert frame["type"] == "error" and frame["code"] == "account_banned"
                    await asyncio.wait_for(ws.wait_closed(), 5)
                    assert ws.close_code == 4403

        asyncio.run(main())
    finally:
        server.stop()


def _counting_reads(store: MessagingStore) -> list[int]:
    """Count every read the store runs on its queue connection (each is one statement)."""
    reads: list[int] = []
    real_read = store.queue.read

    async def counting(fn: Callable[..., Any]) -> Any:
        reads.append(1)
        return await real_read(fn)

    store.queue.read = counting  # type: ignore[method-assign]
    return reads


@contextlib.asynccontextmanager
async def _subscribed(hub: LocalHub, keys: list[tuple[int, int]]) -> AsyncIterator[list[Mailbox]]:
    """One subscribed connection per (account id, device id)."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(hub.subscribe(*key)) for key in keys]


async def _queue(store: MessagingStore, account: int, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        envelope = OutgoingEnvelope(1, i.to_bytes(16, "big"), b"e%d" % i)
        await store.enqueue(
            account, [envelope], now_ms=NOW, expires_at_ms=NOW + 10**9, queue_limit=100
        )


@pytest.mark.anyio
@pytest.mark.parametrize("connections", [1, 300])
async def test_one_sweep_costs_one_read_whatever_the_connections(
    store: MessagingStore, connections: int
) -> None:
    bob = await store.create_account("bob", device(), NOW)
    hub = LocalHub()
    sweep = QueueSweep(store, hub, interval_s=3600)
    await sweep.start()
    try:
        await _queue(store, bob, 3)
        reads = _counting_reads(store)
        others = [(10_000 + i, 1) for i in range(connections)]
        async with _subscribed(hub, [(bob, 1), *others]) as boxes:
            assert await sweep.sweep() == 1
            assert len(reads) == 1  # one query, not one per connection
            assert boxes[0].is_set() and boxes[0].stale
            assert not any(box.is_set() for box in boxes[1:])
            # Already woken for: the next sweep (which reads the range again) wakes nobody.
            boxes[0].clear()
            assert await sweep.sweep() == 0 and len(reads) == 2
            # Sent by the connection meanwhile (its hint came): not woken for either.
            await _queue(store, bob, 1, first=3)
            boxes[0].sent_through = await store.newest_position()
            assert await sweep.sweep() == 0
    finally:
        await sweep.stop()


@pytest.mark.anyio
async def test_a_busy_interval_is_read_in_pages(
    store: MessagingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_module, "SWEEP_PAGE", 2)
    bob = await store.create_account("bob", device(), NOW)
    hub = LocalHub()
    sweep = QueueSweep(store, hub, interval_s=3600)
    await sweep.start()
    try:
        await _queue(store, bob, 5)
        reads = _counting_reads(store)
        async with _subscribed(hub, [(bob, 1)]) as boxes:
            assert await sweep.sweep() == 1
            assert len(reads) == 3  # 2 + 2 + 1 positions
            assert boxes[0].stale
    finally:
        await sweep.stop()


class _OutOfOrderStore:
    """Positions as PostgreSQL may commit them: 2 becomes visible after 3 was read."""

    def __init__(self) -> None:
        self.visible: list[tuple[int, int, int]] = []

    async def newest_position(self) -> int:
        return 1

    async def positions_after(self, after: int, limit: int) -> list[tuple[int, int, int]]:
        return sorted(p for p in self.visible if p[0] > after)[:limit]


@pytest.mark.anyio
async def test_a_position_committed_after_a_higher_one_is_found_by_the_next_sweep() -> None:
    store = _OutOfOrderStore()
    hub = LocalHub()
    sweep = QueueSweep(store, hub, interval_s=3600)  # type: ignore[arg-type]
    await sweep.start()
    try:
        async with _subscribed(hub, [(7, 1), (8, 1)]) as (carol, dave):
            store.visible.append((3, 7, 1))  # carol's, committed first
            assert await sweep.sweep() == 1 and carol.stale and not dave.is_set()
            store.visible.append((2, 8, 1))  # dave's: a lower position, committed later
            assert await sweep.sweep() == 1 and dave.stale
            carol.clear()
            assert await sweep.sweep() == 0 and not carol.is_set()
    finally:
        await sweep.stop()
