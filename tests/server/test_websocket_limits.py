"""Hostile WebSocket clients against a real uvicorn server started with the node's own settings
(`tidings.server.serving`): a message past `MAX_WS_MESSAGE_BYTES` (256 KiB) closes the
connection (1009) before it is buffered, no per-message deflate, a binary frame gets a typed
error frame and the connection stays open, and an account's connections are limited (a typed
error frame, close 4429)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.live import LiveServer
from tests.support.websocket import (
    alice_and_bob,
    envelopes_until_empty,
    frame,
    send,
    wait_for_queue,
)
from tidings.server.config import ServerConfig
from tidings.server.routes.websocket import (
    MAX_WEBSOCKETS_PER_ACCOUNT,
    TOO_MANY_CONNECTIONS_CLOSE,
)
from tidings.server.serving import MAX_WS_MESSAGE_BYTES, uvicorn_config
from tidings.wire.base64url import b64e

TIMEOUT = 10


async def closed_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert ws.close_code is not None or ws.protocol.close_rcvd is not None
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None


def test_a_message_past_the_frame_limit_closes_the_connection(live_server: LiveServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            _, bob = await alice_and_bob(http)
        big = "x" * (MAX_WS_MESSAGE_BYTES + 1)
        async with connect(live_server.ws_url, additional_headers=bob.auth, max_size=None) as ws:
            await envelopes_until_empty(ws)
            # Just under the limit: only the app's own check answers (malformed), still open.
            await ws.send("x" * (MAX_WS_MESSAGE_BYTES - 1))
            assert (await frame(ws))["code"] == "malformed"
            with contextlib.suppress(ConnectionClosed):
                await ws.send(big)
            assert await closed_code(ws) == 1009  # message too big

    asyncio.run(main())


def test_per_message_deflate_is_not_negotiated(live_server: LiveServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            _, bob = await alice_and_bob(http)
        async with connect(
            live_server.ws_url, additional_headers=bob.auth, compression="deflate"
        ) as ws:
            assert ws.protocol.extensions == []  # a compressed frame would be a protocol error
            await envelopes_until_empty(ws)

    asyncio.run(main())


def test_a_binary_frame_gets_an_error_frame_and_the_connection_stays_open(
    live_server: LiveServer,
) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                await envelopes_until_empty(ws)
                await ws.send(b'{"type": "ack", "message_id": "AAAAAAAAAAAAAAAAAAAAAA"}')
                error = await frame(ws)
                assert error["type"] == "error" and error["code"] == "malformed"
                # Still open: a new message is pushed and its ack is taken.
                [live] = await send(http, alice, bob)
                pushed = await frame(ws)
                assert pushed["type"] == "envelope"
                await ws.send(json.dumps({"type": "ack", "message_id": live}))
            await wait_for_queue(http, bob)

    asyncio.run(main())


def test_an_accounts_connections_are_limited(live_server: LiveServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
        async with contextlib.AsyncExitStack() as stack:
            sockets = []
            for _ in range(MAX_WEBSOCKETS_PER_ACCOUNT):
                ws = await stack.enter_async_context(
                    connect(live_server.ws_url, additional_headers=bob.auth)
                )
                await envelopes_until_empty(ws)
                sockets.append(ws)
            async with connect(live_server.ws_url, additional_headers=bob.auth) as extra:
                refused = await frame(extra)
                assert refused == {
                    "type": "error",
                    "code": "too_many_connections",
                    "message": f"at most {MAX_WEBSOCKETS_PER_ACCOUNT} connections per account",
                }
                assert await closed_code(extra) == TOO_MANY_CONNECTIONS_CLOSE
            # Another account is not affected.
            async with connect(live_server.ws_url, additional_headers=alice.auth) as other:
                await envelopes_until_empty(other)
            # A slot freed is a slot again.
            await sockets.pop().close()
            state: Any = live_server.app.state.tidings
            for _ in range(200):  # the server notices the close asynchronously
                if sum(state.websockets_open.values()) < MAX_WEBSOCKETS_PER_ACCOUNT:
                    break
                await asyncio.sleep(0.05)
            async with connect(live_server.ws_url, additional_headers=bob.auth) as again:
                await envelopes_until_empty(again)

    asyncio.run(main())


def test_the_node_settings_cannot_be_overridden(config: ServerConfig) -> None:
    built = uvicorn_config(object(), config, port=1)
    assert built.ws_max_size == MAX_WS_MESSAGE_BYTES
    assert built.ws_per_message_deflate is False
    assert built.proxy_headers is False
    with pytest.raises(ValueError, match="ws_max_size"):
        uvicorn_config(object(), config, ws_max_size=16 * 1024 * 1024)


def test_every_delivered_frame_fits_the_limit_the_client_is_held_to() -> None:
    # The protocol's client frames are acks: a 16-byte id in a small JSON object.
    ack = json.dumps({"type": "ack", "message_id": b64e(bytes(16))})
    assert len(ack) < 100 < MAX_WS_MESSAGE_BYTES
