"""Key transparency in cluster mode: two real nodes on one PostgreSQL schema (and one Redis)
publish one log between them — one publisher per epoch under the lease, the same KT key on
both (beside the shared franking key), a list submitted on one node served by the other, and
the auditor finding the same consistent log through either node."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.test_cluster import start_nodes, stop_nodes
from tests.server.test_kt_audit import Fetch
from tests.support.devices import register_account
from tests.support.live import LiveServer
from tidings.client.kt_audit import audit_log
from tidings.crypto.kt_device_list import sign_device_list
from tidings.wire.base64url import b64e


@pytest.fixture
def kt_nodes(
    tmp_path: Path, pg_schema: str, redis_url: str
) -> Iterator[tuple[LiveServer, LiveServer]]:
    started, schema = start_nodes(tmp_path, pg_schema, redis_url, kt_epoch_seconds=0.3)
    yield started[0], started[1]
    stop_nodes(started, schema)


def _epoch(url: str) -> int:
    r = httpx.get(f"{url}/v1/kt/head")
    return int(r.json()["epoch"]) if r.status_code == 200 else 0


def test_two_nodes_publish_one_log(kt_nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = kt_nodes
    http = httpx.Client(base_url=a.url)
    alice = register_account(http, "alice")
    signed = sign_device_list(
        "alice", 1, [(alice.device_id, alice.identity.public)], signer=alice.device_id,
        signer_key=alice.identity,
    )
    r = http.put("/v1/kt/device-list", json={"device_list": b64e(signed.encode())},
                 headers=alice.auth)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = httpx.get(f"{b.url}/v1/kt/lookup/alice").json().get("device_list")
        if found is not None and _epoch(a.url) >= 8:
            break
        time.sleep(0.1)
    assert found == b64e(signed.encode())  # submitted on a, served by b
    heads = {url: httpx.get(f"{url}/v1/kt/head/5").json() for url in (a.url, b.url)}
    assert heads[a.url] == heads[b.url]  # one key, one head per epoch
    for url in (a.url, b.url):
        result = audit_log(Fetch(url))
        assert result.failure is None and result.last >= 8, result.failure
    # About one epoch per interval between the two nodes, not one per node.
    first = _epoch(a.url)
    time.sleep(3)
    assert _epoch(a.url) - first <= 3 / 0.3 * 1.5
