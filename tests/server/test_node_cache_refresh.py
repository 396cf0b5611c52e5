"""The node cache refreshes entries in use before they expire (`NodeCache.refresh_ahead`):
a request that finds its entry due goes on with it while one background read replaces it, so
entries filled together never expire together under traffic; no entry past ``ttl_s`` is used."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.devices import DeviceKit, outgoing
from tidings.errors import StorageUnavailableError
from tidings.server.relay import REFRESH_FROM, REFRESH_TO, NodeCache

Register = Callable[..., DeviceKit]


def clocked(fraction: float = 0.5) -> tuple[NodeCache, list[float], list[tuple[float, float]]]:
    """A cache on a hand-moved clock whose refresh point is ``fraction`` of the ttl."""
    now = [0.0]
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return fraction

    return NodeCache(ttl_s=10.0, monotonic=lambda: now[0], uniform=uniform), now, draws


def test_an_entry_falls_due_at_its_drawn_point_and_expires_at_the_ttl() -> None:
    cache, now, draws = clocked(0.7)
    cache.keep_device_list(cache.generation, "bob", 5, {1: 11})
    assert draws == [(REFRESH_FROM, REFRESH_TO)]
    entry = cache.device_list("bob")
    assert entry is not None and entry.refresh_s == 7.0
    now[0] = 6.9
    assert not cache.due(entry)
    now[0] = 7.0
    assert cache.due(entry) and cache.device_list("bob") is entry  # due, still used
    now[0] = 10.01
    assert cache.device_list("bob") is None  # past the ttl: never used


def test_entries_filled_together_fall_due_apart() -> None:
    cache = NodeCache(ttl_s=10.0, monotonic=lambda: 0.0)
    for n in range(200):
        cache.keep_device_list(cache.generation, f"user{n}", n, {1: 1})
    points = {cache.device_list(f"user{n}").refresh_s for n in range(200)}  # type: ignore[union-attr]
    assert len(points) > 150
    assert min(points) >= 10.0 * REFRESH_FROM and max(points) <= 10.0 * REFRESH_TO


def test_a_due_entry_is_refreshed_once_in_the_background() -> None:
    cache, now, _ = clocked(0.5)
    reads: list[int] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def read() -> None:
            generation = cache.generation
            reads.append(len(reads))
            await gate.wait()
            cache.keep_device_list(generation, "bob", 5, {1: 12})

        cache.keep_device_list(cache.generation, "bob", 5, {1: 11})
        now[0] = 6.0
        for _ in range(20):  # twenty requests find it due: one read
            cache.refresh_ahead(("devices", "bob"), read)
        await asyncio.sleep(0)
        assert reads == [0]
        assert cache.device_list("bob").registration_ids == {1: 11}  # type: ignore[union-attr]
        gate.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        fresh = cache.device_list("bob")
        assert fresh is not None and fresh.registration_ids == {1: 12}
        assert (fresh.fetched_s, fresh.refresh_s) == (6.0, 11.0)
        await cache.close()

    asyncio.run(main())


def test_a_refresh_racing_an_invalidation_is_not_kept() -> None:
    cache, now, _ = clocked(0.5)

    async def main() -> None:
        gate = asyncio.Event()

        async def read() -> None:
            generation = cache.generation
            await gate.wait()
            cache.keep_device_list(generation, "bob", 5, {1: 99})

        cache.keep_device_list(cache.generation, "bob", 5, {1: 11})
        now[0] = 6.0
        cache.refresh_ahead(("devices", "bob"), read)
        await asyncio.sleep(0)
        cache.invalidate(5)  # a device change while the refresh reads
        gate.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert cache.device_list("bob") is None
        await cache.close()

    asyncio.run(main())


def test_a_failed_refresh_is_logged_and_the_entry_serves_until_its_ttl(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, now, _ = clocked(0.5)

    async def main() -> None:
        async def broken() -> None:
            raise StorageUnavailableError("database down")

        cache.keep_device_list(cache.generation, "bob", 5, {1: 11})
        now[0] = 6.0
        with caplog.at_level(logging.WARNING, logger="tidings.server.relay"):
            cache.refresh_ahead(("devices", "bob"), broken)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert [r.getMessage() for r in caplog.records] == ["cache refresh failed"]
        assert caplog.records[0].error == "StorageUnavailableError"  # type: ignore[attr-defined]
        assert "database down" not in caplog.text
        assert cache.device_list("bob") is not None
        now[0] = 10.5
        assert cache.device_list("bob") is None

    asyncio.run(main())


def test_close_cancels_the_refreshes_in_flight() -> None:
    cache, now, _ = clocked(0.5)
    cancelled: list[bool] = []

    async def main() -> None:
        async def slow() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        cache.keep_device_list(cache.generation, "bob", 5, {1: 11})
        now[0] = 6.0
        cache.refresh_ahead(("devices", "bob"), slow)
        await asyncio.sleep(0)
        await cache.close()

    asyncio.run(main())
    assert cancelled == [True]


def test_sends_refresh_the_credentials_and_device_list_they_use(
    client: TestClient, register: Register
) -> None:
    """Through the node: once due, the next send keeps going on the cached entries and the
    background reads replace them (a later send finds fresh ones)."""
    alice, bob = register("alice"), register("bob")
    state = client.app.state.tidings  # type: ignore[attr-defined]

    def put() -> Any:
        body = {"messages": [outgoing(bob)]}
        return client.put(f"/v1/messages/{bob.username}", json=body, headers=alice.auth)

    assert put().status_code == 200
    listed = state.cache.device_list(bob.username)
    credentials = state.cache.device(alice.username, alice.device_id, state.clock())
    assert listed is not None and credentials is not None
    base = state.cache._monotonic
    state.cache._monotonic = lambda: base() + 0.95 * state.cache.ttl_s  # due, not expired
    assert put().status_code == 200
    deadline = base() + 5.0
    while base() < deadline and (
        state.cache.device_list(bob.username) is listed
        or state.cache.device(alice.username, alice.device_id, state.clock()) is credentials
    ):
        assert put().status_code == 200
    assert state.cache.device_list(bob.username) is not listed
    assert state.cache.device(alice.username, alice.device_id, state.clock()) is not credentials
