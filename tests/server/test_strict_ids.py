"""Numeric ids from clients: canonical ASCII decimal in range, else a typed 401 (credentials) or
400 (path, query, JSON) — never a 500, never "+1" or an Arabic-Indic one read as device 1."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.devices import DeviceKit, basic_auth, outgoing
from tests.support.live import LiveServer
from tidings.errors import DecodeError
from tidings.server.ids import DEVICE_ID_MAX, parse_id
from tidings.wire.base64url import b64e

OVERFLOW_USER = "nosuchuser.99999999999999999999"
NOT_CANONICAL = ["+1", " 1", "1 ", "1_0", "01", "\u0661", "\uff11", "1.0", "0x1", "", "-1", "0"]
"""Each of these is read as an id by Python's int() or pydantic's lax mode (or is out of range)."""
_PATH_VALUES = {
    "username": "alice",
    "device_id": "2",
    "attachment_id": "A" * 43,
    "message_id": b64e(bytes(16)),
    # PUT /v1/messages/{username} and DELETE /v1/messages/{message_id} share one path item:
    # 22 lower-case letters are both a username and a 16-byte message id.
    "username_or_message_id": "a" * 22,
    "epoch": "1",
}


def _overflow_auth() -> dict[str, str]:
    return basic_auth(OVERFLOW_USER, b64e(bytes(32)))


def _authenticated_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document that answers 401 without credentials."""
    out = []
    for template, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        path = template.format(**_PATH_VALUES)
        for method in operations:
            response = client.request(method.upper(), path, json={})
            if response.status_code == 401:
                out.append((method.upper(), path))
    return out


def test_parse_id_takes_canonical_ascii_decimal_in_range_only() -> None:
    assert parse_id("1", what="device id", maximum=DEVICE_ID_MAX) == 1
    assert parse_id(str(DEVICE_ID_MAX), what="device id", maximum=DEVICE_ID_MAX) == DEVICE_ID_MAX
    assert parse_id("0", what="size", maximum=10, minimum=0) == 0
    for text in [*NOT_CANONICAL, str(DEVICE_ID_MAX + 1), "9" * 10_000]:
        with pytest.raises(DecodeError):
            parse_id(text, what="device id", maximum=DEVICE_ID_MAX)


def test_overflowing_device_id_in_credentials_is_401_on_every_authenticated_route(
    client: TestClient,
) -> None:
    routes = _authenticated_routes(client)
    # Messaging routes and the safety routes (reports, status, appeals) alike.
    assert len(routes) >= 14, routes
    assert ("POST", "/v1/reports") in routes and ("GET", "/v1/account/status") in routes
    for method, path in routes:
        response = client.request(method, path, headers=_overflow_auth(), json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized", (method, path)


def test_non_canonical_device_ids_in_credentials_are_not_device_1(
    client: TestClient, register: Callable[..., DeviceKit]
) -> None:
    alice = register("alice")
    assert client.get("/v1/devices", headers=alice.auth).status_code == 200
    for device in NOT_CANONICAL:
        headers = basic_auth(f"{alice.username}.{device}", b64e(alice.secret))
        response = client.get("/v1/devices", headers=headers)
        assert response.status_code == 401, (device, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


def test_device_ids_in_paths_and_queries_are_strict(
    client: TestClient, register: Callable[..., DeviceKit]
) -> None:
    alice = register("alice")
    for device in [*NOT_CANONICAL, "99999999999999999999", str(DEVICE_ID_MAX + 1)]:
        quoted = httpx.URL(f"/v1/devices/{device}").raw_path.decode()
        answers = [
            client.get(
                f"/v1/keys/{alice.username}", params={"device_id": device}, headers=alice.auth
            )
        ]
        for response in answers:
            assert response.status_code == 400, (device, response.text)
            assert response.json()["error"]["code"] == "malformed"
        if device:  # an empty path segment is another route
            # A segment that is not 1-10 ASCII digits is no device URL at all (404); ten
            # digits out of range is a malformed id (400). Never device 1.
            shaped = re.fullmatch(r"[0-9]{1,10}", device) is not None
            status, code = (400, "malformed") if shaped else (404, "not_found")
            for response in (
                client.patch(quoted, json={"name": "x"}, headers=alice.auth),
                client.delete(quoted, headers=alice.auth),
            ):
                assert response.status_code == status, (device, response.text)
                assert response.json()["error"]["code"] == code
    # The canonical form still works (and the last device cannot be removed: a typed 409).
    assert client.patch("/v1/devices/1", json={"name": "x"}, headers=alice.auth).status_code == 204
    assert client.delete("/v1/devices/1", headers=alice.auth).status_code == 409
    fetched = client.get(f"/v1/keys/{alice.username}?device_id=1", headers=alice.auth)
    assert fetched.status_code == 200, fetched.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device_id", "1"),
        ("device_id", 1.5),
        ("device_id", True),
        ("device_id", 2**40),
        ("registration_id", "1234"),
        ("registration_id", 2**40),
        ("type", "2"),
    ],
)
def test_json_ids_are_strict_integers(
    client: TestClient, register: Callable[..., DeviceKit], field: str, value: object
) -> None:
    alice, bob = register("alice"), register("bob")
    message = outgoing(bob)
    message[field] = value
    response = client.put(
        f"/v1/messages/{bob.username}", json={"messages": [message]}, headers=alice.auth
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed"
    assert client.get("/v1/messages", headers=bob.auth).json()["envelopes"] == []


@pytest.mark.parametrize("value", ["1234", True, 0, 2**31, 12.5])
def test_registration_id_at_registration_is_a_strict_integer_in_range(
    client: TestClient, value: object
) -> None:
    keys = DeviceKit().device_keys()
    keys["registration_id"] = value
    response = client.post("/v1/accounts", json={"username": "carol", "device": keys})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed"


def test_overflow_user_on_the_websocket_upgrade_is_refused_not_a_500(
    live_server: LiveServer,
) -> None:
    async def main() -> None:
        for user in (OVERFLOW_USER, "nosuchuser.+1"):
            token = base64.b64encode(f"{user}:{b64e(bytes(32))}".encode()).decode()
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    live_server.ws_url, additional_headers={"Authorization": f"Basic {token}"}
                ):
                    pass
            assert refused.value.response.status_code == 403

    asyncio.run(main())
