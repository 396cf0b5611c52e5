"""The attack key transparency exists for (issue 12), on a real uvicorn node with real clients:

(a) a malicious server inserts a device into alice's account straight into its database:
    alice's own device raises the alert within one epoch, and her contacts' clients refuse to
    encrypt to the ghost, name it, and show it on the conversation's banner;
(b) the server shows one client a forked directory (a head over another root, re-signed with
    its own ``kt_signing.key``): the client's head check refuses it as ``kt_epoch_fork``, and
    the auditor behind ``tidings audit kt`` reports ``kt_epoch_fork``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clients import PASS, register, run
from tests.support.kt import wait_published
from tests.support.live import LiveServer
from tidings.client.sdk import Client
from tidings.client.transport import Transport
from tidings.client.tui import key_transparency_lines, kt_event_lines
from tidings.crypto import primitives as p
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.kt_proofs import EpochHead, decode_head
from tidings.errors import EpochForkError, UnvouchedDeviceError
from tidings.server.config import ServerConfig
from tidings.storage.files import KT_SIGNING_KEY_FILE
from tidings.wire import codec
from tidings.wire.base64url import b64d, b64e

GHOST = 77


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    data_dir = tmp_path_factory.mktemp("ghost")
    config = ServerConfig(
        data_dir=data_dir, rate_registrations_per_hour=100_000, kt_epoch_seconds=0.5
    )
    server = LiveServer(config).start()
    yield server, data_dir
    server.stop()


def insert_ghost(data_dir: Path, username: str) -> int:
    """What a malicious server does: a device of its own, with valid prekeys, straight into
    the devices table (no link code, no signature of any device of the account)."""
    identity = IdentityKeyPair.generate()
    prekeys = DevicePrekeys.generate(identity, now_ms=1, one_time_count=1, kem_count=1)
    with sqlite3.connect(data_dir / "tidings.db") as db:
        (account_id,) = db.execute(
            "SELECT id FROM accounts WHERE username = ?", (username,)
        ).fetchone()
        db.execute(
            "INSERT INTO devices (account_id, device_id, name, registration_id, identity_key,"
            " credential_hash, signed_prekey, last_resort_kem_prekey, created_at_ms,"
            " last_seen_ms) VALUES (?, ?, 'ghost', 4242, ?, ?, ?, ?, 1, 1)",
            (
                account_id, GHOST, identity.public.encode(), secrets.token_bytes(32),
                codec.encode(prekeys.signed_prekey.to_wire()),
                codec.encode(prekeys.last_resort_kem_prekey.to_wire()),
            ),
        )
    return int(account_id)


def test_a_ghost_device_is_alerted_on_and_refused(
    node: tuple[LiveServer, Path], tmp_path: Path
) -> None:
    server, data_dir = node

    async def main() -> None:
        alice = await register(tmp_path, "alice", "alice", server.url)
        bob = await register(tmp_path, "bob", "bob", server.url)
        await wait_published(bob, "alice", alice.account.device_id)
        await bob.send_text("alice", "before the ghost")
        assert (await alice.kt_sync())["alerts"] == []

        account_id = insert_ghost(data_dir, "alice")
        # ... and, as it would, drops the node's cached device list of the account.
        server.app.state.tidings.hub.invalidate_local(account_id)

        # Alice's own device: at its next check (status, poll) the ghost is an alert.
        status = await alice.kt_sync()
        [alert] = status["alerts"]
        assert alert["code"] == "kt_unvouched_device" and alert["device_id"] == GHOST
        [line] = key_transparency_lines({"key_transparency": status})
        assert f"device {GHOST}" in line and "without a link code" in line
        assert status["device_list_version"] == 1  # her device did not sign it in

        # A new contact: the ghost's bundle is fetched, refused before any PQXDH, named.
        carol = await register(tmp_path, "carol", "carol", server.url)
        with pytest.raises(UnvouchedDeviceError) as refused:
            await carol.send_text("alice", "must not reach the ghost")
        assert refused.value.device_ids == (GHOST,) and f"device {GHOST}" in refused.value.message
        assert kt_event_lines("alice", carol.trust_events("alice")) == [
            f"⚠ Device {GHOST} of alice is not in alice's signed device list: nothing is "
            "encrypted to it (key transparency)."]
        # A contact with a session already: the server asks for the ghost, which is refused.
        with pytest.raises(UnvouchedDeviceError):
            await bob.send_text("alice", "nor this")
        # Groups go the same way: the member's account is refused, the others are reached.
        dave = await register(tmp_path, "dave", "dave", server.url)
        await wait_published(carol, "dave", dave.account.device_id)
        group = await carol.create_group("picnic", ["alice", "dave"])
        assert group.failed == {"alice": "unvouched_device"} and group.delivered == ("dave",)
        received = [e.message.body for e in await alice.poll() if e.message is not None]
        assert received == ["before the ghost"]  # nothing of the refused sends arrived
        for c in (alice, bob, carol, dave):
            await c.aclose()

    run(main())


class ForkingProxy(httpx.AsyncBaseTransport):
    """Between one client and the real node: ``GET /v1/kt/head`` answers a head of the same
    epoch over another root, signed with the node's own KT key (a forked view)."""

    def __init__(self, signing_key: bytes) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.signing_key = signing_key
        self.forked = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != "/v1/kt/head" or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        honest = decode_head(b64d(body["server_key"]), b64d(body["head"]))
        unsigned = EpochHead(honest.epoch, secrets.token_bytes(32), honest.time_ms,
                             honest.previous, b"")
        forged = EpochHead(unsigned.epoch, unsigned.root, unsigned.time_ms, unsigned.previous,
                           p.ed25519_sign(self.signing_key, unsigned.body()))
        body["head"], body["root"] = b64e(forged.encode()), b64e(forged.root)
        self.forked += 1
        return httpx.Response(200, json=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_forked_head_is_refused_as_a_fork(
    node: tuple[LiveServer, Path], tmp_path: Path
) -> None:
    server, data_dir = node

    async def main() -> None:
        dave = await register(tmp_path, "dave", "erin", server.url)
        await wait_published(dave, "erin", dave.account.device_id)
        await dave.kt_sync()  # the honest head is pinned and verified
        await dave.aclose()

        proxy = ForkingProxy((data_dir / KT_SIGNING_KEY_FILE).read_bytes())
        http = httpx.AsyncClient(base_url=server.url, transport=proxy)
        forked = Client.open(tmp_path / "dave", PASS, transport=Transport(server.url, http=http))
        with pytest.raises(EpochForkError):
            await forked.kt_sync()
        assert proxy.forked == 1
        assert forked.kt_alerts()[-1]["code"] == "kt_epoch_fork"
        await forked.aclose()
        await http.aclose()

    run(main())


class _ForkingFetch:
    """The auditor's HTTP (`kt_audit.Fetch`) through the same forked view: the newest head
    served at ``/v1/kt/head`` is re-signed over another root."""

    def __init__(self, url: str, signing_key: bytes) -> None:
        self.http = httpx.Client(base_url=url)
        self.signing_key = signing_key

    def get(self, path: str) -> tuple[int, Any]:
        response = self.http.get(path)
        body = response.json()
        if path == "/v1/kt/head" and response.status_code == 200:
            honest = decode_head(b64d(body["server_key"]), b64d(body["head"]))
            unsigned = EpochHead(honest.epoch, secrets.token_bytes(32), honest.time_ms,
                                 honest.previous, b"")
            forged = EpochHead(unsigned.epoch, unsigned.root, unsigned.time_ms,
                               unsigned.previous, p.ed25519_sign(self.signing_key,
                                                                 unsigned.body()))
            body["head"] = b64e(forged.encode())
        return response.status_code, body

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = self.http.post(path, json=body)
        return response.status_code, response.json()


def test_the_auditor_reports_the_forked_head(node: tuple[LiveServer, Path]) -> None:
    from tidings.client.kt_audit import audit_log

    server, data_dir = node
    fetch = _ForkingFetch(server.url, (data_dir / KT_SIGNING_KEY_FILE).read_bytes())
    try:
        result = audit_log(fetch)
    finally:
        fetch.http.close()
    assert result.failure is not None and result.failure.code == "kt_epoch_fork"

