"""Accounts and devices: register, provisioning codes, link, list, rename, remove, delete."""

from __future__ import annotations

import dataclasses
import logging
import secrets

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from tidings import errors as e
from tidings.crypto.kt_device_list import LINK_BINDING_LEN
from tidings.crypto.primitives import sha256
from tidings.errors import StorageUnavailableError, UsernameTakenError
from tidings.server.auth import DeviceDep
from tidings.server.ids import DeviceIdText
from tidings.server.models import (
    LinkRequest,
    OwnDevice,
    OwnDevices,
    ProvisioningCode,
    PublicDevice,
    PublicDevices,
    Registered,
    Registration,
    Rename,
    check_username,
)
from tidings.server.openapi import BAD_REQUEST, DEVICE_AUTH, DEVICE_KEYS, errors
from tidings.server.state import ServerState, StateDep, client_address
from tidings.storage.enforcement import is_banned
from tidings.wire.base64url import b64d, b64e

log = logging.getLogger("tidings.server.accounts")

PROVISIONING_TTL_MS = 10 * 60 * 1000
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
_CODE_LEN = 10  # 50 bits, single use, 10 minutes


def _code_hash(code: str) -> bytes:
    """What the server stores for a provisioning code: SHA-256 of its normalised text (random,
    single use and short-lived, so a slow hash would add nothing)."""
    return sha256(code.strip().upper().replace("-", "").encode())


class _Digits(Convertor[str]):
    """A path segment of 1-10 ASCII digits (a device id is at most 2^31-1), passed on as text
    (the route parses and range-checks it). Anything else is not a device URL: ``+1``, `` 1``
    or other scripts' digits are no id, and ``/v1/devices/provisioning`` and
    ``/v1/devices/link`` are other resources (``PATCH /v1/devices/link`` is 405)."""

    regex = "[0-9]{1,10}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("digits", _Digits())

# Registering an account and linking a device both create a device from a request body, and
# share one per-address budget (so linking is no way around the registration limit).
_REGISTRATION_ERRORS = (*BAD_REQUEST, *DEVICE_KEYS, e.RateLimitedError)
_REGISTRATION_WINDOW_S = 3600


async def _limit_registrations(request: Request, state: ServerState) -> None:
    """Count one registration or link against the client address's hourly budget.

    Raises:
        RateLimitedError: the budget is spent.
    """
    await state.limiter.hit(
        "register",
        client_address(request),
        state.config.rate_registrations_per_hour,
        _REGISTRATION_WINDOW_S,
    )

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.post(
    "/accounts",
    status_code=201,
    response_model=Registered,
    responses=errors(*_REGISTRATION_ERRORS, e.UsernameTakenError),
)
async def register(body: Registration, request: Request, state: StateDep) -> Registered:
    await _limit_registrations(request, state)
    username = check_username(body.username)
    device = body.device.to_new_device()
    if await is_banned(state.db, username, state.clock()):
        # A banned username stays reserved, also after the account is gone.
        raise UsernameTakenError()
    await state.store.create_account(username, device, state.clock())
    return Registered(username=username, device_id=1)


@router.delete("/accounts/me", status_code=204, responses=errors(*DEVICE_AUTH))
async def delete_account(auth: DeviceDep, state: StateDep) -> Response:
    preserved = await run_in_threadpool(state.preserved_attachments, auth.username)
    attachment_ids = await state.store.delete_account(auth.account_id)
    await state.hub.invalidate(auth.account_id)  # every node forgets its devices
    # A preservation hold keeps the bytes it names (their records went with the account;
    # the hold's snapshot names them, and its end deletes them).
    attachment_ids = [i for i in attachment_ids if i not in preserved]
    try:
        await state.attachments.delete_many(attachment_ids)
    except StorageUnavailableError:
        # The account is gone (its records first): its attachments can no longer be
        # downloaded (no record), and an answer other than 204 would tell the client to retry
        # a deletion that happened. The bytes left are the store's expiry rule's to remove
        # (docs/operations.md).
        log.warning(
            "attachments of a deleted account left in the store",
            extra={"count": len(attachment_ids)},
        )
    return Response(status_code=204)


@router.post(
    "/devices/provisioning",
    status_code=201,
    response_model=ProvisioningCode,
    responses=errors(*DEVICE_AUTH),
)
async def provisioning_code(auth: DeviceDep, state: StateDep) -> ProvisioningCode:
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LEN))
    expires = state.clock() + PROVISIONING_TTL_MS
    await state.store.add_provisioning_code(auth.account_id, _code_hash(code), expires)
    return ProvisioningCode(code=f"{code[:5]}-{code[5:]}", expires_at_ms=expires)


@router.post(
    "/devices/link",
    status_code=201,
    response_model=Registered,
    responses=errors(*_REGISTRATION_ERRORS, e.ProvisioningCodeError),
)
async def link(body: LinkRequest, request: Request, state: StateDep) -> Registered:
    await _limit_registrations(request, state)
    device = body.device.to_new_device()
    if body.link_binding is not None:
        binding = b64d(body.link_binding, what="link binding", max_len=LINK_BINDING_LEN)
        device = dataclasses.replace(device, link_binding=binding)
    account_id, device_id = await state.store.link_device(
        check_username(body.username), _code_hash(body.code), device, state.clock()
    )
    await state.hub.invalidate(account_id)  # senders' cached device lists now miss it
    return Registered(username=body.username, device_id=device_id)


@router.get("/devices", response_model=OwnDevices, responses=errors(*DEVICE_AUTH))
async def own_devices(auth: DeviceDep, state: StateDep) -> OwnDevices:
    records = await state.store.devices(auth.account_id)
    return OwnDevices(
        devices=[
            OwnDevice(
                device_id=d.device_id,
                name=d.name,
                created_at_ms=d.created_at_ms,
                last_seen_ms=d.last_seen_ms,
                identity_key=b64e(d.identity_key),
                link_binding=None if d.link_binding is None else b64e(bytes(d.link_binding)),
            )
            for d in records
        ]
    )


@router.patch(
    "/devices/{device_id:digits}",
    status_code=204,
    responses=errors(*DEVICE_AUTH, *BAD_REQUEST, e.UnknownDeviceError),
)
async def rename_device(
    device_id: DeviceIdText, body: Rename, auth: DeviceDep, state: StateDep
) -> Response:
    await state.store.rename_device(auth.account_id, device_id, body.name)
    return Response(status_code=204)


@router.delete(
    "/devices/{device_id:digits}",
    status_code=204,
    responses=errors(*DEVICE_AUTH, e.DecodeError, e.UnknownDeviceError, e.LastDeviceError),
)
async def remove_device(device_id: DeviceIdText, auth: DeviceDep, state: StateDep) -> Response:
    await state.store.remove_device(auth.account_id, device_id)
    await state.hub.invalidate(auth.account_id)  # its credentials and queue are gone
    return Response(status_code=204)


@router.get(
    "/accounts/{username}/devices",
    response_model=PublicDevices,
    responses=errors(*DEVICE_AUTH, e.DecodeError, e.UnknownAccountError),
)
async def account_devices(username: str, auth: DeviceDep, state: StateDep) -> PublicDevices:
    account_id = await state.store.account_id(username)
    records = await state.store.devices(account_id)
    return PublicDevices(
        devices=[
            PublicDevice(
                device_id=d.device_id,
                registration_id=d.registration_id,
                identity_key=b64e(d.identity_key),
            )
            for d in records
        ]
    )
