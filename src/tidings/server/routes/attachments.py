"""Attachments: the ciphertext streamed to disk with a size limit, an unguessable id, download
until expiry. The server never sees the key or the plaintext."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from tidings import errors as e
from tidings.errors import (
    AttachmentQuotaExceededError,
    AttachmentTooLargeError,
    DecodeError,
    TruncatedError,
    UnknownAttachmentError,
)
from tidings.server.auth import DeviceDep
from tidings.server.ids import parse_id
from tidings.server.models import AttachmentCreated
from tidings.server.openapi import DEVICE_AUTH, errors
from tidings.server.state import StateDep
from tidings.storage.files import open_private, remove_stale_files

router = APIRouter(prefix="/v1/attachments", tags=["attachments"])

_ID_BYTES = 32  # 256-bit ids: the id is the capability to download
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")

PARTIAL_SUFFIX = ".part"
"""An upload is written to ``<id>.part`` and renamed to ``<id>`` once complete."""
ORPHAN_PARTIAL_AGE_S = 3600.0
"""A ``.part`` file not written to for this long is an orphan of a crashed upload. An upload in
progress (on any node sharing the directory) writes every chunk as it arrives, so its mtime
stays fresh; an hour is far above any stall of a live upload and above clock skew between
nodes and the shared volume."""


def _write_through(out: BinaryIO, chunk: bytes) -> None:
    # Flushed at once, not held in a buffer: every chunk refreshes the .part file's mtime,
    # which is what tells a live upload (however slow) from a crash's orphan.
    out.write(chunk)
    out.flush()


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
    path = state.attachments_dir / attachment_id
    partial = path.with_suffix(PARTIAL_SUFFIX)
    size = 0
    try:
        with open_private(partial) as out:  # 0600 whatever the umask; kept by the rename
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > min(limit, declared):
                        raise AttachmentTooLargeError(f"attachments are limited to {limit} bytes")
                    # In a worker thread: a slow disk must not stall every other connection.
                    await anyio.to_thread.run_sync(_write_through, out, chunk)
            except ClientDisconnect:
                # The client went away mid-body: an ordinary event for a mobile client, a
                # typed answer (nobody reads it) rather than an "unhandled error" and a 500.
                raise TruncatedError("the upload ended before its Content-Length") from None
        if size != declared:
            raise TruncatedError("the body is shorter than its Content-Length")
        os.replace(partial, path)
    except BaseException:
        # A client that vanished mid-upload, or an oversized body: leave nothing behind.
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    now = state.clock()
    expires = now + state.config.attachment_ttl_s * 1000
    try:
        await state.store.add_attachment(
            attachment_id, auth.account_id, size, now, expires, quota_bytes=quota
        )
    except BaseException:
        path.unlink(missing_ok=True)  # no record, no file: nothing kept on failure
        raise
    return AttachmentCreated(id=attachment_id, expires_at_ms=expires)


@router.get(
    "/{attachment_id}",
    response_class=FileResponse,
    responses={200: _DOWNLOAD, **errors(*DEVICE_AUTH, e.UnknownAttachmentError)},
)
async def download(attachment_id: str, auth: DeviceDep, state: StateDep) -> FileResponse:
    # Ids are token_urlsafe: anything else (a path, a dot) cannot be one and never reaches
    # the file system.
    if not _ID_PATTERN.fullmatch(attachment_id):
        raise UnknownAttachmentError("no such attachment (or it expired)")
    size = await state.store.attachment(attachment_id, state.clock())
    path = state.attachments_dir / attachment_id
    if size is None or not path.is_file():
        raise UnknownAttachmentError("no such attachment (or it expired)")
    return FileResponse(path, media_type="application/octet-stream")


def remove_orphan_partials(attachments_dir: Path) -> int:
    """Delete the ``.part`` files of uploads that crashed (not written to for
    `ORPHAN_PARTIAL_AGE_S`); returns how many. Blocking (a directory scan): run it in a worker
    thread from async code.

    Raises:
        OSError: the directory cannot be listed or a file cannot be deleted.
    """
    return remove_stale_files(
        attachments_dir, suffix=PARTIAL_SUFFIX, max_age_s=ORPHAN_PARTIAL_AGE_S
    )
