"""Device authentication: HTTP Basic with user ``<username>.<device_id>`` and password
``b64url(secret)``. The server keeps only SHA-256(secret): the secret is 32 random bytes, so a
slow password hash would add nothing but cost. Comparison is constant-time."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

from tidings.crypto.primitives import constant_time_equal, sha256
from tidings.errors import (
    AccountBannedError,
    AccountSuspendedError,
    DecodeError,
    UnauthorizedError,
)
from tidings.server.ids import DEVICE_ID_MAX, parse_id
from tidings.server.state import ServerState, StateDep
from tidings.storage.enforcement import BAN, RESTRICT, SUSPEND, active_enforcement
from tidings.storage.messaging import DeviceRecord
from tidings.wire.base64url import b64d

SECRET_LEN = 32
LAST_SEEN_RESOLUTION_MS = 3600 * 1000
"""``last_seen_ms`` moves at most once an hour: a write per request would serialise SQLite,
and a coarse value is all the device list needs (and all the server should keep)."""


@dataclass(frozen=True, slots=True)
class AuthenticatedDevice:
    account_id: int
    username: str
    device_id: int
    registration_id: int
    enforcement: str | None = None
    """The account's active trust & safety enforcement that limits the messaging API (``ban``,
    ``suspend``, ``restrict``), or None. Banned and suspended accounts only get this far through
    `authenticated_device_any` (account status and appeals)."""

    @property
    def restricted(self) -> bool:
        return self.enforcement == RESTRICT


def credential_hash(secret: bytes) -> bytes:
    """What the server stores for a device secret: SHA-256 of it (see the module docstring)."""
    return sha256(secret)


def _parse(headers: Headers) -> tuple[str, int, bytes]:
    header = headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise UnauthorizedError("device credentials are required (HTTP Basic)")
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        username, _, device = user.rpartition(".")
        secret = b64d(password, what="secret", max_len=SECRET_LEN)
        # Strict: int() would take "+1", " 1", "1_0", other scripts' digits and values past
        # the database column (an OverflowError, so a 500, before any credential check).
        device_id = parse_id(device, what="device id", maximum=DEVICE_ID_MAX)
    except (binascii.Error, UnicodeDecodeError, ValueError, DecodeError):
        raise UnauthorizedError("malformed credentials") from None
    if not username or len(secret) != SECRET_LEN:
        raise UnauthorizedError("malformed credentials")
    return username, device_id, secret


def refuse_if_blocked(enforcement: str | None) -> None:
    """Raises `AccountBannedError` / `AccountSuspendedError` for a ban / suspension."""
    if enforcement == BAN:
        raise AccountBannedError()
    if enforcement == SUSPEND:
        raise AccountSuspendedError()


async def authenticate(
    headers: Headers, state: ServerState, *, allow_blocked: bool = False
) -> AuthenticatedDevice:
    """Raises `UnauthorizedError` for missing, malformed or wrong credentials (one message for
    all three cases after parsing, so the answer does not reveal which accounts exist), and,
    unless ``allow_blocked``, `AccountBannedError` / `AccountSuspendedError` for an account under
    a ban or suspension (a decision takes effect at once: the device record and enforcement
    come from `ServerState.cache`, which every decision invalidates on every node, else from
    the database)."""
    username, device_id, secret = _parse(headers)
    now = state.clock()
    record, enforcement = await _device_and_enforcement(state, username, device_id, now)
    expected = record.credential_hash if record is not None else bytes(32)
    if not constant_time_equal(expected, credential_hash(secret)) or record is None:
        raise UnauthorizedError("unknown device or wrong secret")
    if not allow_blocked:
        refuse_if_blocked(enforcement)
    if now - record.last_seen_ms >= LAST_SEEN_RESOLUTION_MS:
        await state.store.touch(record.account_id, device_id, now)
        state.cache.touched(username, device_id, now)
    return AuthenticatedDevice(
        record.account_id, username, device_id, record.registration_id, enforcement
    )


async def still_allowed(state: ServerState, auth: AuthenticatedDevice) -> None:
    """Re-check a device authenticated earlier (a WebSocket's, before each send it makes).

    Raises:
        UnauthorizedError: the device is gone (removed, or its account deleted).
        AccountBannedError / AccountSuspendedError: a decision since.
    """
    record, enforcement = await _device_and_enforcement(
        state, auth.username, auth.device_id, state.clock()
    )
    if record is None or record.account_id != auth.account_id:
        raise UnauthorizedError("unknown device or wrong secret")
    refuse_if_blocked(enforcement)


async def _device_and_enforcement(
    state: ServerState, username: str, device_id: int, now: int
) -> tuple[DeviceRecord | None, str | None]:
    """The device's record and its account's active enforcement kind: from the node cache
    (`tidings.server.relay.NodeCache`, invalidated on every node by every decision and device
    change) or from the database (and then cached)."""
    async def read() -> tuple[DeviceRecord | None, str | None]:
        # Noted before reading: a decision racing this read is used once but not kept.
        generation = state.cache.generation
        record = await state.store.device(username, device_id)
        if record is None:
            return None, None
        found = await active_enforcement(state.db, username, now)
        if found is None:
            state.cache.keep_device(generation, record, None, None)
            return record, None
        state.cache.keep_device(generation, record, found.kind, found.until_ms)
        return record, found.kind

    key = ("device", username, device_id)
    cached = state.cache.device(username, device_id, now)
    if cached is not None:
        if state.cache.due(cached):
            state.cache.refresh_ahead(key, read)  # before it expires, off this request's path
        return cached.record, cached.enforcement
    # Every request of this device missing the cache at once waits for one read.
    return await state.cache.read_once(key, read)


async def authenticated_device(request: Request, state: StateDep) -> AuthenticatedDevice:
    """FastAPI dependency for device-authenticated routes."""
    return await authenticate(request.headers, state)


async def authenticated_device_any(request: Request, state: StateDep) -> AuthenticatedDevice:
    """As `authenticated_device`, but a banned or suspended account is let through: for the
    routes that must stay open to it (``GET /v1/account/status``, ``POST /v1/appeals``)."""
    return await authenticate(request.headers, state, allow_blocked=True)


DeviceDep = Annotated[AuthenticatedDevice, Depends(authenticated_device)]
"""Route parameter type: the authenticated device (banned / suspended accounts refused)."""
