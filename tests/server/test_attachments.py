"""Attachments: streamed upload with Content-Length and a size limit, unguessable ids,
download, expiry; nothing kept on any rejection."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from tests.support.app import make_config
from tests.support.devices import DeviceKit
from tests.support.live import LiveServer
from tidings.app import create_app, purge_expired
from tidings.server.config import ServerConfig

Register = Callable[..., DeviceKit]
OCTETS = {"Content-Type": "application/octet-stream"}


def stored_files(config: ServerConfig) -> list[Path]:
    return list((config.data_dir / "attachments").iterdir())


def test_upload_and_download(client: TestClient, register: Register, config: ServerConfig) -> None:
    alice, bob = register("alice"), register("bob")
    data = os.urandom(300_000)
    created = client.post("/v1/attachments", content=data, headers={**alice.auth, **OCTETS})
    assert created.status_code == 201, created.text
    attachment_id = created.json()["id"]
    assert len(attachment_id) == 43 and created.json()["expires_at_ms"] > 0
    # Any authenticated device holding the id (the capability) can download it.
    got = client.get(f"/v1/attachments/{attachment_id}", headers=bob.auth)
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "application/octet-stream"
    assert client.get(f"/v1/attachments/{attachment_id}").status_code == 401
    assert [p.name for p in stored_files(config)] == [attachment_id]


def test_unknown_and_odd_ids_are_404(client: TestClient, register: Register) -> None:
    alice = register("alice")
    for attachment_id in ("A" * 43, "x" * 44, "franking.key"):
        response = client.get(f"/v1/attachments/{attachment_id}", headers=alice.auth)
        assert response.status_code == 404, attachment_id
        assert response.json()["error"]["code"] == "unknown_attachment", attachment_id
    # These resolve to another path before routing (/v1/, /v1/franking.key): no route at all.
    for attachment_id in ("..", "..%2Ffranking.key"):
        response = client.get(f"/v1/attachments/{attachment_id}", headers=alice.auth)
        assert response.status_code == 404, attachment_id
        assert response.json()["error"]["code"] == "not_found", attachment_id


def test_oversized_upload_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, attachment_max_bytes=1000)
    with TestClient(create_app(config)) as client:
        alice = DeviceKit()
        client.post("/v1/accounts", json={"username": "alice", "device": alice.device_keys()})
        alice.username, alice.device_id = "alice", 1
        big = client.post("/v1/attachments", content=b"x" * 1001, headers={**alice.auth, **OCTETS})
        assert big.status_code == 413 and big.json()["error"]["code"] == "attachment_too_large"
        fits = client.post("/v1/attachments", content=b"x" * 1000, headers={**alice.auth, **OCTETS})
        assert fits.status_code == 201
        assert len(stored_files(config)) == 1


def test_content_length_is_required(
    client: TestClient, register: Register, config: ServerConfig
) -> None:
    alice = register("alice")

    def chunks() -> Iterator[bytes]:  # a generator body is sent chunked, without a length
        yield b"abc"
        yield b"def"

    response = client.post("/v1/attachments", content=chunks(), headers={**alice.auth, **OCTETS})
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed"
    assert stored_files(config) == []
    assert client.post("/v1/attachments", content=b"abc", headers=OCTETS).status_code == 401


def test_expired_attachments_are_gone(
    client: TestClient, register: Register, config: ServerConfig
) -> None:
    alice = register("alice")
    state = client.app.state.tidings  # type: ignore[attr-defined]
    real_clock = state.clock
    state.clock = lambda: real_clock() - 31 * 24 * 3600 * 1000
    old = client.post("/v1/attachments", content=b"old", headers={**alice.auth, **OCTETS}).json()[
        "id"
    ]
    state.clock = real_clock
    fresh = client.post("/v1/attachments", content=b"new", headers={**alice.auth, **OCTETS}).json()[
        "id"
    ]
    assert client.get(f"/v1/attachments/{old}", headers=alice.auth).status_code == 404
    # The periodic purge deletes the expired record and its file, and nothing else.
    client.portal.call(purge_expired, state)  # type: ignore[union-attr]
    assert [p.name for p in stored_files(config)] == [fresh]
    assert client.get(f"/v1/attachments/{fresh}", headers=alice.auth).status_code == 200


def test_a_client_gone_mid_upload_is_a_typed_error_and_leaves_nothing(
    live_server: LiveServer, config: ServerConfig
) -> None:
    """A mobile client that loses its connection mid-body: no 500, no "unhandled error" in the
    log or the metrics, no file kept (it was a 500 from starlette's ClientDisconnect)."""
    with httpx.Client(base_url=live_server.url) as http:
        kit = DeviceKit(one_time=1, kem=1)
        created = http.post("/v1/accounts", json={"username": "alice", "device": kit.device_keys()})
        assert created.status_code == 201, created.text
        kit.username, kit.device_id = "alice", 1
        authorization = kit.auth["Authorization"]
        with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
            sock.sendall(
                b"POST /v1/attachments HTTP/1.1\r\nHost: tidings\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n"
                + f"Authorization: {authorization}\r\n\r\n".encode()
                + b"x" * 1000
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            metrics = http.get("/metrics").text
            if 'tidings_errors_total{code="truncated"}' in metrics:
                break
            time.sleep(0.05)
        assert 'tidings_errors_total{code="truncated"} 1.0' in metrics
        assert 'code="internal"' not in metrics
    assert stored_files(config) == []
