"""Cluster mode: two real uvicorn nodes on one PostgreSQL schema and one Redis. A message
sent through node A reaches a device connected to node B at once (Redis "has mail" hint);
the durable queue stays the source of truth."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support.app import make_config
from tests.support.devices import DeviceKit, outgoing
from tests.support.live import LiveServer
from tests.support.services import PG_URL, pg_admin
from tests.support.websocket import alice_and_bob
from tidings.app import create_app
from tidings.server.config import ConfigError
from tidings.server.hub import SWEEP_INTERVAL_S
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e


def start_nodes(
    tmp_path: Path, pg_schema: str, redis_url: str, **overrides: Any
) -> tuple[list[LiveServer], str]:
    """Two nodes on one fresh schema and a Redis namespace of their own (other test runs may
    share the Redis); returns them and the schema (for clean-up)."""
    key_file = tmp_path / "franking.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    schema = f"{pg_schema}_cluster_{os.urandom(3).hex()}"
    started: list[LiveServer] = []
    try:
        for name in ("a", "b"):
            config = make_config(
                tmp_path / name,
                database_url=PG_URL,
                database_schema=schema,
                redis_url=redis_url,
                franking_key_file=key_file,
                node_name=name,
                redis_prefix=f"tidings-test-{schema}",
                **overrides,
            )
            started.append(LiveServer(config).start())
    except BaseException:
        stop_nodes(started, schema)
        raise
    return started, schema


def stop_nodes(started: list[LiveServer], schema: str) -> None:
    for server in started:
        server.stop()
    pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def nodes(
    tmp_path: Path, pg_schema: str, redis_url: str
) -> Iterator[tuple[LiveServer, LiveServer]]:
    started, schema = start_nodes(tmp_path, pg_schema, redis_url)
    yield started[0], started[1]
    stop_nodes(started, schema)


def test_cluster_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="franking_key_file"):
        create_app(make_config(tmp_path, redis_url="redis://127.0.0.1:6379/0"))
    with pytest.raises(ConfigError, match="database_schema"):
        create_app(make_config(tmp_path, database_schema="x"))  # SQLite has no schemas
    with pytest.raises(ConfigError, match="database_schema"):
        create_app(make_config(tmp_path, database_url=PG_URL, database_schema='a"; DROP'))


def test_message_through_node_a_reaches_device_on_node_b(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    node_a, node_b = nodes

    async def main() -> None:
        async with (
            httpx.AsyncClient(base_url=node_a.url) as http_a,
            httpx.AsyncClient(base_url=node_b.url) as http_b,
        ):
            alice, bob = DeviceKit(one_time=1, kem=1), DeviceKit(one_time=1, kem=1)
            # Registered through different nodes: one database behind both.
            for http, name, kit in ((http_a, "alice", alice), (http_b, "bob", bob)):
                created = await http.post(
                    "/v1/accounts", json={"username": name, "device": kit.device_keys()}
                )
                assert created.status_code == 201, created.text
                kit.username, kit.device_id = name, 1
            taken = await http_b.post(
                "/v1/accounts", json={"username": "alice", "device": DeviceKit().device_keys()}
            )
            assert taken.status_code == 409
            async with connect(node_b.ws_url, additional_headers=bob.auth) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "queue_empty"}
                started = time.monotonic()
                sent = await http_a.put(
                    "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
                )
                assert sent.status_code == 200, sent.text
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                elapsed = time.monotonic() - started
                envelope = codec.decode(pb.Envelope, b64d(frame["envelope"]))
                assert b64e(envelope.message_id) == sent.json()["message_ids"][0]
                # Pushed on the hint, well before the lost-hint sweep would have found it.
                assert elapsed < SWEEP_INTERVAL_S / 2, elapsed
                await ws.send(json.dumps({"type": "ack", "message_id": b64e(envelope.message_id)}))
                await asyncio.sleep(0.3)
            # The ack through node B emptied the shared queue, as seen from node A.
            pulled = await http_a.get("/v1/messages", headers=bob.auth)
            assert pulled.json() == {"envelopes": [], "more": False}

    asyncio.run(main())


def test_without_redis_mail_is_late_but_not_lost(tmp_path: Path, pg_schema: str) -> None:
    """Redis unreachable: sends still succeed, and the device on the other node gets the
    message from the queue on its next periodic read."""
    started, schema = start_nodes(tmp_path, pg_schema, "redis://127.0.0.1:1/0")
    node_a, node_b = started

    async def main() -> None:
        async with httpx.AsyncClient(base_url=node_a.url) as http:
            alice, bob = await alice_and_bob(http)
            async with connect(node_b.ws_url, additional_headers=bob.auth) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "queue_empty"}
                sent = await http.put(
                    "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
                )
                assert sent.status_code == 200, sent.text
                frame = json.loads(await asyncio.wait_for(ws.recv(), SWEEP_INTERVAL_S + 5))
                envelope = codec.decode(pb.Envelope, b64d(frame["envelope"]))
                assert b64e(envelope.message_id) == sent.json()["message_ids"][0]

    try:
        asyncio.run(main())
    finally:
        stop_nodes(started, schema)


def test_rate_limits_are_shared_across_nodes(
    tmp_path: Path, pg_schema: str, redis_url: str
) -> None:
    """Per-account send limit 4/minute: two sends through each node use it up; the fifth,
    through either node, is 429 with Retry-After and stores nothing."""
    started, schema = start_nodes(tmp_path, pg_schema, redis_url, rate_sends_per_minute=4)
    node_a, node_b = started

    async def main() -> None:
        async with (
            httpx.AsyncClient(base_url=node_a.url) as http_a,
            httpx.AsyncClient(base_url=node_b.url) as http_b,
        ):
            alice, bob = await alice_and_bob(http_a)
            codes = []
            for http in (http_a, http_b, http_a, http_b, http_a, http_b):
                sent = await http.put(
                    "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
                )
                codes.append(sent.status_code)
                if sent.status_code == 429:
                    assert sent.json()["error"]["code"] == "rate_limited"
                    assert 1 <= int(sent.headers["Retry-After"]) <= 16  # one token per 15 s
            assert codes == [200, 200, 200, 200, 429, 429]
            pulled = await http_b.get("/v1/messages", headers=bob.auth)
            assert len(pulled.json()["envelopes"]) == 4  # the refused sends stored nothing
            # Another account has its own bucket.
            other = await http_b.put(
                "/v1/messages/alice", json={"messages": [outgoing(alice)]}, headers=bob.auth
            )
            assert other.status_code == 200

    try:
        asyncio.run(main())
    finally:
        stop_nodes(started, schema)


def test_hints_lost_mid_run_delay_delivery_but_lose_nothing(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    """First a live push through Redis; then node A's hints go nowhere (as if its Redis link
    died): the next message still reaches the device on node B from the durable queue, by the
    sweep, and nothing is lost or duplicated."""
    node_a, node_b = nodes

    async def main() -> None:
        async with httpx.AsyncClient(base_url=node_a.url) as http:
            alice, bob = await alice_and_bob(http)

            async def send() -> str:
                sent = await http.put(
                    "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
                )
                assert sent.status_code == 200, sent.text
                message_id: str = sent.json()["message_ids"][0]
                return message_id

            async def next_id(ws: Any, timeout: float) -> str:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                assert frame["type"] == "envelope"
                return b64e(codec.decode(pb.Envelope, b64d(frame["envelope"])).message_id)

            async with connect(node_b.ws_url, additional_headers=bob.auth) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "queue_empty"}
                started = time.monotonic()
                first = await send()
                assert await next_id(ws, 10) == first
                assert time.monotonic() - started < SWEEP_INTERVAL_S / 2
                # Node A now publishes where nobody listens: its hints are lost.
                node_a.app.state.tidings.hub._channel = f"nowhere-{os.urandom(4).hex()}"
                started = time.monotonic()
                second = await send()
                assert await next_id(ws, SWEEP_INTERVAL_S + 5) == second
                assert time.monotonic() - started > 1.0  # it came by the sweep, not a hint
                with pytest.raises(TimeoutError):  # and only once
                    await asyncio.wait_for(ws.recv(), 0.5)

    asyncio.run(main())
