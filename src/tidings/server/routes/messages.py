"""Messages: multi-device send (device-list check, franking tag, durable store before the
answer, push hint), pull and acknowledge."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter, Response
from google.protobuf.message import Message

from tidings.crypto.franking import FrankingTagInput, compute_franking_tag
from tidings.errors import (
    DecodeError,
    MismatchedDevicesError,
    QueueFullError,
    RateLimitedError,
    StaleDevicesError,
    StorageUnavailableError,
    TruncatedError,
    UnknownAccountError,
    UnsupportedVersionError,
)
from tidings.server.auth import AuthenticatedDevice, DeviceDep
from tidings.server.frames import DeviceMessage
from tidings.server.models import OutgoingMessage, Pending, SendRequest, SendResult
from tidings.server.openapi import BAD_REQUEST, DEVICE_AUTH, errors
from tidings.server.relay import DeviceList
from tidings.server.state import ServerState, StateDep
from tidings.storage.messaging import OutgoingEnvelope
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e
from tidings.wire.limits import MAX_ENVELOPE_BYTES, PROTOCOL_VERSION

router = APIRouter(prefix="/v1/messages", tags=["messages"])

MESSAGE_ID_LEN = 16
PAGE = 100

_BODY_KINDS: dict[int, type[Message]] = {
    pb.Envelope.PREKEY: pb.PrekeyMessage,
    pb.Envelope.RATCHET: pb.RatchetMessage,
    pb.Envelope.SENDER_KEY: pb.SenderKeyMessage,
}


@router.put(
    "/{username}",
    response_model=SendResult,
    responses=errors(
        *DEVICE_AUTH,
        *BAD_REQUEST,
        TruncatedError,
        UnsupportedVersionError,
        UnknownAccountError,
        MismatchedDevicesError,
        StaleDevicesError,
        RateLimitedError,
        QueueFullError,
        StorageUnavailableError,
    ),
)
async def send(username: str, body: SendRequest, auth: DeviceDep, state: StateDep) -> SendResult:
    """Send one message to every device of ``username`` (for one's own account: every device
    but the sending one): `relay_send`."""
    return await relay_send(state, auth, username, body.messages)


async def relay_send(
    state: ServerState,
    auth: AuthenticatedDevice,
    username: str,
    messages: Sequence[OutgoingMessage | DeviceMessage],
) -> SendResult:
    """One send, over HTTP (``messages`` checked by the model) or the WebSocket (a ``send``
    frame's, checked the same way by `tidings.server.frames`): checks, envelopes with franking
    tags, the durable store (answered after its batch committed), then the push hints.

    Raises: MismatchedDevicesError (409), StaleDevicesError (410), DecodeError (400),
    QueueFullError (507), RateLimitedError (429), UnknownAccountError (404),
    StorageUnavailableError (503: its batch could not be committed; nothing stored).
    """
    await state.limiter.hit("send", str(auth.account_id), state.config.rate_sends_per_minute, 60)
    given = {m.device_id: m for m in messages}
    if len(given) != len(messages):
        raise DecodeError("a device is named twice")
    registration_ids = {d: m.registration_id for d, m in given.items()}
    cached = state.cache.device_list(username)
    if cached is not None and _check_devices(cached, auth, registration_ids, raise_=False):
        account_id = cached.account_id
        if state.cache.due(cached):  # refreshed before it expires, off this send's path
            state.cache.refresh_ahead(("devices", username), _device_list_read(state, username))
    else:
        # Not cached, or it does not match: the database decides before any refusal.
        account_id = await _current_devices(state, username, auth, registration_ids)

    timestamp = state.clock()
    envelopes, ids = [], []
    for m in messages:
        commitment = b64d(m.commitment, what="commitment", max_len=32)
        payload = b64d(m.body, what="body", max_len=MAX_ENVELOPE_BYTES)
        codec.decode(_BODY_KINDS[m.type], payload)  # refuse garbage before storing it
        message_id = os.urandom(MESSAGE_ID_LEN)
        envelope = pb.Envelope(
            version=PROTOCOL_VERSION,
            type=m.type,  # type: ignore[arg-type]
            sender=auth.username,
            sender_device=auth.device_id,
            recipient=username,
            recipient_device=m.device_id,
            server_timestamp_ms=timestamp,
            message_id=message_id,
            commitment=commitment,
            body=payload,
        )
        # FrankingTagInput checks the commitment length and names (DecodeError).
        envelope.franking_tag = compute_franking_tag(
            state.franking_key, FrankingTagInput.from_envelope(envelope)
        )
        envelopes.append(OutgoingEnvelope(m.device_id, message_id, codec.encode(envelope)))
        ids.append(b64e(message_id))
    await state.store.enqueue(
        account_id,
        envelopes,
        now_ms=timestamp,
        expires_at_ms=timestamp + state.config.message_ttl_s * 1000,
        queue_limit=state.config.queue_limit,
    )
    state.metrics.envelopes_queued.inc(len(envelopes))
    for e in envelopes:
        await state.hub.notify(account_id, e.device_id)
    # Built from values made here: nothing to validate (the WebSocket reads its two fields).
    return SendResult.model_construct(server_timestamp_ms=timestamp, message_ids=ids)


async def _current_devices(
    state: ServerState, username: str, auth: AuthenticatedDevice, registration_ids: dict[int, int]
) -> int:
    """The account id of ``username`` if the send names exactly its current devices (read from
    the database, and remembered in the node cache).

    Raises: UnknownAccountError, MismatchedDevicesError, StaleDevicesError."""

    # Every send to this account missing the cache at once waits for one read.
    entry = await state.cache.read_once(("devices", username), _device_list_read(state, username))
    _check_devices(entry, auth, registration_ids, raise_=True)
    return entry.account_id


def _device_list_read(state: ServerState, username: str) -> Callable[[], Awaitable[DeviceList]]:
    """The read of ``username``'s current devices that stores them in the node cache.

    Its read raises UnknownAccountError."""

    async def read() -> DeviceList:
        generation = state.cache.generation
        account_id = await state.store.account_id(username)
        current = {d.device_id: d.registration_id for d in await state.store.devices(account_id)}
        return state.cache.keep_device_list(generation, username, account_id, current)

    return read


def _check_devices(
    devices: DeviceList,
    auth: AuthenticatedDevice,
    registration_ids: dict[int, int],
    *,
    raise_: bool,
) -> bool:
    """Whether ``registration_ids`` (device id -> registration id of a send) names exactly the
    account's devices, less the sending one on one's own account.

    Raises (with ``raise_``; else returns False): MismatchedDevicesError, StaleDevicesError."""
    current = devices.registration_ids
    if devices.account_id == auth.account_id:
        current = {d: r for d, r in current.items() if d != auth.device_id}
    missing = sorted(current.keys() - registration_ids.keys())
    extra = sorted(registration_ids.keys() - current.keys())
    if missing or extra or not current:
        if raise_:
            raise MismatchedDevicesError(missing, extra)
        return False
    stale = sorted(d for d, r in registration_ids.items() if r != current[d])
    if stale:
        if raise_:
            raise StaleDevicesError(stale)
        return False
    return True


@router.get("", response_model=Pending, responses=errors(*DEVICE_AUTH))
async def pending(auth: DeviceDep, state: StateDep) -> Pending:
    queued = await state.store.pending(
        auth.account_id, auth.device_id, now_ms=state.clock(), limit=PAGE + 1
    )
    return Pending(envelopes=[b64e(q.envelope) for q in queued[:PAGE]], more=len(queued) > PAGE)


@router.delete(
    "/{message_id}",
    status_code=204,
    responses=errors(*DEVICE_AUTH, DecodeError, StorageUnavailableError),
)
async def acknowledge(message_id: str, auth: DeviceDep, state: StateDep) -> Response:
    raw = b64d(message_id, what="message id", max_len=MESSAGE_ID_LEN)
    if len(raw) != MESSAGE_ID_LEN:
        raise DecodeError(f"a message id is {MESSAGE_ID_LEN} bytes")
    if await state.store.acknowledge(auth.account_id, auth.device_id, raw):
        state.metrics.envelopes_delivered.inc()
    return Response(status_code=204)
