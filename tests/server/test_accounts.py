"""Accounts and devices: registration, authentication, provisioning codes, linking, listing,
renaming, removal, account deletion — success and failure paths (docs/api.md)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import count_rows
from tests.support.devices import DeviceKit, basic_auth
from tidings.server.config import ServerConfig
from tidings.wire.base64url import b64e

Register = Callable[..., DeviceKit]
Link = Callable[..., DeviceKit]


def rows(config: ServerConfig, table: str) -> int:
    return count_rows(config, table)


def error_code(response: object) -> str:
    code: str = response.json()["error"]["code"]  # type: ignore[attr-defined]
    return code


def test_register_then_authenticate(client: TestClient, register: Register) -> None:
    alice = register("alice")
    assert alice.device_id == 1
    listed = client.get("/v1/devices", headers=alice.auth)
    assert listed.status_code == 200
    [device] = listed.json()["devices"]
    assert device["device_id"] == 1 and device["name"] == "laptop"
    assert device["created_at_ms"] > 0 and device["last_seen_ms"] >= device["created_at_ms"]


def test_username_taken_is_409_and_stores_nothing(
    client: TestClient, register: Register, config: ServerConfig
) -> None:
    alice = register("alice")
    before = rows(config, "devices")
    again = client.post(
        "/v1/accounts", json={"username": alice.username, "device": DeviceKit().device_keys()}
    )
    assert again.status_code == 409 and error_code(again) == "username_taken"
    assert rows(config, "devices") == before


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda b: b.update(username="No Spaces"), 400, "malformed"),
        (lambda b: b["device"].update(secret=b64e(b"short")), 400, "malformed"),
        (lambda b: b["device"].update(identity_key="!!not base64!!"), 400, "malformed"),
        (lambda b: b["device"].update(identity_key=b64e(bytes(65))), 400, "malformed"),
        (lambda b: b["device"].update(signed_prekey=b64e(b"\xff\xff")), 400, "malformed"),
        (lambda b: b["device"].pop("registration_id"), 400, "malformed"),
        (lambda b: b["device"].update(registration_id=-1), 400, "malformed"),
        (lambda b: b.pop("device"), 400, "malformed"),
    ],
)
def test_malformed_registration_is_400_and_stores_nothing(
    client: TestClient,
    config: ServerConfig,
    mutate: Callable[[dict[str, object]], None],
    status: int,
    code: str,
) -> None:
    body: dict[str, object] = {"username": "carol", "device": DeviceKit().device_keys()}
    mutate(body)
    response = client.post("/v1/accounts", json=body)
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert rows(config, "accounts") == 0 and rows(config, "one_time_prekeys") == 0


def test_prekey_signed_by_another_identity_is_rejected(
    client: TestClient, config: ServerConfig
) -> None:
    victim, forger = DeviceKit(), DeviceKit()
    body = victim.device_keys()
    body["signed_prekey"] = forger.device_keys()["signed_prekey"]
    response = client.post("/v1/accounts", json={"username": "mallory", "device": body})
    assert response.status_code == 400 and error_code(response) == "invalid_signature"
    body = victim.device_keys()
    body["kem_prekeys"] = forger.device_keys()["kem_prekeys"]
    response = client.post("/v1/accounts", json={"username": "mallory", "device": body})
    assert response.status_code == 400 and error_code(response) == "invalid_signature"
    assert rows(config, "accounts") == 0


def test_not_json_and_oversized_bodies(client: TestClient) -> None:
    response = client.post(
        "/v1/accounts", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and error_code(response) == "malformed"
    huge = b'{"username": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    response = client.post(
        "/v1/accounts", content=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and error_code(response) == "oversized"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!"},
        basic_auth("nobody.1", b64e(bytes(32))),
        basic_auth("alice0.x", b64e(bytes(32))),
        basic_auth("alice0.1", b64e(bytes(32))),  # right device, wrong secret
        basic_auth("alice0.2", b64e(bytes(32))),  # no such device
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ],
)
def test_bad_credentials_are_401(
    client: TestClient, register: Register, headers: dict[str, str]
) -> None:
    register("alice")
    response = client.get("/v1/devices", headers=headers)
    assert response.status_code == 401 and error_code(response) == "unauthorized"
    # The answer never echoes the credential.
    token = headers.get("Authorization", "").partition(" ")[2]
    assert not token or token not in response.text


def test_link_device_with_single_use_code(
    client: TestClient, register: Register, link: Link, config: ServerConfig
) -> None:
    alice = register("alice")
    phone = link(alice, name="phone")
    assert phone.device_id == 2
    assert client.get("/v1/devices", headers=phone.auth).status_code == 200
    public = client.get(f"/v1/accounts/{alice.username}/devices", headers=alice.auth).json()
    assert [d["device_id"] for d in public["devices"]] == [1, 2]
    assert public["devices"][1]["identity_key"] == b64e(phone.identity.public.encode())
    assert public["devices"][1]["registration_id"] == phone.registration_id
    assert rows(config, "provisioning_codes") == 0  # consumed


def test_provisioning_code_is_single_use_and_account_bound(
    client: TestClient, register: Register
) -> None:
    alice, bob = register("alice"), register("bob")
    created = client.post("/v1/devices/provisioning", headers=alice.auth)
    assert created.status_code == 201
    code = created.json()["code"]
    assert 8 <= len(code.replace("-", "")) <= 10 and created.json()["expires_at_ms"] > 0
    # Wrong account: refused, and the code survives (nothing consumed on rejection).
    wrong = client.post(
        "/v1/devices/link",
        json={"username": bob.username, "code": code, "device": DeviceKit().device_keys()},
    )
    assert wrong.status_code == 400 and error_code(wrong) == "invalid_provisioning_code"
    body = {"username": alice.username, "code": code, "device": DeviceKit().device_keys()}
    assert client.post("/v1/devices/link", json=body).status_code == 201
    body["device"] = DeviceKit().device_keys()
    again = client.post("/v1/devices/link", json=body)
    assert again.status_code == 400 and error_code(again) == "invalid_provisioning_code"
    garbage = dict(body, code="AAAAA-AAAAA")
    assert client.post("/v1/devices/link", json=garbage).status_code == 400


def test_expired_provisioning_code_is_refused(client: TestClient, register: Register) -> None:
    alice = register("alice")
    state = client.app.state.tidings  # type: ignore[attr-defined]
    real_clock = state.clock
    state.clock = lambda: real_clock() - 11 * 60 * 1000  # the code was made 11 minutes ago
    code = client.post("/v1/devices/provisioning", headers=alice.auth).json()["code"]
    state.clock = real_clock
    body = {"username": alice.username, "code": code, "device": DeviceKit().device_keys()}
    response = client.post("/v1/devices/link", json=body)
    assert response.status_code == 400 and error_code(response) == "invalid_provisioning_code"


def test_rename_and_remove_devices(client: TestClient, register: Register, link: Link) -> None:
    alice = register("alice")
    phone = link(alice)
    assert (
        client.patch("/v1/devices/2", json={"name": "old phone"}, headers=alice.auth).status_code
        == 204
    )
    names = {
        d["device_id"]: d["name"]
        for d in client.get("/v1/devices", headers=alice.auth).json()["devices"]
    }
    assert names == {1: "laptop", 2: "old phone"}
    bad = client.patch("/v1/devices/2", json={"name": ""}, headers=alice.auth)
    assert bad.status_code == 400
    missing = client.patch("/v1/devices/9", json={"name": "x"}, headers=alice.auth)
    assert missing.status_code == 404 and error_code(missing) == "unknown_device"
    assert client.delete("/v1/devices/2", headers=alice.auth).status_code == 204
    # The removed device's credentials stop working at once.
    assert client.get("/v1/devices", headers=phone.auth).status_code == 401
    last = client.delete("/v1/devices/1", headers=alice.auth)
    assert last.status_code == 409 and error_code(last) == "last_device"
    assert client.delete("/v1/devices/2", headers=alice.auth).status_code == 404


def test_devices_of_another_account_are_untouchable(
    client: TestClient, register: Register, link: Link
) -> None:
    alice, bob = register("alice"), register("bob")
    link(bob)
    # Device routes act on the caller's own account only: bob's device 2 is not alice's.
    assert client.delete("/v1/devices/2", headers=alice.auth).status_code == 404
    assert client.patch("/v1/devices/2", json={"name": "x"}, headers=alice.auth).status_code == 404
    assert len(client.get("/v1/devices", headers=bob.auth).json()["devices"]) == 2


def test_unknown_account_devices_is_404(client: TestClient, register: Register) -> None:
    alice = register("alice")
    response = client.get("/v1/accounts/nobody/devices", headers=alice.auth)
    assert response.status_code == 404 and error_code(response) == "unknown_account"


def test_delete_account_removes_everything(
    client: TestClient, register: Register, link: Link, config: ServerConfig
) -> None:
    alice = register("alice")
    link(alice)
    bob = register("bob")
    upload = client.post(
        "/v1/attachments",
        content=b"x" * 100,
        headers={**alice.auth, "Content-Type": "application/octet-stream"},
    )
    assert upload.status_code == 201
    assert client.delete("/v1/accounts/me", headers=alice.auth).status_code == 204
    assert client.get("/v1/devices", headers=alice.auth).status_code == 401
    for table in ("accounts", "devices"):
        assert rows(config, table) == 1  # only bob's
    assert rows(config, "one_time_prekeys") == 3 and rows(config, "attachments") == 0
    assert not list((config.data_dir / "attachments").iterdir())
    assert client.get("/v1/devices", headers=bob.auth).status_code == 200


def test_registration_rate_limit_per_address(tmp_path: Path) -> None:
    from tests.support.app import make_config
    from tidings.app import create_app

    config = make_config(tmp_path, rate_registrations_per_hour=2)
    with TestClient(create_app(config)) as client:
        for i in range(2):
            body = {"username": f"user{i}", "device": DeviceKit().device_keys()}
            assert client.post("/v1/accounts", json=body).status_code == 201
        body = {"username": "user9", "device": DeviceKit().device_keys()}
        limited = client.post("/v1/accounts", json=body)
        assert limited.status_code == 429 and error_code(limited) == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert rows(config, "accounts") == 2


def test_last_seen_moves_at_most_hourly(client: TestClient, register: Register) -> None:
    alice = register("alice")
    state = client.app.state.tidings  # type: ignore[attr-defined]
    first = client.get("/v1/devices", headers=alice.auth).json()["devices"][0]["last_seen_ms"]
    real_clock = state.clock
    state.clock = lambda: real_clock() + 60_000
    assert (
        client.get("/v1/devices", headers=alice.auth).json()["devices"][0]["last_seen_ms"] == first
    )
    state.clock = lambda: real_clock() + 3_600_000
    later = client.get("/v1/devices", headers=alice.auth).json()["devices"][0]["last_seen_ms"]
    assert later >= first + 3_600_000
    state.clock = real_clock
