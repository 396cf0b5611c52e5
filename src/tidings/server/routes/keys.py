"""Prekeys: upload (signatures checked against the device's identity key), count, and bundle
fetch with an atomic claim of one-time keys."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tidings import errors as e
from tidings.crypto.identity import IdentityKey
from tidings.errors import AccountRestrictedError
from tidings.server.auth import DeviceDep
from tidings.server.ids import DeviceIdText
from tidings.server.models import Bundles, CheckedPrekeys, DeviceBundle, PrekeyCount, PrekeyUpload
from tidings.server.openapi import BAD_REQUEST, DEVICE_AUTH, DEVICE_KEYS, errors
from tidings.server.state import StateDep
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64e
from tidings.wire.limits import PROTOCOL_VERSION

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.put("", status_code=204, responses=errors(*DEVICE_AUTH, *BAD_REQUEST, *DEVICE_KEYS))
async def upload(body: PrekeyUpload, auth: DeviceDep, state: StateDep) -> Response:
    record = await state.store.device(auth.username, auth.device_id)
    assert record is not None  # authenticated a moment ago; deletion would cascade
    keys = CheckedPrekeys(body, IdentityKey.decode(record.identity_key))
    await state.store.upload_prekeys(
        auth.account_id,
        auth.device_id,
        signed_prekey=keys.signed,
        last_resort_kem_prekey=keys.last_resort,
        one_time=keys.one_time,
        kem=keys.kem,
    )
    return Response(status_code=204)


@router.get("/count", response_model=PrekeyCount, responses=errors(*DEVICE_AUTH))
async def count(auth: DeviceDep, state: StateDep) -> PrekeyCount:
    one_time, kem = await state.store.prekey_counts(auth.account_id, auth.device_id)
    return PrekeyCount(one_time=one_time, kem=kem)


@router.get(
    "/{username}",
    response_model=Bundles,
    responses=errors(
        *DEVICE_AUTH,
        e.DecodeError,
        e.AccountRestrictedError,
        e.UnknownAccountError,
        e.UnknownDeviceError,
        e.RateLimitedError,
    ),
)
async def bundles(
    username: str, auth: DeviceDep, state: StateDep, device_id: DeviceIdText | None = None
) -> Bundles:
    if auth.restricted and username != auth.username:
        # A restricted account cannot start new chats. The server cannot see sessions, so it
        # refuses every bundle fetch of another account (its own stay open for new devices).
        raise AccountRestrictedError()
    await state.limiter.hit(
        "prekeys", str(auth.account_id), state.config.rate_prekey_fetches_per_minute, 60
    )
    account_id = await state.store.account_id(username)
    claimed = await state.store.claim_bundles(account_id, device_id)
    out = []
    for b in claimed:
        bundle = pb.PrekeyBundle(
            version=PROTOCOL_VERSION,
            identity_key=b.identity_key,
            device_id=b.device_id,
            registration_id=b.registration_id,
            signed_prekey=pb.SignedPrekey.FromString(b.signed_prekey),
            kem_prekey=pb.KemPrekey.FromString(b.kem_prekey),
        )
        if b.one_time_prekey is not None:
            bundle.one_time_prekey.CopyFrom(pb.OneTimePrekey.FromString(b.one_time_prekey))
        out.append(DeviceBundle(device_id=b.device_id, bundle=b64e(codec.encode(bundle))))
    return Bundles(username=username, bundles=out)
