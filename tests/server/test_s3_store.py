"""Attachments in S3 object storage, against a real S3 server (SeaweedFS, started for this
module by `tests.support.s3`): upload and download through the app (a single put and a
multipart upload), the size limit and truncated uploads leave no object and no part, expiry
and account deletion delete the objects, two nodes with no shared disk serve each other's
attachments, a reported attachment is verified from S3, an unreachable S3 is a 503, and the
configuration keeps the secret key to itself."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

import tidings.storage.s3
from tests.safety.test_http_api import Net
from tests.server.conftest import make_config
from tests.support.devices import DeviceKit
from tests.support.live import LiveServer, free_port
from tests.support.s3 import SeaweedS3, seaweed_s3
from tidings.app import build_attachment_store, create_app, purge_expired
from tidings.errors import AttachmentTooLargeError, StorageUnavailableError, TruncatedError
from tidings.safety.http import StoreAttachmentFetcher
from tidings.server.config import ConfigError, ServerConfig
from tidings.server.state import ServerState
from tidings.storage.blobs import LocalAttachmentStore
from tidings.storage.database import sqlite_url
from tidings.storage.s3 import PART_BYTES, S3AttachmentStore
from tidings.wire.base64url import b64e

OCTETS = {"Content-Type": "application/octet-stream"}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def bucket(s3: SeaweedS3) -> str:
    return s3.new_bucket()


@pytest.fixture
def s3_config(tmp_path: Path, s3: SeaweedS3, bucket: str) -> ServerConfig:
    return make_config(tmp_path / "data", **s3.settings(bucket))


@pytest.fixture
def client(s3_config: ServerConfig) -> Iterator[TestClient]:
    with TestClient(create_app(s3_config)) as test_client:
        yield test_client


def state_of(client: TestClient) -> ServerState:
    state: ServerState = client.app.state.tidings  # type: ignore[attr-defined]
    return state


def register(client: TestClient, username: str) -> DeviceKit:
    kit = DeviceKit()
    r = client.post("/v1/accounts", json={"username": username, "device": kit.device_keys()})
    assert r.status_code == 201, r.text
    kit.username, kit.device_id = username, r.json()["device_id"]
    return kit


def upload(client: TestClient, kit: DeviceKit, data: bytes) -> str:
    r = client.post("/v1/attachments", content=data, headers={**kit.auth, **OCTETS})
    assert r.status_code == 201, r.text
    attachment_id: str = r.json()["id"]
    return attachment_id


def local_files(config: ServerConfig) -> list[Path]:
    directory = config.data_dir / "attachments"
    return list(directory.iterdir()) if directory.exists() else []


def store_for(s3: SeaweedS3, bucket: str, **options: Any) -> S3AttachmentStore:
    settings = s3.settings(bucket)
    return S3AttachmentStore(
        bucket=bucket,
        endpoint_url=settings["s3_endpoint"],
        region=settings["s3_region"],
        access_key_id=settings["s3_access_key_id"],
        secret_access_key=settings["s3_secret_access_key"],
        **options,
    )


async def pieces(
    data: bytes, size: int, *, then: BaseException | None = None
) -> AsyncIterator[bytes]:
    """``data`` in chunks of ``size`` (as a request body arrives), then ``then`` raised."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
    if then is not None:
        raise then


def test_round_trip_single_put_and_multipart(
    client: TestClient, s3: SeaweedS3, bucket: str, s3_config: ServerConfig
) -> None:
    alice, bob = register(client, "alice"), register(client, "bob")
    small, large = os.urandom(300_000), os.urandom(PART_BYTES + 3 * MIB)  # one put; two parts
    ids = [upload(client, alice, small), upload(client, alice, large)]
    for attachment_id, data in zip(ids, (small, large), strict=True):
        got = client.get(f"/v1/attachments/{attachment_id}", headers=bob.auth)
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-length"] == str(len(data))
    assert s3.keys(bucket) == sorted(ids) and s3.pending_uploads(bucket) == []
    assert local_files(s3_config) == []  # nothing on the node's disk
    assert client.get(f"/v1/attachments/{'A' * 43}", headers=bob.auth).status_code == 404


def test_parts_are_bounded_and_a_limit_hit_mid_stream_leaves_nothing(
    s3: SeaweedS3, bucket: str
) -> None:
    store = store_for(s3, bucket, part_bytes=5 * MIB)
    sent: list[int] = []
    real_upload_part = store._client.upload_part

    def upload_part(**kwargs: Any) -> Any:
        sent.append(len(kwargs["Body"]))
        return real_upload_part(**kwargs)

    store._client.upload_part = upload_part  # type: ignore[method-assign]
    data = os.urandom(12 * MIB)

    async def put(limit: int) -> int:
        return await store.put("B" * 43, pieces(data, 64 * 1024), declared=len(data), limit=limit)

    with pytest.raises(AttachmentTooLargeError):
        anyio.run(put, 11 * MIB)  # two parts sent before the limit is passed
    assert sent == [5 * MIB, 5 * MIB]
    assert s3.keys(bucket) == [] and s3.pending_uploads(bucket) == []

    sent.clear()
    assert anyio.run(put, 12 * MIB) == len(data)
    assert sent == [5 * MIB, 5 * MIB, 2 * MIB]  # never more than one part held
    assert anyio.run(store.size, "B" * 43) == len(data)
    assert store.read("B" * 43) == data


@pytest.mark.parametrize("body_bytes", [100_000, 6 * MIB])  # before and after a part went out
def test_truncated_or_broken_uploads_leave_nothing(
    s3: SeaweedS3, bucket: str, body_bytes: int
) -> None:
    store = store_for(s3, bucket, part_bytes=5 * MIB)
    data = os.urandom(body_bytes)

    async def short() -> int:
        return await store.put("C" * 43, pieces(data, MIB), declared=8 * MIB, limit=10 * MIB)

    async def client_gone() -> int:
        gone = pieces(data, MIB, then=TruncatedError("the upload ended"))
        return await store.put("D" * 43, gone, declared=8 * MIB, limit=10 * MIB)

    for attempt in (short, client_gone):
        with pytest.raises(TruncatedError):
            anyio.run(attempt)
    assert s3.keys(bucket) == [] and s3.pending_uploads(bucket) == []


def test_a_client_gone_mid_upload_leaves_no_object(
    tmp_path: Path, s3: SeaweedS3, bucket: str
) -> None:
    config = make_config(tmp_path / "data", **s3.settings(bucket))
    server = LiveServer(config).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            kit = DeviceKit()
            r = http.post("/v1/accounts", json={"username": "alice", "device": kit.device_keys()})
            assert r.status_code == 201, r.text
            kit.username, kit.device_id = "alice", 1
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(
                    b"POST /v1/attachments HTTP/1.1\r\nHost: tidings\r\n"
                    b"Content-Type: application/octet-stream\r\n"
                    + f"Content-Length: {12 * MIB}\r\n".encode()
                    + f"Authorization: {kit.auth['Authorization']}\r\n\r\n".encode()
                    + b"x" * (PART_BYTES + MIB)  # one part on its way to S3, then gone
                )
            deadline = time.monotonic() + 30
            while 'tidings_errors_total{code="truncated"}' not in http.get("/metrics").text:
                assert time.monotonic() < deadline, "the broken upload was not answered"
                time.sleep(0.05)
            assert 'code="internal"' not in http.get("/metrics").text
    finally:
        server.stop()
    assert s3.keys(bucket) == [] and s3.pending_uploads(bucket) == []


def test_over_the_limit_is_413_and_stores_nothing(
    tmp_path: Path, s3: SeaweedS3, bucket: str
) -> None:
    config = make_config(tmp_path / "data", attachment_max_bytes=1000, **s3.settings(bucket))
    with TestClient(create_app(config)) as client:
        alice = register(client, "alice")
        big = client.post("/v1/attachments", content=b"x" * 1001, headers={**alice.auth, **OCTETS})
        assert big.status_code == 413 and big.json()["error"]["code"] == "attachment_too_large"
        assert s3.keys(bucket) == [] and s3.pending_uploads(bucket) == []
        fits = upload(client, alice, b"x" * 1000)
    assert s3.keys(bucket) == [fits]


def test_the_purge_deletes_expired_objects(client: TestClient, s3: SeaweedS3, bucket: str) -> None:
    alice = register(client, "alice")
    state = state_of(client)
    real_clock = state.clock
    state.clock = lambda: real_clock() - 31 * 24 * 3600 * 1000
    old = upload(client, alice, b"old")
    state.clock = real_clock
    fresh = upload(client, alice, b"new")
    assert s3.keys(bucket) == sorted([old, fresh])
    client.portal.call(purge_expired, state)  # type: ignore[union-attr]
    assert s3.keys(bucket) == [fresh]
    assert client.get(f"/v1/attachments/{fresh}", headers=alice.auth).status_code == 200


def test_account_deletion_deletes_its_objects(
    client: TestClient, s3: SeaweedS3, bucket: str
) -> None:
    alice, bob = register(client, "alice"), register(client, "bob")
    alices = [upload(client, alice, b"a1"), upload(client, alice, b"a2")]
    bobs = upload(client, bob, b"b1")
    assert client.delete("/v1/accounts/me", headers=alice.auth).status_code == 204
    assert s3.keys(bucket) == [bobs]
    assert client.get(f"/v1/attachments/{alices[0]}", headers=bob.auth).status_code == 404


def test_node_b_serves_what_node_a_stored(tmp_path: Path, s3: SeaweedS3, bucket: str) -> None:
    """Two nodes on one database and one bucket, each with a data directory of its own: no
    shared disk between them."""
    shared_db = tmp_path / "shared"
    shared_db.mkdir()
    key_file = tmp_path / "franking.key"
    nodes = [
        make_config(
            tmp_path / name,
            database_url=sqlite_url(shared_db),
            franking_key_file=key_file,
            node_name=name,
            **s3.settings(bucket),
        )
        for name in ("node-a", "node-b")
    ]
    with TestClient(create_app(nodes[0])) as a, TestClient(create_app(nodes[1])) as b:
        alice = register(a, "alice")
        bob = register(b, "bob")
        data = os.urandom(PART_BYTES + 1000)
        attachment_id = upload(a, alice, data)
        got = b.get(f"/v1/attachments/{attachment_id}", headers=bob.auth)
        assert got.status_code == 200 and got.content == data
        assert local_files(nodes[0]) == [] and local_files(nodes[1]) == []
        # The deletion on B removes what A stored.
        assert b.delete("/v1/accounts/me", headers=alice.auth).status_code == 204
        assert s3.keys(bucket) == []


def test_a_reported_attachment_is_verified_from_s3(
    client: TestClient, s3_config: ServerConfig, s3: SeaweedS3, bucket: str
) -> None:
    net = Net(client, s3_config)
    alice, bob = net.register("alice"), net.register("bob")
    pointer = net.upload(alice, b"\x89PNG real image bytes" * 20)
    assert s3.keys(bucket) == [pointer.id]
    item = net.send(alice, bob, "look", attachments=(pointer,))
    r = net.report(bob, [item], attachments=[{"item": 0, "pointer": 0, "key": b64e(pointer.key)}])
    assert r.status_code == 201, r.text
    kinds = {e.kind for e in net.safety.evidence_repo.evidence_for_report(r.json()["report_id"])}
    assert "attachment:0:0" in kinds
    fetcher = StoreAttachmentFetcher(state_of(client).attachments)
    assert fetcher.fetch("A" * 43) is None and fetcher.fetch("../" + "A" * 40) is None


def unreachable_store(bucket: str) -> S3AttachmentStore:
    """A store whose endpoint is a closed local port (S3 down)."""
    return S3AttachmentStore(
        bucket=bucket,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="k",
        secret_access_key="never-shown",
    )


def test_s3_unreachable_is_503_never_500(
    client: TestClient, s3_config: ServerConfig, bucket: str
) -> None:
    net = Net(client, s3_config)
    alice, bob = net.register("alice"), net.register("bob")
    pointer = net.upload(alice, b"\x89PNG real image bytes" * 20)
    item = net.send(alice, bob, "look", attachments=(pointer,))
    stored = pointer.id
    state = state_of(client)
    account = client.portal.call(state.store.account_id, alice.username)  # type: ignore[union-attr]

    def used_bytes() -> int:
        used: int = client.portal.call(  # type: ignore[union-attr]
            state.store.attachment_bytes, account, state.clock()
        )
        return used

    stored_bytes = used_bytes()
    assert stored_bytes > 0
    # S3 goes down: the one store object the routes and the safety side share loses it.
    state.attachments._client = unreachable_store(bucket)._client  # type: ignore[attr-defined]
    before = net.counts()
    reveal = [{"item": 0, "pointer": 0, "key": b64e(pointer.key)}]
    reported = net.report(bob, [item], attachments=reveal)
    assert reported.status_code == 503, reported.text
    assert reported.json()["error"]["code"] == "storage_unavailable"
    assert net.counts() == before  # nothing of the report stored; it can be sent again
    refused = client.post("/v1/attachments", content=b"abc", headers={**alice.auth, **OCTETS})
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "storage_unavailable"
    assert "never-shown" not in refused.text and "127.0.0.1" not in refused.text
    got = client.get(f"/v1/attachments/{stored}", headers=alice.auth)
    assert got.status_code == 503 and got.json()["error"]["code"] == "storage_unavailable"
    with pytest.raises(StorageUnavailableError):
        StoreAttachmentFetcher(state.attachments).fetch(stored)
    # Nothing was recorded for the refused upload: the quota counts only the stored one.
    assert used_bytes() == stored_bytes


def test_wrong_credentials_are_503_without_the_secret(
    tmp_path: Path, s3: SeaweedS3, bucket: str
) -> None:
    settings = {**s3.settings(bucket), "s3_secret_access_key": "wrong-secret-value"}
    with TestClient(create_app(make_config(tmp_path / "data", **settings))) as client:
        alice = register(client, "alice")
        r = client.post("/v1/attachments", content=b"abc", headers={**alice.auth, **OCTETS})
    assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
    assert "wrong-secret-value" not in r.text


def test_stale_multipart_uploads_are_aborted(
    s3: SeaweedS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_for(s3, bucket)
    s3.client().create_multipart_upload(Bucket=bucket, Key="E" * 43)  # a node crashed here
    assert anyio.run(store.remove_orphans) == 0  # just started: perhaps still uploading
    assert s3.pending_uploads(bucket) == ["E" * 43]
    monkeypatch.setattr(tidings.storage.s3, "ORPHAN_PARTIAL_AGE_S", -60.0)  # now "an hour ago"
    assert anyio.run(store.remove_orphans) == 1
    assert s3.pending_uploads(bucket) == []


def test_configuration_from_the_environment_and_the_storage_table(tmp_path: Path) -> None:
    env = {
        "TIDINGS_S3_ENDPOINT": "http://127.0.0.1:8333",
        "TIDINGS_S3_BUCKET": "attachments",
        "TIDINGS_S3_REGION": "eu-central-1",
        "TIDINGS_S3_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "TIDINGS_S3_SECRET_ACCESS_KEY": "secret-from-env",
    }
    config = ServerConfig.load(env=env)
    assert (config.s3_endpoint, config.s3_bucket, config.s3_region) == (
        "http://127.0.0.1:8333",
        "attachments",
        "eu-central-1",
    )
    assert config.s3_access_key_id == "AKIDEXAMPLE"
    assert config.s3_secret_access_key == "secret-from-env"
    assert "secret-from-env" not in repr(config)
    store = build_attachment_store(config, tmp_path / "unused")
    assert isinstance(store, S3AttachmentStore) and "secret-from-env" not in repr(store)

    toml = tmp_path / "server.toml"
    toml.write_text(
        '[server]\nport = 9000\n\n[storage]\ns3_bucket = "from-file"\n'
        's3_secret_access_key = "secret-from-file"\n',
        encoding="utf-8",
    )
    from_file = ServerConfig.load(toml, env={})
    assert (from_file.port, from_file.s3_bucket) == (9000, "from-file")
    assert from_file.s3_secret_access_key == "secret-from-file"
    overridden = ServerConfig.load(toml, env={"TIDINGS_S3_BUCKET": "from-env"})
    assert overridden.s3_bucket == "from-env"

    toml.write_text('[storage]\nport = 1\ns3_secret_access_key = "leak"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        ServerConfig.load(toml, env={})
    assert "leak" not in str(refused.value)
    # The embedded default stays on local disk.
    local = build_attachment_store(ServerConfig.load(env={}), tmp_path / "attachments")
    assert isinstance(local, LocalAttachmentStore) and local.directory == tmp_path / "attachments"
