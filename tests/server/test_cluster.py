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

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.server.conftest import PG_URL, LiveServer, make_config, pg_admin
from tests.server.helpers import DeviceKit, outgoing
from tidings.app import create_app
from tidings.server.config import ConfigError
from tidings.server.hub import POLL_INTERVAL_S
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e


def start_nodes(tmp_path: Path, pg_schema: str, redis_url: str) -> tuple[list[LiveServer], str]:
    """Two nodes on one fresh schema; returns them and the schema (for clean-up)."""
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
                # Pushed on the hint, well before the lost-hint poll would have found it.
                assert elapsed < POLL_INTERVAL_S / 2, elapsed
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
            alice, bob = DeviceKit(one_time=1, kem=1), DeviceKit(one_time=1, kem=1)
            for name, kit in (("alice", alice), ("bob", bob)):
                body = {"username": name, "device": kit.device_keys()}
                assert (await http.post("/v1/accounts", json=body)).status_code == 201
                kit.username, kit.device_id = name, 1
            async with connect(node_b.ws_url, additional_headers=bob.auth) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "queue_empty"}
                sent = await http.put(
                    "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
                )
                assert sent.status_code == 200, sent.text
                frame = json.loads(await asyncio.wait_for(ws.recv(), POLL_INTERVAL_S + 5))
                envelope = codec.decode(pb.Envelope, b64d(frame["envelope"]))
                assert b64e(envelope.message_id) == sent.json()["message_ids"][0]

    try:
        asyncio.run(main())
    finally:
        stop_nodes(started, schema)
