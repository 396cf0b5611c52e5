"""WebSocket delivery: the device's backlog oldest first, `queue_empty`, then new envelopes as
hints arrive (or every `POLL_INTERVAL_S` without one). Envelopes are deleted only on ack;
whatever is unacknowledged when the socket drops is sent again on the next connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from tidings.errors import TidingsError
from tidings.server.auth import AuthenticatedDevice, authenticate
from tidings.server.hub import POLL_INTERVAL_S
from tidings.server.state import ServerState, get_state
from tidings.storage.enforcement import BAN, SUSPEND, active_enforcement
from tidings.wire.base64url import b64d, b64e

log = logging.getLogger("tidings.server.websocket")
router = APIRouter(tags=["delivery"])

MAX_CLIENT_FRAME = 256
"""Longest client frame the app parses (an ack is ~70 characters); the transport refuses
anything past `tidings.server.serving.MAX_WS_MESSAGE_BYTES` before it is buffered."""
MAX_WEBSOCKETS_PER_ACCOUNT = 16
"""Open connections per account on one node: a device keeps one (briefly two while it
reconnects), so this covers an account with several devices; more is a client bug or abuse,
each connection costing buffers and a queue poll every few seconds."""
TOO_MANY_CONNECTIONS_CLOSE = 4429
_PAGE = 100


def _error_frame(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


@router.websocket("/v1/websocket")
async def websocket(ws: WebSocket) -> None:
    """Deliver the device's queue. Refusals: bad credentials, before the upgrade (HTTP 403);
    past `MAX_WEBSOCKETS_PER_ACCOUNT`, an error frame ``too_many_connections`` then close
    4429."""
    state = get_state(ws)
    try:
        auth = await authenticate(ws.headers, state)
    except TidingsError:
        await ws.close(code=4401, reason="unauthorized")  # before accept: an HTTP 403
        return
    await ws.accept()
    open_now = state.websockets_open.get(auth.account_id, 0)
    if open_now >= MAX_WEBSOCKETS_PER_ACCOUNT:
        # Counted after authentication only: nobody can use up another account's slots.
        await ws.send_text(
            _error_frame(
                "too_many_connections",
                f"at most {MAX_WEBSOCKETS_PER_ACCOUNT} connections per account",
            )
        )
        await ws.close(code=TOO_MANY_CONNECTIONS_CLOSE, reason="too_many_connections")
        return
    state.websockets_open[auth.account_id] = open_now + 1
    state.metrics.websockets.inc()
    acks = asyncio.create_task(_read_acks(ws, auth, state))
    try:
        await _deliver(ws, auth, state, acks)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the device went away; its unacknowledged envelopes wait in the queue
    finally:
        acks.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await acks
        state.metrics.websockets.dec()
        left = state.websockets_open.pop(auth.account_id, 1) - 1
        if left > 0:
            state.websockets_open[auth.account_id] = left


async def _deliver(
    ws: WebSocket, auth: AuthenticatedDevice, state: ServerState, acks: asyncio.Task[None]
) -> None:
    last_seq = 0
    announced_empty = False
    async with state.hub.subscribe(auth.account_id, auth.device_id) as wake:
        while not acks.done():
            wake.clear()
            # Re-checked on every wake (a hint, or the poll): a ban or suspension decided
            # meanwhile closes the connection (the safety side wakes the account's devices).
            found = await active_enforcement(state.db, auth.username, state.clock())
            if found is not None and found.kind in (BAN, SUSPEND):
                code = "account_banned" if found.kind == BAN else "account_suspended"
                await ws.send_text(_error_frame(code, "account " + code[8:]))
                await ws.close(code=4403, reason=code)
                return
            batch = await state.store.pending(
                auth.account_id,
                auth.device_id,
                now_ms=state.clock(),
                after_seq=last_seq,
                limit=_PAGE,
            )
            for item in batch:
                await ws.send_text(
                    json.dumps({"type": "envelope", "envelope": b64e(item.envelope)})
                )
                last_seq = item.seq
            if len(batch) == _PAGE:
                continue
            if not announced_empty:
                await ws.send_text('{"type": "queue_empty"}')
                announced_empty = True
            waiter = asyncio.create_task(wake.wait())
            done, _ = await asyncio.wait(
                {waiter, acks}, timeout=POLL_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                waiter.cancel()


async def _read_acks(ws: WebSocket, auth: AuthenticatedDevice, state: ServerState) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        try:
            if text is None:
                # A binary frame: the protocol is JSON text. Answered, not fatal (docs/api.md).
                raise ValueError("binary frame")
            if len(text) > MAX_CLIENT_FRAME:
                raise ValueError("frame too long")
            frame = json.loads(text)
            if frame.get("type") != "ack":
                raise ValueError("unknown frame type")
            message_id = b64d(frame["message_id"], what="message id", max_len=16)
        except (ValueError, KeyError, TypeError, AttributeError, TidingsError):
            await ws.send_text(_error_frame("malformed", "bad frame"))
            continue
        if await state.store.acknowledge(auth.account_id, auth.device_id, message_id):
            state.metrics.envelopes_delivered.inc()
