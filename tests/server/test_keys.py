"""Prekeys: upload with signature checks, counts, bundle fetch with one-time key claims, and
the last-resort fallback (docs/api.md §Keys)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient

from tests.support.devices import NOW_MS, DeviceKit
from tests.support.live import LiveServer
from tidings.crypto.bundle import PrekeyBundle
from tidings.wire import codec
from tidings.wire.base64url import b64d, b64e

Register = Callable[..., DeviceKit]


def bundles(
    client: TestClient, caller: DeviceKit, username: str, query: str = ""
) -> list[PrekeyBundle]:
    response = client.get(f"/v1/keys/{username}{query}", headers=caller.auth)
    assert response.status_code == 200, response.text
    assert response.json()["username"] == username
    out = []
    for item in response.json()["bundles"]:
        bundle = PrekeyBundle.decode(b64d(item["bundle"]))  # verifies every signature
        assert bundle.device_id == item["device_id"]
        out.append(bundle)
    return out


def test_count_and_claim_until_last_resort(client: TestClient, register: Register) -> None:
    alice, bob = register("alice"), register("bob", one_time=2, kem=2)
    assert client.get("/v1/keys/count", headers=bob.auth).json() == {"one_time": 2, "kem": 2}
    seen_one_time, seen_kem = set(), set()
    for _ in range(2):
        [bundle] = bundles(client, alice, bob.username)
        assert bundle.identity_key == bob.identity.public
        assert bundle.registration_id == bob.registration_id
        assert bundle.one_time_prekey is not None and not bundle.kem_prekey.last_resort
        seen_one_time.add(bundle.one_time_prekey.id)
        seen_kem.add(bundle.kem_prekey.id)
    assert len(seen_one_time) == 2 and len(seen_kem) == 2  # never the same key twice
    assert client.get("/v1/keys/count", headers=bob.auth).json() == {"one_time": 0, "kem": 0}
    [empty] = bundles(client, alice, bob.username)
    assert empty.one_time_prekey is None and empty.kem_prekey.last_resort


def test_upload_more_keys_and_rotate_signed_prekey(client: TestClient, register: Register) -> None:
    alice, bob = register("alice"), register("bob", one_time=0, kem=0)
    more_one_time = bob.prekeys.generate_one_time_prekeys(3)
    more_kem = bob.prekeys.generate_kem_prekeys(bob.identity, 2)
    signed, last_resort = bob.prekeys.rotate_signed_prekeys(bob.identity, now_ms=NOW_MS + 1)
    body = {
        "signed_prekey": b64e(codec.encode(signed.to_wire())),
        "last_resort_kem_prekey": b64e(codec.encode(last_resort.to_wire())),
        "one_time_prekeys": [b64e(codec.encode(k.to_wire())) for k in more_one_time],
        "kem_prekeys": [b64e(codec.encode(k.to_wire())) for k in more_kem],
    }
    assert client.put("/v1/keys", json=body, headers=bob.auth).status_code == 204
    # Uploading the same ids again adds nothing.
    assert client.put("/v1/keys", json=body, headers=bob.auth).status_code == 204
    assert client.get("/v1/keys/count", headers=bob.auth).json() == {"one_time": 3, "kem": 2}
    [bundle] = bundles(client, alice, bob.username)
    assert bundle.signed_prekey.id == signed.id
    assert client.put("/v1/keys", json={}, headers=bob.auth).status_code == 204


def test_upload_with_foreign_signature_stores_nothing(
    client: TestClient, register: Register
) -> None:
    bob, forger = register("bob", one_time=0, kem=0), DeviceKit()
    foreign = forger.device_keys()
    for field in ("signed_prekey", "last_resort_kem_prekey"):
        response = client.put("/v1/keys", json={field: foreign[field]}, headers=bob.auth)
        assert (
            response.status_code == 400 and response.json()["error"]["code"] == "invalid_signature"
        )
    # One bad KEM key among good ones: the whole upload is refused.
    good = [
        b64e(codec.encode(k.to_wire())) for k in bob.prekeys.generate_kem_prekeys(bob.identity, 2)
    ]
    body = {"kem_prekeys": [*good, foreign["kem_prekeys"][0]]}
    response = client.put("/v1/keys", json=body, headers=bob.auth)
    assert response.status_code == 400
    # A last-resort key offered as a one-time KEM key is refused too.
    body = {"kem_prekeys": [bob.device_keys()["last_resort_kem_prekey"]]}
    assert client.put("/v1/keys", json=body, headers=bob.auth).status_code == 400
    assert client.get("/v1/keys/count", headers=bob.auth).json() == {"one_time": 0, "kem": 0}


def test_malformed_uploads(client: TestClient, register: Register) -> None:
    bob = register("bob")
    for body in (
        {"one_time_prekeys": ["%%%"]},
        {"one_time_prekeys": [b64e(b"\x01\x02\x03")]},
        {"one_time_prekeys": "not a list"},
        {"kem_prekeys": [b64e(b"x" * 10)] * 201},
    ):
        response = client.put("/v1/keys", json=body, headers=bob.auth)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "malformed"
    assert client.put("/v1/keys", json={}).status_code == 401


def test_fetch_one_device_and_unknowns(
    client: TestClient, register: Register, link: Callable[..., DeviceKit]
) -> None:
    alice, bob = register("alice"), register("bob")
    phone = link(bob)
    assert [b.device_id for b in bundles(client, alice, bob.username)] == [1, 2]
    [only] = bundles(client, alice, bob.username, "?device_id=2")
    assert only.identity_key == phone.identity.public
    missing = client.get(f"/v1/keys/{bob.username}?device_id=7", headers=alice.auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_device"
    nobody = client.get("/v1/keys/nobody", headers=alice.auth)
    assert nobody.status_code == 404
    assert client.get(f"/v1/keys/{bob.username}?device_id=x", headers=alice.auth).status_code == 400
    assert client.get(f"/v1/keys/{bob.username}").status_code == 401


def test_concurrent_fetches_never_share_a_one_time_key(live_server: LiveServer) -> None:
    """Many parallel HTTP fetches against a real server: every one-time key goes to at most
    one fetcher, and exactly as many fetches get one as there were keys."""
    bob = DeviceKit(one_time=10, kem=10)
    alice = DeviceKit(one_time=0, kem=0)
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        for name, kit in (("bob", bob), ("alice", alice)):
            created = http.post(
                "/v1/accounts", json={"username": name, "device": kit.device_keys()}
            )
            assert created.status_code == 201, created.text
            kit.username, kit.device_id = name, 1

        def fetch(_: int) -> tuple[int | None, int]:
            response = http.get("/v1/keys/bob", headers=alice.auth)
            assert response.status_code == 200, response.text
            bundle = PrekeyBundle.decode(b64d(response.json()["bundles"][0]["bundle"]))
            one_time = bundle.one_time_prekey.id if bundle.one_time_prekey else None
            kem = -1 if bundle.kem_prekey.last_resort else bundle.kem_prekey.id
            return one_time, kem

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(fetch, range(24)))
    one_time = [r[0] for r in results if r[0] is not None]
    kem = [r[1] for r in results if r[1] != -1]
    assert len(one_time) == len(set(one_time)) == 10
    assert len(kem) == len(set(kem)) == 10


def test_repeated_key_id_in_one_upload_is_400(client: TestClient, register: Register) -> None:
    bob = register("bob", one_time=0, kem=0)
    [key] = bob.prekeys.generate_one_time_prekeys(1)
    encoded = b64e(codec.encode(key.to_wire()))
    response = client.put(
        "/v1/keys", json={"one_time_prekeys": [encoded, encoded]}, headers=bob.auth
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed"
    body = DeviceKit().device_keys()
    body["one_time_prekeys"] = body["one_time_prekeys"][:1] * 2
    again = client.post("/v1/accounts", json={"username": "carol", "device": body})
    assert again.status_code == 400 and again.json()["error"]["code"] == "malformed"
    assert client.get("/v1/keys/count", headers=bob.auth).json() == {"one_time": 0, "kem": 0}
