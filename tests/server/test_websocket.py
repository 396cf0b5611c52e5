"""WebSocket delivery against a real uvicorn server: backlog oldest first, `queue_empty`,
live pushes, deletion only on ack, redelivery of unacknowledged envelopes on reconnect."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.devices import basic_auth
from tests.support.live import LiveServer
from tests.support.websocket import (
    alice_and_bob,
    envelopes_until_empty,
    frame,
    ids_of,
    send,
    wait_for_queue,
)
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e


def test_backlog_live_ack_and_redelivery(live_server: LiveServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
            backlog = await send(http, alice, bob, 3)  # bob is offline
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                got = await envelopes_until_empty(ws)
                assert ids_of(got) == backlog  # oldest first
                # Live: a new message is pushed without polling.
                [live] = await send(http, alice, bob)
                pushed = await frame(ws)
                assert pushed["type"] == "envelope"
                assert b64e(codec.decode(pb.Envelope, b64d(pushed["envelope"])).message_id) == live
                # Acknowledge the first two only.
                for message_id in backlog[:2]:
                    await ws.send(json.dumps({"type": "ack", "message_id": message_id}))
                await wait_for_queue(http, bob, left=2)
            # Unacknowledged ones come again, in order, on the next connection.
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                again = await envelopes_until_empty(ws)
                assert ids_of(again) == [backlog[2], live]
                for message_id in ids_of(again):
                    await ws.send(json.dumps({"type": "ack", "message_id": message_id}))
            await wait_for_queue(http, bob)
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                assert await envelopes_until_empty(ws) == []

    asyncio.run(main())


def test_two_connections_of_one_device_and_other_devices_isolated(live_server: LiveServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
            async with (
                connect(live_server.ws_url, additional_headers=bob.auth) as bob_ws,
                connect(live_server.ws_url, additional_headers=alice.auth) as alice_ws,
            ):
                assert await envelopes_until_empty(bob_ws) == []
                assert await envelopes_until_empty(alice_ws) == []
                [message_id] = await send(http, alice, bob)
                got = await frame(bob_ws)
                assert (
                    b64e(codec.decode(pb.Envelope, b64d(got["envelope"])).message_id) == message_id
                )
                # Alice's socket gets nothing of Bob's mail.
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(alice_ws.recv(), 0.5)

    asyncio.run(main())


def test_many_messages_in_order_across_pages(live_server: LiveServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
            sent = await send(http, alice, bob, 130)  # more than one page of 100
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                assert ids_of(await envelopes_until_empty(ws)) == sent

    asyncio.run(main())


def test_bad_frames_get_an_error_and_the_socket_stays(live_server: LiveServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            alice, bob = await alice_and_bob(http)
            [message_id] = await send(http, alice, bob)
            async with connect(live_server.ws_url, additional_headers=bob.auth) as ws:
                assert len(await envelopes_until_empty(ws)) == 1
                for bad in (
                    "not json",
                    '{"type": "nope"}',
                    '{"type": "ack"}',
                    '{"type": "ack", "message_id": "%%%"}',
                    "x" * 5000,
                    "[]",
                ):
                    await ws.send(bad)
                    reply = await frame(ws)
                    assert reply["type"] == "error" and reply["code"] == "malformed"
                await ws.send(json.dumps({"type": "ack", "message_id": message_id}))
            await wait_for_queue(http, bob)

    asyncio.run(main())


@pytest.mark.parametrize(
    "headers", [{}, basic_auth("bob.1", b64e(bytes(32))), {"Authorization": "x"}]
)
def test_unauthenticated_upgrade_is_refused(
    live_server: LiveServer, headers: dict[str, str]
) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url) as http:
            await alice_and_bob(http)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(live_server.ws_url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 403  # docs/api.md: refused before the upgrade

    asyncio.run(main())
