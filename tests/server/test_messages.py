"""Messages: multi-device send with device-list checks, franking tags, durable queue, pull
and acknowledge, queue limits, rate limits — and nothing stored on any rejection."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import count_rows
from tests.support.app import make_config
from tests.support.devices import DeviceKit, outgoing
from tidings.app import create_app
from tidings.crypto.franking import FrankingTagInput, verify_franking_tag
from tidings.errors import InvalidKeyError
from tidings.server.config import ServerConfig
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e

Register = Callable[..., DeviceKit]
Link = Callable[..., DeviceKit]


def queued(config: ServerConfig) -> int:
    return count_rows(config, "messages")


def pull(client: TestClient, device: DeviceKit) -> list[pb.Envelope]:
    response = client.get("/v1/messages", headers=device.auth)
    assert response.status_code == 200, response.text
    return [codec.decode(pb.Envelope, b64d(e)) for e in response.json()["envelopes"]]


def test_send_to_every_device_with_franking_tags(
    client: TestClient, register: Register, link: Link, config: ServerConfig
) -> None:
    alice, bob = register("alice"), register("bob")
    bob_phone = link(bob)
    sent_body = outgoing(bob, marker=b"hello")
    body = {"messages": [sent_body, outgoing(bob_phone)]}
    response = client.put(f"/v1/messages/{bob.username}", json=body, headers=alice.auth)
    assert response.status_code == 200, response.text
    result = response.json()
    assert len(result["message_ids"]) == 2 and len(set(result["message_ids"])) == 2
    assert all(len(b64d(m)) == 16 for m in result["message_ids"])
    franking_key = (config.data_dir / "franking.key").read_bytes()
    for device, message_id in zip((bob, bob_phone), result["message_ids"], strict=True):
        [envelope] = pull(client, device)
        assert (envelope.sender, envelope.sender_device) == (alice.username, alice.device_id)
        assert (envelope.recipient, envelope.recipient_device) == (bob.username, device.device_id)
        assert envelope.server_timestamp_ms == result["server_timestamp_ms"]
        assert b64e(envelope.message_id) == message_id
        assert envelope.type == pb.Envelope.RATCHET
        verify_franking_tag(
            franking_key, FrankingTagInput.from_envelope(envelope), envelope.franking_tag
        )
    [first] = pull(client, bob)
    assert first.body == b64d(sent_body["body"]) and first.commitment == b64d(
        sent_body["commitment"]
    )


def test_franking_key_file_is_private_and_stable(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with TestClient(create_app(config)):
        pass
    path = config.data_dir / "franking.key"
    key = path.read_bytes()
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    with TestClient(create_app(config)):
        pass
    assert path.read_bytes() == key  # not regenerated on restart
    # A configured key file is used as is; a malformed one refuses to start.
    custom = tmp_path / "custom.key"
    custom.write_bytes(b"k" * 31)
    with pytest.raises(InvalidKeyError, match="32 bytes"):
        create_app(make_config(tmp_path / "other", franking_key_file=custom))


def test_mismatched_and_stale_devices(
    client: TestClient, register: Register, link: Link, config: ServerConfig
) -> None:
    alice, bob = register("alice"), register("bob")
    phone = link(bob)
    url = f"/v1/messages/{bob.username}"
    missing = client.put(url, json={"messages": [outgoing(bob)]}, headers=alice.auth)
    assert missing.status_code == 409
    assert missing.json()["error"] | {"message": ""} == {
        "code": "mismatched_devices",
        "message": "",
        "missing": [2],
        "extra": [],
    }
    extra = client.put(
        url, json={"messages": [outgoing(bob), outgoing(phone), outgoing(7, 1)]}, headers=alice.auth
    )
    assert extra.status_code == 409 and extra.json()["error"]["extra"] == [7]
    stale = client.put(
        url, json={"messages": [outgoing(bob), outgoing(phone, 999)]}, headers=alice.auth
    )
    assert stale.status_code == 410
    assert stale.json()["error"]["code"] == "stale_devices" and stale.json()["error"]["stale"] == [
        2
    ]
    twice = client.put(url, json={"messages": [outgoing(bob), outgoing(bob)]}, headers=alice.auth)
    assert twice.status_code == 400
    assert queued(config) == 0


def test_sync_to_own_other_devices(client: TestClient, register: Register, link: Link) -> None:
    alice = register("alice")
    phone = link(alice)
    url = f"/v1/messages/{alice.username}"
    # The sending device itself must not be listed.
    wrong = client.put(
        url, json={"messages": [outgoing(alice), outgoing(phone)]}, headers=alice.auth
    )
    assert wrong.status_code == 409 and wrong.json()["error"]["extra"] == [1]
    assert (
        client.put(url, json={"messages": [outgoing(phone)]}, headers=alice.auth).status_code == 200
    )
    [envelope] = pull(client, phone)
    assert envelope.sender_device == 1 and envelope.recipient_device == 2
    assert pull(client, alice) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.update(body="!!!"),
        lambda m: m.update(body=b64e(b"\xff\xfe not protobuf")),
        lambda m: m.update(body=b64e(codec.encode(pb.RatchetMessage(version=1, header=b"x")))),
        lambda m: m.update(commitment=b64e(b"short")),
        lambda m: m.update(type=9),
        lambda m: m.update(type=pb.Envelope.PREKEY),  # a ratchet body is not a prekey message
        lambda m: m.pop("commitment"),
        lambda m: m.update(body=b64e(os.urandom(97 * 1024))),
    ],
)
def test_malformed_messages_are_400_and_nothing_is_queued(
    client: TestClient,
    register: Register,
    config: ServerConfig,
    mutate: Callable[[dict[str, object]], None],
) -> None:
    alice, bob = register("alice"), register("bob")
    good, bad = outgoing(bob), outgoing(bob)
    mutate(bad)
    # Even in a batch for several devices, one bad entry refuses the whole send.
    response = client.put(
        f"/v1/messages/{bob.username}", json={"messages": [bad]}, headers=alice.auth
    )
    # Every mutation here, the over-long body included, is one answer: 400 malformed.
    assert (response.status_code, response.json()["error"]["code"]) == (400, "malformed")
    assert queued(config) == 0
    assert (
        client.put(
            f"/v1/messages/{bob.username}", json={"messages": [good]}, headers=alice.auth
        ).status_code
        == 200
    )


def test_send_failures_without_effects(
    client: TestClient, register: Register, config: ServerConfig
) -> None:
    alice = register("alice")
    unknown = client.put("/v1/messages/nobody", json={"messages": []}, headers=alice.auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_account"
    assert client.put("/v1/messages/nobody", json={"messages": []}).status_code == 401
    not_json = client.put(
        f"/v1/messages/{alice.username}",
        content=b"[1,2",
        headers={**alice.auth, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400
    assert queued(config) == 0


def test_pull_pages_oldest_first_and_ack_is_idempotent(
    client: TestClient, register: Register
) -> None:
    alice, bob = register("alice"), register("bob")
    ids = []
    for _ in range(105):
        response = client.put(
            f"/v1/messages/{bob.username}", json={"messages": [outgoing(bob)]}, headers=alice.auth
        )
        ids.append(response.json()["message_ids"][0])
    first = client.get("/v1/messages", headers=bob.auth).json()
    assert len(first["envelopes"]) == 100 and first["more"] is True
    got = [b64e(codec.decode(pb.Envelope, b64d(e)).message_id) for e in first["envelopes"]]
    assert got == ids[:100]
    # Not acknowledged: the same page again (at-least-once).
    assert client.get("/v1/messages", headers=bob.auth).json()["envelopes"] == first["envelopes"]
    for message_id in got:
        assert client.delete(f"/v1/messages/{message_id}", headers=bob.auth).status_code == 204
    assert client.delete(f"/v1/messages/{got[0]}", headers=bob.auth).status_code == 204
    rest = client.get("/v1/messages", headers=bob.auth).json()
    assert rest["more"] is False
    assert [b64e(codec.decode(pb.Envelope, b64d(e)).message_id) for e in rest["envelopes"]] == ids[
        100:
    ]
    # Acknowledging someone else's message id does nothing to their queue.
    assert client.delete(f"/v1/messages/{ids[100]}", headers=alice.auth).status_code == 204
    assert len(pull(client, bob)) == 5
    assert client.delete("/v1/messages/%%%", headers=bob.auth).status_code == 400
    assert client.delete("/v1/messages/" + b64e(bytes(40)), headers=bob.auth).status_code == 400


def test_queue_limit_is_507_and_atomic(tmp_path: Path) -> None:
    config = make_config(tmp_path, queue_limit=2)
    with TestClient(create_app(config)) as client:
        kits = {}
        for name in ("alice", "bob"):
            kit = DeviceKit()
            assert (
                client.post(
                    "/v1/accounts", json={"username": name, "device": kit.device_keys()}
                ).status_code
                == 201
            )
            kit.username, kit.device_id = name, 1
            kits[name] = kit
        alice, bob = kits["alice"], kits["bob"]
        for _ in range(2):
            assert (
                client.put(
                    "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
                ).status_code
                == 200
            )
        full = client.put(
            "/v1/messages/bob", json={"messages": [outgoing(bob)]}, headers=alice.auth
        )
        assert full.status_code == 507 and full.json()["error"]["code"] == "queue_full"
        assert queued(config) == 2


def test_expired_messages_are_not_delivered(client: TestClient, register: Register) -> None:
    alice, bob = register("alice"), register("bob")
    state = client.app.state.tidings  # type: ignore[attr-defined]
    real_clock = state.clock
    state.clock = lambda: real_clock() - 31 * 24 * 3600 * 1000  # sent 31 days ago
    assert (
        client.put(
            f"/v1/messages/{bob.username}", json={"messages": [outgoing(bob)]}, headers=alice.auth
        ).status_code
        == 200
    )
    state.clock = real_clock
    assert pull(client, bob) == []


def test_send_rate_limit_per_account(tmp_path: Path) -> None:
    config = make_config(tmp_path, rate_sends_per_minute=3)
    with TestClient(create_app(config)) as client:
        kits = {}
        for name in ("alice", "bob"):
            kit = DeviceKit()
            client.post("/v1/accounts", json={"username": name, "device": kit.device_keys()})
            kit.username, kit.device_id = name, 1
            kits[name] = kit
        body = {"messages": [outgoing(kits["bob"])]}
        codes = [
            client.put("/v1/messages/bob", json=body, headers=kits["alice"].auth).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        assert queued(config) == 3
        # Another account has its own budget.
        other = {"messages": [outgoing(kits["alice"])]}
        assert (
            client.put("/v1/messages/alice", json=other, headers=kits["bob"].auth).status_code
            == 200
        )
