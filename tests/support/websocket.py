"""A live node driven over HTTP and its WebSocket, as the delivery tests do it: two accounts,
sends through `PUT /v1/messages`, and the frames a device reads (docs/api.md, "WebSocket")."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from tests.support.devices import DeviceKit, outgoing
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e

TIMEOUT = 10
"""Seconds a test waits for one frame before it fails."""


async def alice_and_bob(http: httpx.AsyncClient) -> tuple[DeviceKit, DeviceKit]:
    """Register the accounts ``alice`` and ``bob`` (one device each) on the node."""
    kits = []
    for name in ("alice", "bob"):
        kit = DeviceKit(one_time=1, kem=1)
        created = await http.post(
            "/v1/accounts", json={"username": name, "device": kit.device_keys()}
        )
        assert created.status_code == 201, created.text
        kit.username, kit.device_id = name, 1
        kits.append(kit)
    return kits[0], kits[1]


async def send(
    http: httpx.AsyncClient, sender: DeviceKit, to: DeviceKit, count: int = 1
) -> list[str]:
    """Send ``count`` messages to ``to``'s one device, one request each; their message ids."""
    ids = []
    for _ in range(count):
        response = await http.put(
            f"/v1/messages/{to.username}", json={"messages": [outgoing(to)]}, headers=sender.auth
        )
        assert response.status_code == 200, response.text
        ids.extend(response.json()["message_ids"])
    return ids


async def frame(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, parsed (fails the test after `TIMEOUT` seconds)."""
    decoded: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return decoded


async def envelopes_until_empty(ws: ClientConnection) -> list[pb.Envelope]:
    """The envelopes of the backlog, up to `queue_empty`."""
    out = []
    while (f := await frame(ws))["type"] != "queue_empty":
        assert f["type"] == "envelope"
        out.append(codec.decode(pb.Envelope, b64d(f["envelope"])))
    return out


def ids_of(envelopes: list[pb.Envelope]) -> list[str]:
    """The message ids of ``envelopes``, as the API writes them."""
    return [b64e(e.message_id) for e in envelopes]


async def wait_for_queue(http: httpx.AsyncClient, kit: DeviceKit, left: int = 0) -> None:
    """Wait (at most `TIMEOUT` seconds, then fail) until ``kit``'s device has ``left``
    envelopes queued. An ack frame gets no answer and the node commits it with the writer's
    next batch, so a test that acknowledges over the WebSocket waits for that commit instead
    of sleeping a fixed time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        pulled = await http.get("/v1/messages", headers=kit.auth)
        assert pulled.status_code == 200, pulled.text
        queued = len(pulled.json()["envelopes"])
        if queued == left or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert queued == left, f"{queued} envelopes queued after {TIMEOUT} s, not {left}"
