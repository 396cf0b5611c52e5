"""Attachments: the ciphertext streamed into the attachment store (`tidings.storage.blobs`:
local disk, or S3) with a size limit, an unguessable id, download until expiry. The server
never sees the key or the plaintext."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from tidings import errors as e
from tidings.errors import (
    AttachmentQuotaExceededError,
    AttachmentTooLargeError,
    DecodeError,
    StorageUnavailableError,
    TruncatedError,
    UnknownAttachmentError,
)
from tidings.server.auth import DeviceDep
from tidings.server.ids import parse_id
from tidings.server.models import AttachmentCreated
from tidings.server.openapi import DEVICE_AUTH, errors
from tidings.server.state import StateDep
from tidings.storage.blobs import ATTACHMENT_ID_PATTERN

router = APIRouter(prefix="/v1/attachments", tags=["attachments"])

_ID_BYTES = 32  # 256-bit ids: the id is the capability to download


async def _request_body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        # The client went away mid-body: an ordinary event for a mobile client, a typed
        # answer (nobody reads it) rather than an "unhandled error" and a 500.
        raise TruncatedError("the upload ended before its Content-Length") from None


# The body is read as a stream, not declared in the signature: the contract says it here.
_CIPHERTEXT = {
    "required": True,
    "description": "The attachment ciphertext; `Content-Length` is required.",
    "content": {
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary", "minLength": 1}
        }
    },
}
_DOWNLOAD = {
    "description": "The attachment ciphertext.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


@router.post(
    "",
    status_code=201,
    response_model=AttachmentCreated,
    responses=errors(
        *DEVICE_AUTH,
        e.DecodeError,
        e.TruncatedError,
        e.AttachmentTooLargeError,
        e.RateLimitedError,
        e.AttachmentQuotaExceededError,
        e.StorageUnavailableError,
    ),
    openapi_extra={"requestBody": _CIPHERTEXT},
)
async def upload(request: Request, auth: DeviceDep, state: StateDep) -> AttachmentCreated:
    limit = state.config.attachment_max_bytes
    await state.limiter.hit(
        "upload", str(auth.account_id), state.config.rate_attachment_uploads_per_minute, 60
    )
    try:
        declared = parse_id(
            request.headers["content-length"], what="Content-Length", maximum=2**63 - 1, minimum=0
        )
    except (KeyError, DecodeError):
        raise DecodeError("Content-Length is required") from None
    if declared < 1:
        # An attachment ciphertext is never empty (it carries at least its MAC): a request
        # without a body is a client bug, not an attachment to store.
        raise DecodeError("the attachment body is empty")
    if declared > limit:
        raise AttachmentTooLargeError(f"attachments are limited to {limit} bytes")
    quota = state.config.attachment_quota_bytes
    if await state.store.attachment_bytes(auth.account_id, state.clock()) + declared > quota:
        # Before a byte is written: a refused upload costs no disk.
        raise AttachmentQuotaExceededError(f"an account's attachments are limited to {quota} bytes")
    attachment_id = secrets.token_urlsafe(_ID_BYTES)
    # Nothing of a refused or broken upload stays in the store (its contract).
    size = await state.attachments.put(
        attachment_id, _request_body(request), declared=declared, limit=limit
    )
    now = state.clock()
    expires = now + state.config.attachment_ttl_s * 1000
    try:
        await state.store.add_attachment(
            attachment_id, auth.account_id, size, now, expires, quota_bytes=quota
        )
    except BaseException:
        # No record, no bytes: nothing kept on failure (shielded: a cancelled request too).
        # The refusal (quota, database) is the answer, not a failure to clean up after it.
        with anyio.CancelScope(shield=True), contextlib.suppress(StorageUnavailableError):
            await state.attachments.delete_many([attachment_id])
        raise
    return AttachmentCreated(id=attachment_id, expires_at_ms=expires)


@router.get(
    "/{attachment_id}",
    response_class=StreamingResponse,
    responses={
        200: _DOWNLOAD,
        **errors(*DEVICE_AUTH, e.UnknownAttachmentError, e.StorageUnavailableError),
    },
)
async def download(attachment_id: str, auth: DeviceDep, state: StateDep) -> StreamingResponse:
    # Ids are token_urlsafe: anything else (a path, a dot) cannot be one and never reaches
    # the store.
    if not ATTACHMENT_ID_PATTERN.fullmatch(attachment_id):
        raise UnknownAttachmentError("no such attachment (or it expired)")
    if await state.store.attachment(attachment_id, state.clock()) is None:
        raise UnknownAttachmentError("no such attachment (or it expired)")
    stream = await state.attachments.open(attachment_id)
    if stream is None:
        raise UnknownAttachmentError("no such attachment (or it expired)")
    return StreamingResponse(
        stream.chunks,
        media_type="application/octet-stream",
        headers={"Content-Length": str(stream.size)},
    )
