"""Key transparency over HTTP, on SQLite and PostgreSQL: a device submits its account's signed
device list, the next epoch publishes it, anyone verifies the head, the lookup and the audit
proof with the pure core; the account's own devices read its history; witnesses co-sign;
every bad input answers a typed 4xx."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.devices import DeviceKit, link_device, register_account
from tidings.app import create_app
from tidings.crypto.kt_device_list import SignedDeviceList, decode_device_list, sign_device_list
from tidings.crypto.kt_proofs import (
    EpochHead,
    check_device_list,
    decode_cosignatures,
    decode_head,
    decode_history,
    verify_audit,
    verify_history,
    verify_lookup,
    witness_sign,
)
from tidings.crypto.kt_tree import EMPTY_ROOT
from tidings.crypto.primitives import ed25519_public
from tidings.server.config import ConfigError, ServerConfig
from tidings.server.kt_directory import KeyDirectory, load_kt_keys
from tidings.storage.files import KT_SIGNING_KEY_FILE, KT_VRF_KEY_FILE
from tidings.wire.base64url import b64d, b64e

WITNESS = os.urandom(32)


@pytest.fixture
def kt(config: ServerConfig) -> Iterator[TestClient]:
    witnessed = replace(config, kt_witnesses=(b64e(ed25519_public(WITNESS)),))
    with TestClient(create_app(witnessed), raise_server_exceptions=True) as c:
        yield c


def _publish(client: TestClient) -> EpochHead:
    directory: KeyDirectory = client.app.state.kt  # type: ignore[attr-defined]
    head = client.portal.call(directory.publish_epoch)  # type: ignore[union-attr]
    assert head is not None
    return head


def _genesis(kit: DeviceKit) -> SignedDeviceList:
    return sign_device_list(
        kit.username, 1, [(kit.device_id, kit.identity.public)],
        signer=kit.device_id, signer_key=kit.identity,
    )


def _put(client: TestClient, kit: DeviceKit, data: bytes | str) -> Any:
    text = data if isinstance(data, str) else b64e(data)
    return client.put("/v1/kt/device-list", json={"device_list": text}, headers=kit.auth)


def _error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_metrics_show_the_start_round(kt: TestClient) -> None:
    deadline = time.monotonic() + 10
    while 'tidings_kt_rounds_total{outcome="published"} 1.0' not in kt.get("/metrics").text:
        assert time.monotonic() < deadline, "the start round did not publish"
        time.sleep(0.05)
    text = kt.get("/metrics").text
    assert "tidings_kt_epoch 1.0" in text and "tidings_kt_publish_seconds" in text


def test_publish_lookup_audit(kt: TestClient) -> None:
    alice = register_account(kt, "alice")
    first = _genesis(alice)
    r = _put(kt, alice, first.encode())
    assert r.status_code == 202 and r.json() == {"account": "alice", "version": 1}
    published = _publish(kt)
    head = kt.get("/v1/kt/head").json()
    server_key, vrf_key = b64d(head["server_key"]), b64d(head["vrf_key"])
    assert decode_head(server_key, b64d(head["head"])) == published
    assert head["epoch"] == published.epoch and b64d(head["root"]) == published.root
    lookup = kt.get("/v1/kt/lookup/alice").json()
    found = verify_lookup(vrf_key, "alice", published.root, b64d(lookup["proof"]))
    assert found.entry is not None
    check_device_list(found.entry, decode_device_list(b64d(lookup["device_list"])))
    absent = kt.get("/v1/kt/lookup/nobody").json()
    assert absent["device_list"] is None
    assert verify_lookup(vrf_key, "nobody", published.root, b64d(absent["proof"])).entry is None
    # Every epoch from the first: signed, audited from its predecessor.
    old_root = EMPTY_ROOT
    for epoch in range(1, published.epoch + 1):
        signed = decode_head(server_key, b64d(kt.get(f"/v1/kt/head/{epoch}").json()["head"]))
        audit = kt.get(f"/v1/kt/audit/{epoch}").json()
        verify_audit(old_root, signed.root, epoch, b64d(audit["proof"]))
        old_root = signed.root


def test_history_is_the_accounts_own(kt: TestClient) -> None:
    alice = register_account(kt, "alice")
    bob = register_account(kt, "bob")
    first = _genesis(alice)
    assert _put(kt, alice, first.encode()).status_code == 202
    _publish(kt)
    phone = link_device(kt, alice)
    second = sign_device_list(
        "alice", 2, [(alice.device_id, alice.identity.public), (phone.device_id,
        phone.identity.public)], signer=alice.device_id, signer_key=alice.identity,
        previous=first,
    )
    assert _put(kt, phone, second.encode()).status_code == 202  # any device of the account
    head = _publish(kt)
    body = kt.get("/v1/kt/history/alice", headers=phone.auth).json()
    assert [b64d(d) for d in body["device_lists"]] == [second.encode(), first.encode()]
    vrf_key = b64d(body["lookup"]["head"]["vrf_key"])
    found = verify_lookup(vrf_key, "alice", head.root, b64d(body["lookup"]["proof"]))
    assert found.entry is not None and found.entry.version == 2
    verify_history(found.label, found.entry, decode_history(b64d(body["history"])))
    _error(kt.get("/v1/kt/history/alice", headers=bob.auth), 403, "forbidden")
    _error(kt.get("/v1/kt/history/alice"), 401, "unauthorized")


def test_bad_submissions_are_typed_errors(kt: TestClient) -> None:
    alice = register_account(kt, "alice")
    bob = register_account(kt, "bob")
    first = _genesis(alice)
    _error(kt.put("/v1/kt/device-list", json={"device_list": b64e(first.encode())}), 401,
           "unauthorized")
    _error(_put(kt, bob, first.encode()), 403, "forbidden")
    _error(_put(kt, alice, "%%%"), 400, "malformed")
    _error(_put(kt, alice, b"x" * 2000), 400, "malformed")
    _error(_put(kt, alice, first.encode()[:-1]), 400, "truncated")
    _error(_put(kt, alice, first.encode()[:-1] + bytes([first.encode()[-1] ^ 1])), 400,
           "device_list_chain_broken")
    _error(_put(kt, alice, _genesis(register_account(kt, "carol")).encode()), 403, "forbidden")
    other = sign_device_list(
        "alice", 1, [(alice.device_id, bob.identity.public)], signer=alice.device_id,
        signer_key=bob.identity,
    )
    _error(_put(kt, alice, other.encode()), 409, "kt_device_list_mismatch")
    assert _put(kt, alice, first.encode()).status_code == 202
    _error(_put(kt, alice, first.encode()), 409, "kt_version_conflict")


def test_bad_reads_are_typed_errors(kt: TestClient) -> None:
    _publish(kt)
    for path in ("/v1/kt/head/0", "/v1/kt/head/+1", "/v1/kt/audit/01",
                 f"/v1/kt/head/{2**63}", "/v1/kt/lookup/A", "/v1/kt/cosign/x"):
        if "cosign" in path:
            response = kt.post(path, json={"cosignature": b64e(bytes(96))})
        else:
            response = kt.get(path)
        _error(response, 400, "malformed")
    _error(kt.get("/v1/kt/head/99"), 404, "unknown_kt_epoch")
    _error(kt.get("/v1/kt/audit/99"), 404, "unknown_kt_epoch")


def test_witnesses_cosign(kt: TestClient) -> None:
    head = _publish(kt)
    good = witness_sign(WITNESS, head)
    r = kt.post(f"/v1/kt/cosign/{head.epoch}", json={"cosignature": b64e(good)})
    assert r.status_code == 200 and r.json() == {"epoch": head.epoch, "witnesses": 1}
    body = kt.get(f"/v1/kt/head/{head.epoch}").json()
    assert decode_cosignatures(b64d(body["cosignatures"])) == [(good[:32], good[32:])]
    stranger = witness_sign(os.urandom(32), head)
    _error(kt.post(f"/v1/kt/cosign/{head.epoch}", json={"cosignature": b64e(stranger)}), 403,
           "kt_witness_unknown")
    forged = good[:-1] + bytes([good[-1] ^ 1])
    _error(kt.post(f"/v1/kt/cosign/{head.epoch}", json={"cosignature": b64e(forged)}), 400,
           "invalid_signature")
    _error(kt.post("/v1/kt/cosign/999", json={"cosignature": b64e(good)}), 404,
           "unknown_kt_epoch")
    _error(kt.post(f"/v1/kt/cosign/{head.epoch}", json={"cosignature": "AA"}), 400, "malformed")


def test_kt_settings_and_key_files(tmp_path: Path) -> None:
    witness = b64e(ed25519_public(WITNESS))
    config = ServerConfig.load(
        env={"TIDINGS_KT_EPOCH_SECONDS": "5", "TIDINGS_KT_WITNESSES": f" {witness},,{witness}"}
    )
    assert (config.kt_epoch_seconds, config.kt_witnesses) == (5.0, (witness,))
    for env in ({"TIDINGS_KT_EPOCH_SECONDS": "0"}, {"TIDINGS_KT_EPOCH_SECONDS": "nan"},
                {"TIDINGS_KT_WITNESSES": "AAAA"}, {"TIDINGS_KT_WITNESSES": "%%"}):
        with pytest.raises(ConfigError):
            ServerConfig.load(env=env)
    keys = load_kt_keys(tmp_path / "keys")
    for name in (KT_SIGNING_KEY_FILE, KT_VRF_KEY_FILE):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    assert load_kt_keys(tmp_path / "keys") == keys  # created once, then kept
    assert keys.signing_key != keys.vrf_secret
