"""WebSocket delivery: the device's backlog oldest first, `queue_empty`, then new envelopes as
hints arrive (or, when a hint was lost, as the node's sweep finds them: `tidings.server.sweep`,
within about `SWEEP_INTERVAL_S`). Envelopes are deleted only on ack;
whatever is unacknowledged when the socket drops is sent again on the next connection. The
client may also send over it (``send`` frames, answered ``send_result`` or ``error`` with the
codes of ``PUT /v1/messages/{username}``: `tidings.server.routes.messages.relay_send`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from tidings.errors import RateLimitedError, TidingsError
from tidings.server.auth import AuthenticatedDevice, authenticate, still_allowed
from tidings.server.errors import body_for
from tidings.server.frames import (
    AckFrame,
    BadFrame,
    DeviceMessage,
    RequestId,
    envelope_frame,
    error_frame,
    read_client_frame,
    send_result_frame,
)
from tidings.server.hub import Mailbox
from tidings.server.routes.messages import relay_send
from tidings.server.state import ServerState, get_state
from tidings.storage.enforcement import BAN, SUSPEND, active_enforcement

log = logging.getLogger("tidings.server.websocket")
router = APIRouter(tags=["delivery"])

MAX_WEBSOCKETS_PER_ACCOUNT = 16
"""Open connections per account on one node: a device keeps one (briefly two while it
reconnects), so this covers an account with several devices; more is a client bug or abuse,
each connection costing buffers and an enforcement re-check every minute or two."""
TOO_MANY_CONNECTIONS_CLOSE = 4429
MAX_REQUESTS_IN_FLIGHT = 256
"""Acks and sends of one connection waiting for their batch; past it, reading waits."""
ENFORCEMENT_RECHECK_S = (60.0, 120.0)
"""Bounds of the jittered interval at which an idle connection re-reads its account's
enforcement without being told to (see `_deliver`)."""
_PAGE = 100


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
            error_frame(
                "too_many_connections",
                f"at most {MAX_WEBSOCKETS_PER_ACCOUNT} connections per account",
            )
        )
        await ws.close(code=TOO_MANY_CONNECTIONS_CLOSE, reason="too_many_connections")
        return
    state.websockets_open[auth.account_id] = open_now + 1
    state.metrics.websockets.inc()
    try:
        async with state.hub.subscribe(auth.account_id, auth.device_id) as mailbox:
            acks = asyncio.create_task(_read_frames(ws, auth, state, mailbox))
            try:
                await _deliver(ws, auth, state, acks, mailbox)
            except (WebSocketDisconnect, RuntimeError):
                pass  # the device went away; its unacknowledged envelopes wait in the queue
            finally:
                acks.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await acks
    finally:
        state.metrics.websockets.dec()
        left = state.websockets_open.pop(auth.account_id, 1) - 1
        if left > 0:
            state.websockets_open[auth.account_id] = left


async def _deliver(
    ws: WebSocket,
    auth: AuthenticatedDevice,
    state: ServerState,
    acks: asyncio.Task[None],
    mailbox: Mailbox,
) -> None:
    """Send the backlog, then what the mailbox brings, until the client goes. Nothing here
    runs on a timer but the enforcement re-check below: lost hints are the node sweep's
    (`tidings.server.sweep`), which wakes this connection with its mailbox ``stale``.

    A ban or suspension closes the connection (an error frame, then close 4403). It is pushed,
    not polled: the decision invalidates the account through the hub
    (`tidings.app.wake_account`: this node at once, the other nodes over the Redis channel),
    which moves `NodeCache.account_generation` and wakes this connection, which re-checks. A
    lost invalidation: a node whose Redis subscription dropped forgets every account and wakes
    every connection when it is back (`RedisHub`); one that never noticed (only the publish
    failed) is covered by a re-check every `ENFORCEMENT_RECHECK_S`, jittered so that a node's
    connections do not re-check together, which bounds how long a banned device can stay
    connected there (the node's cached credentials expire sooner, after ``ttl_s``)."""
    page_after: int | None = None  # a read in pages: where the next page starts
    announced_empty = False
    recheck = False  # `authenticate` has just checked the enforcement
    timed_out = False  # the re-check timer, not a wake-up: nothing new in the queue
    read_queue = True  # the backlog first; then, on an embedded node, what commits push
    seen = state.cache.account_generation(auth.account_id)
    loop = asyncio.get_running_loop()
    recheck_at = loop.time() + random.uniform(*ENFORCEMENT_RECHECK_S)  # noqa: S311 (jitter)
    while not acks.done():
        mailbox.clear()
        # A wake-up during the re-check below sets the mailbox: the next turn reads.
        quiet, timed_out = timed_out, False
        generation = state.cache.account_generation(auth.account_id)
        if recheck or generation != seen:
            recheck, seen = False, generation
            recheck_at = loop.time() + random.uniform(*ENFORCEMENT_RECHECK_S)  # noqa: S311
            found = await active_enforcement(state.db, auth.username, state.clock())
            if found is not None and found.kind in (BAN, SUSPEND):
                code = "account_banned" if found.kind == BAN else "account_suspended"
                await ws.send_text(error_frame(code, "account " + code[8:]))
                await ws.close(code=4403, reason=code)
                return
        if mailbox.overflowed:
            mailbox.overflowed, read_queue, page_after = False, True, None
            mailbox.pushed.clear()
        if mailbox.stale:
            # From the start again, even mid-way through a read in pages: on PostgreSQL what
            # made it stale may sit below the page reached.
            mailbox.stale, read_queue, page_after = False, True, None
        if read_queue or not (mailbox.complete or quiet):
            batch = await state.store.pending(
                auth.account_id,
                auth.device_id,
                now_ms=state.clock(),
                after_seq=mailbox.read_after() if page_after is None else page_after,
                limit=_PAGE,
            )
            for item in batch:
                if mailbox.is_new(item.seq):
                    # Recorded first: the device may ack it before the send returns.
                    mailbox.sent(item.seq, item.message_id)
                    await ws.send_text(envelope_frame(item.envelope))
            if len(batch) == _PAGE:
                page_after = batch[-1].seq
                continue
            page_after, read_queue = None, False
        # Pushed by the commits since the subscription: what the read above already sent is
        # skipped (`Mailbox.is_new`).
        pushed = mailbox.pushed
        while pushed:
            stored = pushed.popleft()
            if mailbox.is_new(stored.seq):
                mailbox.sent(stored.seq, stored.message_id)
                await ws.send_text(envelope_frame(stored.envelope))
        if not announced_empty:
            await ws.send_text('{"type": "queue_empty"}')
            announced_empty = True
        if mailbox.is_set():
            continue
        waiter = asyncio.create_task(mailbox.wait())
        done, _ = await asyncio.wait(
            {waiter, acks},
            timeout=max(0.0, recheck_at - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if waiter not in done:
            waiter.cancel()
            recheck = timed_out = True


async def _read_frames(
    ws: WebSocket, auth: AuthenticatedDevice, state: ServerState, mailbox: Mailbox
) -> None:
    """Client frames: ``ack`` and ``send`` (docs/api.md, read by `tidings.server.frames`), all
    pipelined: a send runs in a task of its own; an ack is only queued for the writer's next
    batch (a future, no task). At most `MAX_REQUESTS_IN_FLIGHT` of both at once."""
    pending: set[asyncio.Future[None] | asyncio.Future[bool]] = set()
    room = asyncio.Event()

    def finished(done: asyncio.Future[None] | asyncio.Future[bool]) -> None:
        pending.discard(done)
        room.set()

    def acked(message_id: bytes, done: asyncio.Future[bool]) -> None:
        finished(done)
        # Not deleted (StorageUnavailableError, or the socket's end cancelled it): sent again
        # on the next connection (at-least-once). Retrieved either way, so never logged.
        if not done.cancelled() and done.exception() is None:
            if done.result():
                state.metrics.envelopes_delivered.inc()
            mailbox.acknowledged(message_id)

    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            if pending:  # what was sent before the close is committed (or refused) first
                await asyncio.wait(set(pending))
            raise WebSocketDisconnect(message.get("code", 1000))
        frame = read_client_frame(message.get("text"))
        if isinstance(frame, BadFrame):
            await ws.send_text(error_frame("malformed", frame.why, frame.request_id))
            continue
        while len(pending) >= MAX_REQUESTS_IN_FLIGHT:
            room.clear()
            await room.wait()
        if isinstance(frame, AckFrame):
            ack = state.store.acknowledge_soon(auth.account_id, auth.device_id, frame.message_id)
            pending.add(ack)
            ack.add_done_callback(functools.partial(acked, frame.message_id))
        else:
            task = asyncio.create_task(
                _send(ws, auth, state, frame.request_id, frame.destination, frame.messages)
            )
            pending.add(task)
            task.add_done_callback(finished)


async def _send(
    ws: WebSocket,
    auth: AuthenticatedDevice,
    state: ServerState,
    request_id: RequestId,
    destination: str,
    messages: list[DeviceMessage],
) -> None:
    """One ``send`` frame: answered ``send_result`` or ``error`` with the HTTP route's code."""
    try:
        await still_allowed(state, auth)  # a ban or a removed device since the upgrade
        result = await relay_send(state, auth, destination, messages)
    except TidingsError as exc:
        state.metrics.errors.labels(code=exc.code).inc()
        error = body_for(exc)["error"]
        if isinstance(exc, RateLimitedError):
            error["retry_after_s"] = exc.retry_after_s
        reply = json.dumps({"type": "error", "id": request_id, **error})
    except Exception as exc:  # a bug or an outage: answered, never a silently dropped socket
        log.error("websocket send failed", extra={"error": type(exc).__name__})
        state.metrics.errors.labels(code="internal").inc()
        reply = error_frame("internal", "internal server error", request_id)
    else:
        reply = send_result_frame(request_id, result.server_timestamp_ms, result.message_ids)
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await ws.send_text(reply)
