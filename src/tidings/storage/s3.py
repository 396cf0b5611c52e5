"""Attachments in S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph RGW...): the
`tidings.storage.blobs.AttachmentStore` for a cluster with no shared disk. Every node reads and
writes one bucket; the object key is the attachment id.

The client library is boto3 (AWS's own, the reference S3 client, released weekly): its client
is thread-safe and blocking, so every call runs in a worker thread (`anyio.to_thread`) and the
event loop never waits on the network. An async wrapper (aiobotocore) pins botocore to its own
release cadence and would still have to be bridged back to threads for the synchronous
safety side, which reads reported attachments; one blocking client serves both.

Uploads stream with bounded memory: bytes are gathered into parts of `PART_BYTES` (8 MiB, above
S3's 5 MiB minimum for all parts but the last) and each full part is sent as it fills, so an
upload holds at most one part (plus one incoming chunk) whatever its size. A body that fits in
one part is a single ``PutObject``. Any failure (over the limit, truncated, the client gone,
S3 failing, cancellation) aborts the multipart upload, so no object and no part is left; an
abort that fails itself is left to `S3AttachmentStore.remove_orphans`, which aborts multipart
uploads started more than `ORPHAN_PARTIAL_AGE_S` ago. Downloads stream the object's body in
`tidings.storage.blobs.READ_CHUNK_BYTES` pieces.

Every S3 or connection failure is raised as `StorageUnavailableError` (HTTP 503
``storage_unavailable``) carrying the error's class and S3 code only: never the endpoint's
answer, the credentials or the object key (the id is a download capability). The secret key
is held by the boto3 client only; `repr` names the bucket.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tidings.errors import StorageUnavailableError
from tidings.storage.blobs import (
    ORPHAN_PARTIAL_AGE_S,
    AttachmentStream,
    bounded_body,
    read_in_chunks,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["PART_BYTES", "S3AttachmentStore"]

log = logging.getLogger("tidings.storage.s3")

PART_BYTES = 8 * 1024 * 1024
"""Size of each multipart-upload part but the last; what one upload holds in memory."""
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_MISSING = frozenset({"NoSuchKey", "NoSuchUpload", "404", "NotFound"})
_T = TypeVar("_T")


def _unavailable(exc: Exception) -> StorageUnavailableError:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    log.warning("attachment store unavailable", extra={"error": type(exc).__name__, "s3": code})
    return StorageUnavailableError(
        f"the attachment store is unavailable ({type(exc).__name__}{' ' + code if code else ''})"
    )


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code", "") in _MISSING


class S3AttachmentStore:
    """`AttachmentStore` in one S3 bucket (which the operator creates). ``endpoint_url``
    empty means AWS; ``region``, ``access_key_id`` and ``secret_access_key`` empty mean
    boto3's defaults (``AWS_*`` environment variables, instance credentials)."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.bucket = bucket
        self.part_bytes = part_bytes
        config = Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            # Path-style URLs (endpoint/bucket/key) work on every S3-compatible server;
            # virtual-host style needs wildcard DNS the operator's own server rarely has.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # Checksums only where S3 requires them: S3-compatible servers differ in which
            # of the newer flexible checksums they accept.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of its own: boto3's default session is shared module state.
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3AttachmentStore(bucket={self.bucket!r})"

    async def _call(self, fn: Callable[..., _T], /, **kwargs: Any) -> _T:
        """``fn(**kwargs)`` in a worker thread, S3 failures as `StorageUnavailableError`
        (a missing object stays a `ClientError` for the caller to tell apart)."""
        return await anyio.to_thread.run_sync(functools.partial(self._blocking, fn, **kwargs))

    @staticmethod
    def _blocking(fn: Callable[..., _T], /, **kwargs: Any) -> _T:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if _is_missing(exc):
                raise
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None

    async def put(
        self, attachment_id: str, chunks: AsyncIterator[bytes], *, declared: int, limit: int
    ) -> int:
        c, key = self._client, attachment_id
        upload_id = ""
        parts: list[CompletedPartTypeDef] = []
        buffer = bytearray()
        single_put = False

        async def send_part(data: bytes) -> None:
            nonlocal upload_id
            if not upload_id:
                started = await self._call(
                    c.create_multipart_upload, Bucket=self.bucket, Key=key
                )
                upload_id = started["UploadId"]
            number = len(parts) + 1
            sent = await self._call(
                c.upload_part,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
            parts.append({"PartNumber": number, "ETag": sent["ETag"]})

        try:
            body = bounded_body(chunks, declared=declared, limit=limit)
            async with contextlib.aclosing(body):
                async for chunk in body:
                    buffer += chunk
                    while len(buffer) >= self.part_bytes:
                        part = bytes(buffer[: self.part_bytes])
                        del buffer[: self.part_bytes]
                        await send_part(part)
            if not upload_id:
                single_put = True
                await self._call(c.put_object, Bucket=self.bucket, Key=key, Body=bytes(buffer))
            else:
                if buffer:
                    await send_part(bytes(buffer))
                await self._call(
                    c.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException as exc:
            # Shielded: a cancelled request (the client gone) must still clean up.
            with anyio.CancelScope(shield=True):
                await self._discard(key, upload_id, single_put)
            if isinstance(exc, ClientError):  # "no such upload": aborted under our feet
                raise _unavailable(exc) from None
            raise
        return declared

    async def _discard(self, key: str, upload_id: str, single_put: bool) -> None:
        """Leave nothing of a failed upload: abort its multipart upload, or delete the object
        a failed (perhaps timed-out yet stored) single put may have written. Never raises:
        what it cannot remove now, `remove_orphans` aborts later."""
        try:
            if upload_id:
                await self._call(
                    self._client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                )
            elif single_put:
                await self._call(self._client.delete_object, Bucket=self.bucket, Key=key)
        except Exception as exc:  # the upload's own error is what the caller must see
            log.warning("could not discard a failed upload", extra={"error": type(exc).__name__})

    async def open(self, attachment_id: str) -> AttachmentStream | None:
        try:
            got = await self._call(self._client.get_object, Bucket=self.bucket, Key=attachment_id)
        except ClientError:
            return None  # _call lets only "no such key" through
        chunks = read_in_chunks(got["Body"], failures=(BotoCoreError,), unavailable=_unavailable)
        return AttachmentStream(got["ContentLength"], chunks)

    def read(self, attachment_id: str) -> bytes | None:
        try:
            got = self._blocking(self._client.get_object, Bucket=self.bucket, Key=attachment_id)
            body = got["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except ClientError:
            return None
        except BotoCoreError as exc:  # the connection broke mid-body
            raise _unavailable(exc) from None

    async def size(self, attachment_id: str) -> int | None:
        try:
            head = await self._call(
                self._client.head_object, Bucket=self.bucket, Key=attachment_id
            )
        except ClientError:
            return None
        return head["ContentLength"]

    async def delete_many(self, attachment_ids: Sequence[str]) -> None:
        for start in range(0, len(attachment_ids), _DELETE_BATCH):
            batch = attachment_ids[start : start + _DELETE_BATCH]
            answer = await self._call(
                self._client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            if answer.get("Errors"):
                raise StorageUnavailableError(
                    f"the attachment store kept {len(answer['Errors'])} object(s) it was told to "
                    "delete"
                )

    async def remove_orphans(self) -> int:
        """Abort the multipart uploads started more than `ORPHAN_PARTIAL_AGE_S` ago (a node
        that crashed mid-upload, or an abort that failed); returns how many."""
        cutoff = time.time() - ORPHAN_PARTIAL_AGE_S
        removed = 0
        paginator = self._client.get_paginator("list_multipart_uploads")

        def stale_uploads() -> list[tuple[str, str]]:
            return [
                (upload["Key"], upload["UploadId"])
                for page in paginator.paginate(Bucket=self.bucket)
                for upload in page.get("Uploads", [])
                if upload["Initiated"].timestamp() < cutoff
            ]

        for key, upload_id in await self._call(stale_uploads):
            with contextlib.suppress(ClientError):  # gone meanwhile (another node's round)
                await self._call(
                    self._client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                )
                removed += 1
        return removed
