"""Operations: health, metrics (no content, keys or credentials), structured logs, the error
shape of unknown routes, prekey-fetch rate limits, and a scan of everything the server wrote
after a conversation for the client's plaintexts and secrets."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.app import make_config
from tests.support.devices import DeviceKit, outgoing
from tidings.app import create_app
from tidings.server.config import ServerConfig
from tidings.server.logs import JsonFormatter
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64e

Register = Callable[..., DeviceKit]


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything the `tidings` loggers write during the test, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tidings")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_health_and_unknown_routes(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = client.post("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_prekey_fetch_rate_limit(tmp_path: Path) -> None:
    config = make_config(tmp_path, rate_prekey_fetches_per_minute=2)
    with TestClient(create_app(config)) as client:
        alice = DeviceKit()
        client.post("/v1/accounts", json={"username": "alice", "device": alice.device_keys()})
        alice.username, alice.device_id = "alice", 1
        codes = [client.get("/v1/keys/alice", headers=alice.auth).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        # The refused fetch claimed nothing.
        assert client.get("/v1/keys/count", headers=alice.auth).json()["one_time"] == 1


@pytest.mark.sqlite_only  # scans the SQLite files in the data directory
def test_nothing_secret_is_stored_logged_or_measured(
    client: TestClient, register: Register, config: ServerConfig, log_lines: io.StringIO
) -> None:
    alice, bob = register("alice"), register("bob")
    plaintext = b"MARKER-PLAINTEXT-" + os.urandom(8).hex().encode()
    pad = os.urandom(len(plaintext))  # the client's message key, never sent
    ciphertext = bytes(a ^ b for a, b in zip(plaintext, pad, strict=True))
    body = outgoing(bob)
    body["body"] = b64e(
        codec.encode(
            pb.RatchetMessage(
                version=1,
                header=os.urandom(40),
                ciphertext=ciphertext.ljust(48, b"\0") + os.urandom(32),
            )
        )
    )
    assert (
        client.put(
            f"/v1/messages/{bob.username}", json={"messages": [body]}, headers=alice.auth
        ).status_code
        == 200
    )
    upload = os.urandom(16) + plaintext  # the attachment's plaintext is encrypted client side
    encrypted_upload = bytes(a ^ b for a, b in zip(upload, os.urandom(len(upload)), strict=True))
    assert (
        client.post(
            "/v1/attachments",
            content=encrypted_upload,
            headers={**alice.auth, "Content-Type": "application/octet-stream"},
        ).status_code
        == 201
    )
    client.get("/v1/messages", headers=bob.auth)
    client.get(f"/v1/keys/{bob.username}", headers=alice.auth)
    client.get("/v1/devices", headers=bob.auth, params={"x": "1"})
    client.get("/v1/devices", headers={"Authorization": "Basic " + b64e(b"bob.1:" + bob.secret)})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "tidings_http_requests_total" in metrics.text
    assert "tidings_envelopes_queued_total 1.0" in metrics.text

    secrets: dict[str, bytes] = {"plaintext": plaintext, "message key": pad}
    for who, kit in (("alice", alice), ("bob", bob)):
        secrets[f"{who} device secret"] = kit.secret
        secrets[f"{who} device secret b64"] = b64e(kit.secret).encode()
        private = kit.identity.to_bytes()  # format byte, Ed25519 seed, X25519 private key
        secrets[f"{who} identity signing seed"] = private[1:33]
        secrets[f"{who} identity agreement key"] = private[33:65]
        signed_id = kit.prekeys.signed_prekey.id
        secrets[f"{who} signed prekey"] = kit.prekeys.find_signed_prekey(signed_id).private
        for key in kit.prekeys.one_time_prekeys:
            secrets[f"{who} one-time prekey {key.id}"] = kit.prekeys.find_one_time_prekey(
                key.id
            ).private
    written = b"".join(
        p.read_bytes()
        for p in config.data_dir.rglob("*")
        if p.is_file() and p.name != "franking.key"
    )
    texts = {
        "stored data": written,
        "logs": log_lines.getvalue().encode(),
        "metrics": metrics.content,
    }
    for where, blob in texts.items():
        for what, secret in secrets.items():
            assert secret not in blob, f"{what} found in {where}"
    # Sanity: the scan sees what the server is meant to hold (the ciphertext)...
    assert ciphertext in written
    # ...and the logs are JSON lines naming route templates, not raw paths.
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    routes = {line.get("route") for line in lines}
    assert "/v1/messages/{username}" in routes
    assert alice.username not in log_lines.getvalue() and bob.username not in log_lines.getvalue()
    assert alice.username not in metrics.text


def test_chunked_bodies_are_limited_too(client: TestClient, register: Register) -> None:
    alice = register("alice")

    def chunks(total: int) -> Iterator[bytes]:  # a generator body goes out chunked
        yield b'{"messages": ['
        sent = 0
        while sent < total:
            yield b" " * 65536
            sent += 65536
        yield b"]}"

    headers = {**alice.auth, "Content-Type": "application/json"}
    huge = client.put(f"/v1/messages/{alice.username}", content=chunks(3 << 20), headers=headers)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "oversized"
    # A small chunked body is replayed to the route intact.
    small = client.put(f"/v1/messages/{alice.username}", content=chunks(1), headers=headers)
    assert small.status_code == 409 and small.json()["error"]["code"] == "mismatched_devices"


def test_unexpected_errors_are_500_without_details(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    app = create_app(config)
    with TestClient(app, raise_server_exceptions=False) as client:
        state = app.state.tidings

        async def broken(*_: object) -> None:
            raise RuntimeError("secret detail from deep inside")

        state.store.account_id = broken
        alice = DeviceKit()
        client.post("/v1/accounts", json={"username": "alice", "device": alice.device_keys()})
        alice.username, alice.device_id = "alice", 1
        response = client.get("/v1/accounts/alice/devices", headers=alice.auth)
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal"
        assert "secret detail" not in response.text
