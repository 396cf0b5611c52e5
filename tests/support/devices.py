"""Test-side device kits: real identity and prekey material, request bodies per docs/api.md,
and envelopes carrying known marker bytes (so tests can look for them in stored data)."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64e

NOW_MS = 1_700_000_000_000


@dataclass
class DeviceKit:
    """One client device: its private keys stay here; the server gets only public parts."""

    name: str = "laptop"
    registration_id: int = 1234
    one_time: int = 3
    kem: int = 3
    identity: IdentityKeyPair = field(default_factory=IdentityKeyPair.generate)
    secret: bytes = field(default_factory=lambda: os.urandom(32))
    username: str = ""
    device_id: int = 0

    def __post_init__(self) -> None:
        self.prekeys = DevicePrekeys.generate(
            self.identity, now_ms=NOW_MS, one_time_count=self.one_time, kem_count=self.kem
        )

    def device_keys(self) -> dict[str, Any]:
        """The `DeviceKeys` JSON object of registration and linking."""
        p = self.prekeys
        return {
            "name": self.name,
            "registration_id": self.registration_id,
            "identity_key": b64e(self.identity.public.encode()),
            "signed_prekey": b64e(codec.encode(p.signed_prekey.to_wire())),
            "last_resort_kem_prekey": b64e(codec.encode(p.last_resort_kem_prekey.to_wire())),
            "one_time_prekeys": [b64e(codec.encode(k.to_wire())) for k in p.one_time_prekeys],
            "kem_prekeys": [b64e(codec.encode(k.to_wire())) for k in p.kem_prekeys],
            "secret": b64e(self.secret),
        }

    @property
    def auth(self) -> dict[str, str]:
        """HTTP Basic headers for this device (after registration or linking)."""
        return basic_auth(f"{self.username}.{self.device_id}", b64e(self.secret))


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def ratchet_body(marker: bytes = b"") -> bytes:
    """A well-formed `pb.RatchetMessage` whose ciphertext starts with ``marker``."""
    ciphertext = (marker + os.urandom(48))[:48] + os.urandom(32)  # 3 blocks + 32-byte MAC
    return codec.encode(pb.RatchetMessage(version=1, header=os.urandom(40), ciphertext=ciphertext))


def outgoing(
    device: DeviceKit | int, registration_id: int | None = None, *, marker: bytes = b""
) -> dict[str, Any]:
    """One entry of a send request for ``device``."""
    if isinstance(device, DeviceKit):
        device_id, reg = device.device_id, device.registration_id
    else:
        device_id, reg = device, registration_id or 0
    return {
        "device_id": device_id,
        "registration_id": reg if registration_id is None else registration_id,
        "type": pb.Envelope.RATCHET,
        "body": b64e(ratchet_body(marker)),
        "commitment": b64e(os.urandom(32)),
    }


class _Poster(Protocol):
    """What the registration helpers need of a client (`TestClient`, `httpx.Client`)."""

    def post(self, url: str, *, json: Any = ..., headers: Any = ...) -> Any: ...


def register_account(client: _Poster, username: str, **kit_args: Any) -> DeviceKit:
    """Register ``username`` with a fresh device (``POST /v1/accounts``, asserting 201);
    returns that first device's kit with username and device id set."""
    kit = DeviceKit(**kit_args)
    response = client.post("/v1/accounts", json={"username": username, "device": kit.device_keys()})
    assert response.status_code == 201, response.text
    kit.username, kit.device_id = username, response.json()["device_id"]
    return kit


def link_device(client: _Poster, existing: DeviceKit, **kit_args: Any) -> DeviceKit:
    """Link a new device to the account of ``existing`` (provisioning code, then
    ``POST /v1/devices/link``, asserting 201); returns the new device's kit."""
    code = client.post("/v1/devices/provisioning", headers=existing.auth).json()["code"]
    kit = DeviceKit(**kit_args)
    response = client.post(
        "/v1/devices/link",
        json={"username": existing.username, "code": code, "device": kit.device_keys()},
    )
    assert response.status_code == 201, response.text
    kit.username, kit.device_id = existing.username, response.json()["device_id"]
    return kit
