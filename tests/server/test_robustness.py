"""Robustness against real sockets: clients that vanish mid-upload, WebSockets whose peer
stops reading and then disappears without a close frame, reconnect storms, duplicate sends,
and a restart that loses nothing. The server must stay healthy and keep every envelope."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.server.conftest import count_rows
from tests.support.devices import DeviceKit, outgoing
from tests.support.live import LiveServer
from tests.support.websocket import TIMEOUT, alice_and_bob, envelopes_until_empty, ids_of, send
from tidings.server.config import ServerConfig
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """Error records logged by uvicorn or the app while the test runs (should stay empty)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.ERROR)
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "tidings")]
    for logger in loggers:
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)


def open_websockets(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("tidings_websockets_open "):
            return float(line.split()[1])
    raise AssertionError("no tidings_websockets_open gauge")


async def settled_gauge(http: httpx.AsyncClient, expected: float) -> float:
    """The open-WebSocket gauge once it reaches ``expected`` (or after 5 s, whatever it is)."""
    deadline = time.monotonic() + 5
    while True:
        value = open_websockets((await http.get("/metrics")).text)
        if value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def test_client_vanishing_mid_upload_leaves_no_file_and_no_row(
    live_server: LiveServer, config: ServerConfig
) -> None:
    async def main() -> DeviceKit:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, _ = await alice_and_bob(http)
        return alice

    alice = asyncio.run(main())
    attachments = config.data_dir / "attachments"
    for sent in (0, 1, 70_000):  # nothing, a byte, several chunks of a 1 MB upload
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=5) as raw:
            head = (
                "POST /v1/attachments HTTP/1.1\r\nHost: test\r\n"
                f"Authorization: {alice.auth['Authorization']}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
            )
            raw.sendall(head.encode() + b"x" * sent)
            time.sleep(0.2)  # the server has started streaming to its partial file
        # The socket is closed: the client vanished.
        deadline = time.monotonic() + 5
        while list(attachments.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(attachments.iterdir()) == [], sent
    assert count_rows(config, "attachments") == 0
    # The server is fine, and the next upload works.
    with httpx.Client(base_url=live_server.url) as http:
        ok = http.post(
            "/v1/attachments",
            content=b"y" * 5000,
            headers={**alice.auth, "Content-Type": "application/octet-stream"},
        )
        assert ok.status_code == 201
        assert http.get(f"/v1/attachments/{ok.json()['id']}", headers=alice.auth).content == (
            b"y" * 5000
        )
    assert count_rows(config, "attachments") == 1


def test_reconnect_storm_leaves_the_server_healthy(
    live_server: LiveServer, server_errors: list[logging.LogRecord]
) -> None:
    """50 connections of one device in quick succession, half closed politely, half dropped
    without a close frame (some in the middle of their backlog): afterwards nothing leaked,
    and the device still gets its whole backlog, in order, exactly as queued."""

    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
            backlog = await send(http, alice, bob, 5)

            async def one(i: int) -> None:
                ws = await connect(live_server.ws_url, additional_headers=bob.auth)
                if i % 3 == 0:
                    await asyncio.wait_for(ws.recv(), TIMEOUT)  # mid-backlog
                if i % 2 == 0:
                    ws.transport.abort()  # vanish: no close frame, no FIN handshake
                else:
                    await ws.close()

            for start in range(0, 50, 10):  # ten at a time, 50 in all
                await asyncio.gather(*(one(i) for i in range(start, start + 10)))
            assert await settled_gauge(http, 0.0) == 0.0
            assert (await http.get("/healthz")).status_code == 200
            # Nothing was acknowledged, so nothing went: the backlog comes whole, in order.
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                assert ids_of(await envelopes_until_empty(ws)) == backlog
                [live] = await send(http, alice, bob, 1)
                frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                assert b64e(codec.decode(pb.Envelope, b64d(frame["envelope"])).message_id) == live

    asyncio.run(main())
    assert [r.getMessage() for r in server_errors] == []


def test_peer_that_stops_reading_then_vanishes(live_server: LiveServer) -> None:
    """A WebSocket whose client stops reading (its buffers fill, the server's sends stall)
    and then disappears without a close frame: other requests are served meanwhile, and
    every envelope pushed into the void is delivered again on the next connection."""

    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
            stuck = await connect(
                live_server.ws_url, additional_headers=bob.auth, max_queue=1, max_size=2**20
            )
            # Never read from it: ~300 envelopes of ~300 bytes fill the socket buffers.
            sent = await send(http, alice, bob, 300)
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/v1/devices", headers=alice.auth)).status_code == 200
            stuck.transport.abort()
            assert await settled_gauge(http, 0.0) == 0.0
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                assert ids_of(await envelopes_until_empty(ws)) == sent

    asyncio.run(main())


def test_duplicate_sends_are_separate_envelopes(
    live_server: LiveServer, config: ServerConfig
) -> None:
    """A client that retries a send whose answer it lost sends the same body twice: the
    server cannot tell a retry from a new message (the body is opaque), so it stores two
    envelopes with distinct message ids; the receiving client dedupes by the content's own
    identity after decryption (docs/api.md, Messages)."""

    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
            body = {"messages": [outgoing(bob)]}
            first = await http.put("/v1/messages/bob", json=body, headers=alice.auth)
            again = await http.put("/v1/messages/bob", json=body, headers=alice.auth)
            assert first.status_code == again.status_code == 200
            ids = first.json()["message_ids"] + again.json()["message_ids"]
            assert len(set(ids)) == 2
            assert count_rows(config, "messages") == 2
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                assert ids_of(await envelopes_until_empty(ws)) == ids
            pulled = (await http.get("/v1/messages", headers=bob.auth)).json()["envelopes"]
            bodies = [codec.decode(pb.Envelope, b64d(e)).body for e in pulled]
            assert bodies[0] == bodies[1]  # same ciphertext, two envelopes

    asyncio.run(main())


def test_restart_loses_nothing(config: ServerConfig) -> None:
    """Stop a node with a device connected and envelopes queued (some acknowledged, some
    delivered but not yet acknowledged); a new node on the same storage delivers exactly the
    unacknowledged ones, in order."""
    first = LiveServer(config).start()
    state: dict[str, Any] = {}

    async def before() -> None:
        async with httpx.AsyncClient(base_url=first.url) as http:
            alice, bob = await alice_and_bob(http)
            ids = await send(http, alice, bob, 6)
            ws = await connect(first.ws_url, additional_headers=bob.auth)
            assert ids_of(await envelopes_until_empty(ws)) == ids
            for message_id in ids[:2]:
                await ws.send(json.dumps({"type": "ack", "message_id": message_id}))
            deadline = time.monotonic() + 5
            while len((await http.get("/v1/messages", headers=bob.auth)).json()["envelopes"]) > 4:
                assert time.monotonic() < deadline, "acks not applied"
                await asyncio.sleep(0.05)
            state.update(bob=bob, ids=ids, ws=ws)

    try:
        asyncio.run(before())
    finally:
        first.stop()  # graceful shutdown with Bob's WebSocket still open
    assert not first.thread.is_alive()
    second = LiveServer(config).start()

    async def after() -> None:
        async with connect(second.ws_url, additional_headers=state["bob"].auth) as ws:
            assert ids_of(await envelopes_until_empty(ws)) == state["ids"][2:]

    try:
        asyncio.run(after())
    finally:
        second.stop()
