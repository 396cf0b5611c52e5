"""Sends over the authenticated WebSocket (``send`` frames answered ``send_result`` or a typed
``error`` frame with the HTTP codes), and the node caches behind the hot path: device lists
and credentials invalidated by device changes, and by the hub's invalidations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from tests.support.devices import DeviceKit, outgoing
from tidings.errors import StorageUnavailableError
from tidings.server.hub import EVERY_ACCOUNT, MAX_PUSHED, Mailbox, RedisHub
from tidings.server.relay import NodeCache
from tidings.server.serving import MAX_WS_MESSAGE_BYTES
from tidings.storage.relay import StoredEnvelope
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e
from tidings.wire.limits import MAX_ENVELOPE_BYTES, MAX_RATCHET_MESSAGE_BYTES

Register = Callable[..., DeviceKit]
Link = Callable[..., DeviceKit]


def send_frame(to: DeviceKit | str, messages: list[dict[str, Any]], request_id: Any = 1) -> dict:
    name = to if isinstance(to, str) else to.username
    return {"type": "send", "id": request_id, "destination": name, "messages": messages}


def opened(ws: WebSocketTestSession) -> WebSocketTestSession:
    assert ws.receive_json() == {"type": "queue_empty"}
    return ws


def test_a_send_frame_is_stored_and_answered_with_its_id(
    client: TestClient, register: Register
) -> None:
    alice, bob = register("alice"), register("bob")
    with (
        client.websocket_connect("/v1/websocket", headers=alice.auth) as a,
        client.websocket_connect("/v1/websocket", headers=bob.auth) as b,
    ):
        opened(a), opened(b)
        a.send_json(send_frame(bob, [outgoing(bob, marker=b"over ws")], request_id="r-1"))
        result = a.receive_json()
        assert result["type"] == "send_result" and result["id"] == "r-1"
        [message_id] = result["message_ids"]
        pushed = b.receive_json()
        envelope = codec.decode(pb.Envelope, b64d(pushed["envelope"]))
        assert b64e(envelope.message_id) == message_id
        assert (envelope.sender, envelope.sender_device) == (alice.username, 1)
        assert envelope.server_timestamp_ms == result["server_timestamp_ms"]
        b.send_json({"type": "ack", "message_id": message_id})
        # Pipelined: several sends in flight at once, each answered with its own id.
        for i in range(5):
            a.send_json(send_frame(bob, [outgoing(bob)], request_id=100 + i))
        answers = {a.receive_json()["id"] for _ in range(5)}
        assert answers == {100, 101, 102, 103, 104}
    queued = client.get("/v1/messages", headers=bob.auth).json()["envelopes"]
    assert len(queued) == 5


def test_a_send_frame_gets_the_http_error_codes(
    client: TestClient, register: Register, link: Link
) -> None:
    alice, bob = register("alice"), register("bob")
    bob_phone = link(bob)
    with client.websocket_connect("/v1/websocket", headers=alice.auth) as ws:
        opened(ws)
        ws.send_json(send_frame(bob, [outgoing(bob), outgoing(7, 1)], request_id=2))
        error = ws.receive_json()
        assert error == {
            "type": "error",
            "id": 2,
            "code": "mismatched_devices",
            "message": error["message"],
            "missing": [bob_phone.device_id],
            "extra": [7],
        }
        stale = [outgoing(bob), outgoing(bob_phone, bob_phone.registration_id + 1)]
        ws.send_json(send_frame(bob, stale, request_id=3))
        error = ws.receive_json()
        assert (error["id"], error["code"], error["stale"]) == (3, "stale_devices", [2])
        ws.send_json(send_frame("nobody", [outgoing(bob)], request_id=4))
        assert ws.receive_json()["code"] == "unknown_account"
    assert client.get("/v1/messages", headers=bob.auth).json()["envelopes"] == []


def test_bad_send_frames_get_malformed_and_the_socket_stays(
    client: TestClient, register: Register
) -> None:
    alice, bob = register("alice"), register("bob")
    bad_body = dict(outgoing(bob), body="not base64!")
    frames: list[Any] = [
        {"type": "send", "destination": bob.username, "messages": [outgoing(bob)]},  # no id
        send_frame(bob, [outgoing(bob)], request_id=True),  # not a request id
        send_frame(bob, [outgoing(bob)], request_id="x" * 65),
        send_frame(bob, [bad_body], request_id=5),
        send_frame(bob, "messages", request_id=6),
        {"type": "send", "id": 7, "messages": [outgoing(bob)]},  # no destination
        ["send"],
        {"type": "subscribe"},
    ]
    with client.websocket_connect("/v1/websocket", headers=alice.auth) as ws:
        opened(ws)
        for f in frames:
            ws.send_json(f)
            error = ws.receive_json()
            assert error["type"] == "error" and error["code"] == "malformed", f
        # Request ids are echoed once they are readable.
        ws.send_json(send_frame(bob, [bad_body], request_id=8))
        assert ws.receive_json()["id"] == 8
        ws.send_json(send_frame(bob, [outgoing(bob)], request_id=9))
        assert ws.receive_json()["type"] == "send_result"  # still open and serving


def test_the_largest_envelope_fits_a_send_frame(client: TestClient, register: Register) -> None:
    alice, bob = register("alice"), register("bob")
    largest = outgoing(bob)
    ciphertext_len = (MAX_RATCHET_MESSAGE_BYTES - 60 - 32) // 16 * 16 + 32  # blocks + the MAC
    ratchet = pb.RatchetMessage(version=1, header=bytes(40), ciphertext=bytes(ciphertext_len))
    largest["body"] = b64e(codec.encode(ratchet))
    # The envelope body limit itself (96 KiB, 128 KiB of base64): read and answered too.
    at_limit = dict(outgoing(bob), body=b64e(bytes(MAX_ENVELOPE_BYTES)))
    with client.websocket_connect("/v1/websocket", headers=alice.auth) as ws:
        opened(ws)
        for message, expected in ((largest, "send_result"), (at_limit, "error")):
            text = json.dumps(send_frame(bob, [message]))
            assert len(text) < MAX_WS_MESSAGE_BYTES
            ws.send_text(text)
            answer = ws.receive_json()
            assert answer["type"] == expected, answer
        assert answer["code"] == "oversized"  # as over HTTP: past the RatchetMessage limit


def test_a_removed_device_cannot_send_over_its_open_socket(
    client: TestClient, register: Register, link: Link
) -> None:
    alice, bob = register("alice"), register("bob")
    alice_phone = link(alice)
    with client.websocket_connect("/v1/websocket", headers=alice_phone.auth) as ws:
        opened(ws)
        ws.send_json(send_frame(bob, [outgoing(bob)], request_id=1))
        assert ws.receive_json()["type"] == "send_result"
        removed = client.delete(f"/v1/devices/{alice_phone.device_id}", headers=alice.auth)
        assert removed.status_code == 204
        ws.send_json(send_frame(bob, [outgoing(bob)], request_id=2))
        error = ws.receive_json()
        assert (error["type"], error["id"], error["code"]) == ("error", 2, "unauthorized")
    # And over HTTP, at once (its cached credentials went with it).
    r = client.put(
        f"/v1/messages/{bob.username}", json={"messages": [outgoing(bob)]}, headers=alice_phone.auth
    )
    assert r.status_code == 401


def test_device_changes_reach_the_cached_device_list(
    client: TestClient, register: Register, link: Link
) -> None:
    alice, bob = register("alice"), register("bob")

    def put(messages: list[dict[str, Any]]) -> Any:
        return client.put(
            f"/v1/messages/{bob.username}", json={"messages": messages}, headers=alice.auth
        )

    assert put([outgoing(bob)]).status_code == 200  # bob's list is cached now
    phone = link(bob)
    r = put([outgoing(bob)])
    assert (r.status_code, r.json()["error"]["missing"]) == (409, [phone.device_id])
    assert put([outgoing(bob), outgoing(phone)]).status_code == 200
    assert client.delete(f"/v1/devices/{phone.device_id}", headers=bob.auth).status_code == 204
    r = put([outgoing(bob), outgoing(phone)])
    assert (r.status_code, r.json()["error"]["extra"]) == (409, [phone.device_id])
    assert put([outgoing(bob)]).status_code == 200


def test_a_stale_cache_entry_is_checked_against_the_database_before_a_refusal(
    client: TestClient, register: Register, link: Link
) -> None:
    """A lost invalidation (another node, Redis down): the send that does not match the
    cached list is checked against the database, so it is not refused wrongly."""
    alice, bob = register("alice"), register("bob")
    state = client.app.state.tidings  # type: ignore[attr-defined]
    body = {"messages": [outgoing(bob)]}
    assert client.put(f"/v1/messages/{bob.username}", json=body, headers=alice.auth).is_success
    cached = state.cache.device_list(bob.username)
    phone = link(bob)
    # Put the stale list back, as a node that missed the invalidation would have it.
    state.cache.keep_device_list(
        state.cache.generation, bob.username, cached.account_id, cached.registration_ids
    )
    both = {"messages": [outgoing(bob), outgoing(phone)]}
    assert client.put(f"/v1/messages/{bob.username}", json=both, headers=alice.auth).is_success


def test_node_cache_keeps_no_read_that_raced_an_invalidation() -> None:
    now = [0.0]
    cache = NodeCache(ttl_s=10.0, monotonic=lambda: now[0])
    generation = cache.generation
    cache.invalidate(5)
    cache.keep_device_list(generation, "bob", 5, {1: 1})  # read before the invalidation
    assert cache.device_list("bob") is None
    cache.keep_device_list(cache.generation, "bob", 5, {1: 1})
    assert cache.device_list("bob") is not None
    now[0] = 11.0
    assert cache.device_list("bob") is None  # past the ttl
    now[0] = 0.0
    seen = cache.account_generation(5)
    cache.invalidate(EVERY_ACCOUNT)
    assert cache.device_list("bob") is None and cache.account_generation(5) != seen
    cache.keep_device_list(cache.generation, "bob", 5, {1: 1})
    cache.forget_username("bob")
    assert cache.device_list("bob") is None


def test_concurrent_misses_share_one_read_begun_since_the_last_invalidation() -> None:
    cache = NodeCache(ttl_s=10.0)
    reads: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def read(tag: str) -> str:
            reads.append(tag)
            await gate.wait()
            return tag

        # Ten requests missing the same entry at once: one read, one answer for all.
        first = [asyncio.create_task(cache.read_once("k", lambda: read("a"))) for _ in range(10)]
        await asyncio.sleep(0)
        # After an invalidation (a ban, say), a new request does not join the older read.
        cache.invalidate(5)
        later = asyncio.create_task(cache.read_once("k", lambda: read("b")))
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*first) == ["a"] * 10
        assert await later == "b"
        assert reads == ["a", "b"]

        # The reading request goes away: the others read again themselves.
        gate.clear()
        leader = asyncio.create_task(cache.read_once("k", lambda: read("c")))
        await asyncio.sleep(0)
        follower = asyncio.create_task(cache.read_once("k", lambda: read("d")))
        await asyncio.sleep(0)
        leader.cancel()
        await asyncio.sleep(0)
        gate.set()
        assert await follower == "d"

        # A failed read fails every request that shared it.
        async def broken() -> str:
            await asyncio.sleep(0)
            raise StorageUnavailableError("down")

        shared = [asyncio.create_task(cache.read_once("k", broken)) for _ in range(3)]
        outcomes = await asyncio.gather(*shared, return_exceptions=True)
        assert all(isinstance(o, StorageUnavailableError) for o in outcomes)

    asyncio.run(main())


def test_redis_invalidations_reach_the_listeners() -> None:
    hub = RedisHub("redis://127.0.0.1:1/0")  # never connected: only the parsing is tested
    seen: list[int] = []
    hub.on_invalidate(seen.append)
    hub._on_hint(b"x42")
    hub._on_hint(b"x+1")  # not canonical: ignored
    hub._on_hint(b"7:1")  # a mail hint: no invalidation
    assert seen == [42]


def test_a_node_pushes_committed_envelopes_without_reading_the_queue(
    client: TestClient, register: Register
) -> None:
    """The writer hands every committed envelope to the connected devices (SQLite and
    PostgreSQL alike): after the backlog read, delivery needs no queue read."""
    alice, bob = register("alice"), register("bob")
    state = client.app.state.tidings  # type: ignore[attr-defined]
    reads: list[int] = []
    real_pending = state.store.pending

    async def counting_pending(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return await real_pending(*args, **kwargs)

    state.store.pending = counting_pending
    with client.websocket_connect("/v1/websocket", headers=bob.auth) as b:
        opened(b)
        with client.websocket_connect("/v1/websocket", headers=alice.auth) as a:
            opened(a)
            after_backlog = len(reads)  # each connection's backlog
            for i in range(20):
                a.send_json(send_frame(bob, [outgoing(bob)], request_id=i))
            answers = [a.receive_json() for _ in range(20)]
        assert all(x["type"] == "send_result" for x in answers)
        ids = {m for x in answers for m in x["message_ids"]}
        got = [codec.decode(pb.Envelope, b64d(b.receive_json()["envelope"])) for _ in range(20)]
        assert {b64e(e.message_id) for e in got} == ids
        positions = [e.server_timestamp_ms for e in got]
        assert positions == sorted(positions)
        assert len(reads) == after_backlog  # bob's connection read nothing more


def test_an_overflowing_mailbox_is_read_from_the_queue() -> None:
    mailbox = Mailbox(complete=True)
    stored = [StoredEnvelope(1, 1, seq, bytes(16), b"e") for seq in range(MAX_PUSHED + 1)]
    for item in stored:
        mailbox.push(item)
    assert mailbox.overflowed and mailbox.is_set() and len(mailbox.pushed) < MAX_PUSHED
