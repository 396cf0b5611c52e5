"""Attachment ciphertext at rest: the `AttachmentStore` interface and its local-directory
implementation (the embedded default). The S3 implementation is `tidings.storage.s3`.

The database (`tidings.storage.messaging`) holds the record of an attachment (owner, size,
expiry); a store holds only the bytes, under the attachment id. Callers write the bytes first
and record them after, and delete the record first and the bytes after, so a record never
names bytes that are not there.

Every store streams: an upload is consumed chunk by chunk under the size limit
(`bounded_body`) and never held whole in memory, a download is read chunk by chunk. On any
failure of an upload (over the limit, shorter than declared, the client gone, the store
failing, cancellation) nothing of it is left in the store.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import anyio
import anyio.to_thread

from tidings.errors import AttachmentTooLargeError, StorageUnavailableError, TruncatedError
from tidings.storage.files import open_private, remove_stale_files

__all__ = [
    "ATTACHMENT_ID_PATTERN",
    "ORPHAN_PARTIAL_AGE_S",
    "PARTIAL_SUFFIX",
    "READ_CHUNK_BYTES",
    "AttachmentStore",
    "AttachmentStream",
    "LocalAttachmentStore",
    "bounded_body",
    "read_in_chunks",
]

ATTACHMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
"""Attachment ids are 32 random bytes in base64url: anything else (a path, a dot) is never
looked up in a store."""

READ_CHUNK_BYTES = 256 * 1024
"""Downloads are read and sent in pieces of this size."""

PARTIAL_SUFFIX = ".part"
"""A local upload is written to ``<id>.part`` and renamed to ``<id>`` once complete."""
ORPHAN_PARTIAL_AGE_S = 3600.0
"""An unfinished upload (a ``.part`` file, an S3 multipart upload) not written to, or started,
this long ago is an orphan of a crashed node. An upload in progress (on any node sharing the
directory) writes every chunk as it arrives, so its mtime stays fresh; an hour is far above any
stall of a live upload and above clock skew between nodes and the shared volume."""


@dataclass(frozen=True, slots=True)
class AttachmentStream:
    """A stored attachment opened for reading: its size in bytes and its bytes in order.
    Iterating ``chunks`` to the end (or abandoning it) releases the underlying file or
    connection; an error of the store mid-way raises `StorageUnavailableError`."""

    size: int
    chunks: AsyncIterator[bytes]


class AttachmentStore(Protocol):
    """Where attachment ciphertext lives. Ids are checked by the caller
    (`ATTACHMENT_ID_PATTERN`); every method may raise `StorageUnavailableError` when the
    store cannot be reached."""

    async def put(
        self, attachment_id: str, chunks: AsyncIterator[bytes], *, declared: int, limit: int
    ) -> int:
        """Store exactly ``declared`` bytes read from ``chunks`` under ``attachment_id``;
        returns the size. Memory use is bounded whatever the size.

        Raises:
            AttachmentTooLargeError: more than ``min(limit, declared)`` bytes arrive.
            TruncatedError: ``chunks`` ends before ``declared`` bytes.
            StorageUnavailableError: the store failed.
            Whatever ``chunks`` raises. In every case nothing of the upload is left.
        """
        ...

    async def open(self, attachment_id: str) -> AttachmentStream | None:
        """The stored bytes of ``attachment_id`` for streaming, or None if there are none."""
        ...

    def read(self, attachment_id: str) -> bytes | None:
        """All stored bytes of ``attachment_id`` (None if there are none), blocking: for the
        synchronous safety side (report verification), which runs in a worker thread."""
        ...

    async def size(self, attachment_id: str) -> int | None:
        """The stored size of ``attachment_id``, or None if there is none."""
        ...

    async def delete_many(self, attachment_ids: Sequence[str]) -> None:
        """Delete the bytes of every id (ids without bytes are no error)."""
        ...

    async def remove_orphans(self) -> int:
        """Delete what crashed uploads left (older than `ORPHAN_PARTIAL_AGE_S`); returns how
        many went."""
        ...


async def bounded_body(
    chunks: AsyncIterator[bytes], *, declared: int, limit: int
) -> AsyncGenerator[bytes, None]:
    """``chunks`` passed through while they stay within ``min(limit, declared)`` bytes.

    Raises:
        AttachmentTooLargeError: one byte more arrives (before it is passed on).
        TruncatedError: ``chunks`` ends before ``declared`` bytes.
    """
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > min(limit, declared):
            raise AttachmentTooLargeError(f"attachments are limited to {limit} bytes")
        yield chunk
    if size != declared:
        raise TruncatedError("the body is shorter than its Content-Length")


def _write_through(out: BinaryIO, chunk: bytes) -> None:
    # Flushed at once, not held in a buffer: every chunk refreshes the .part file's mtime,
    # which is what tells a live upload (however slow) from a crash's orphan.
    out.write(chunk)
    out.flush()


def _unavailable(exc: Exception) -> StorageUnavailableError:
    # The class name only: an OSError's text carries the path, whose last part is the
    # attachment id (the download capability).
    return StorageUnavailableError(f"the attachment directory failed ({type(exc).__name__})")


class LocalAttachmentStore:
    """`AttachmentStore` in a local directory (``<data_dir>/attachments``, created 0700 by
    the caller): one file per attachment named by its id, mode 0600. An upload goes to
    ``<id>.part`` and is renamed when complete, so a reader never sees half a file; the
    ``.part`` files of crashed uploads are orphans for `remove_orphans`. File work runs in
    worker threads: a slow disk does not stall the event loop."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"LocalAttachmentStore({str(self.directory)!r})"

    async def put(
        self, attachment_id: str, chunks: AsyncIterator[bytes], *, declared: int, limit: int
    ) -> int:
        path = self.directory / attachment_id
        partial = path.with_suffix(PARTIAL_SUFFIX)
        try:
            with open_private(partial) as out:  # 0600 whatever the umask; kept by the rename
                body = bounded_body(chunks, declared=declared, limit=limit)
                async with contextlib.aclosing(body):
                    async for chunk in body:
                        await anyio.to_thread.run_sync(_write_through, out, chunk)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise _unavailable(exc) from None
        except BaseException:
            # A client that vanished mid-upload, or an oversized body: leave nothing behind.
            partial.unlink(missing_ok=True)
            raise
        return declared

    async def open(self, attachment_id: str) -> AttachmentStream | None:
        try:
            handle = await anyio.to_thread.run_sync(open, self.directory / attachment_id, "rb")
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise _unavailable(exc) from None
        chunks = read_in_chunks(handle, failures=(OSError,), unavailable=_unavailable)
        return AttachmentStream(os.fstat(handle.fileno()).st_size, chunks)

    def read(self, attachment_id: str) -> bytes | None:
        try:
            return (self.directory / attachment_id).read_bytes()
        except OSError:
            return None

    async def size(self, attachment_id: str) -> int | None:
        path = self.directory / attachment_id
        try:
            stat = await anyio.to_thread.run_sync(path.stat)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unavailable(exc) from None
        return stat.st_size

    async def delete_many(self, attachment_ids: Sequence[str]) -> None:
        def unlink_all() -> None:
            for attachment_id in attachment_ids:
                (self.directory / attachment_id).unlink(missing_ok=True)

        try:
            await anyio.to_thread.run_sync(unlink_all)
        except OSError as exc:
            raise _unavailable(exc) from None

    async def remove_orphans(self) -> int:
        """Delete the ``.part`` files of uploads that crashed (not written to for
        `ORPHAN_PARTIAL_AGE_S`), on this node or another sharing the directory."""
        scan = functools.partial(
            remove_stale_files,
            self.directory,
            suffix=PARTIAL_SUFFIX,
            max_age_s=ORPHAN_PARTIAL_AGE_S,
        )
        try:
            return await anyio.to_thread.run_sync(scan)
        except OSError as exc:
            raise _unavailable(exc) from None


class _BlockingReader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


async def read_in_chunks(
    reader: _BlockingReader,
    *,
    failures: tuple[type[Exception], ...],
    unavailable: Callable[[Exception], StorageUnavailableError],
) -> AsyncIterator[bytes]:
    """The bytes of a blocking ``reader`` (an open file, an S3 object body) in pieces of
    `READ_CHUNK_BYTES`, each read in a worker thread; ``reader`` is closed at the end (or when
    the iteration is abandoned). A store's own ``failures`` mid-way are raised as
    ``unavailable(exc)``."""
    try:
        while chunk := await anyio.to_thread.run_sync(reader.read, READ_CHUNK_BYTES):
            yield chunk
    except failures as exc:
        raise unavailable(exc) from None
    finally:
        reader.close()
