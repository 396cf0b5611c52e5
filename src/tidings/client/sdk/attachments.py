"""Attachments: encrypted upload and download of files."""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path

from tidings.client.errors import StoreError
from tidings.client.sdk.constants import DEFAULT_CONTENT_TYPE
from tidings.client.sdk.detection import DetectionMixin
from tidings.client.sdk.models import SentMessage
from tidings.client.transport import Progress, b64d
from tidings.crypto import attachment
from tidings.errors import AttachmentTooLargeError, ProtocolError
from tidings.media.pdq import MAX_IMAGE_BYTES
from tidings.wire import tidings_pb2 as pb


class AttachmentsMixin(DetectionMixin):
    """Attachments, a part of `Client`."""

    async def send_file(
        self,
        username: str,
        path: Path,
        *,
        caption: str = "",
        content_type: str = DEFAULT_CONTENT_TYPE,
        progress: Progress | None = None,
    ) -> SentMessage:
        """Encrypt the file at ``path`` (fresh 32-byte key, streaming, docs/protocol.md
        Attachments), upload the ciphertext, and send a message carrying the pointer (id, key,
        digest, size) to ``username``. The server only ever sees ciphertext. ``progress`` sees
        (ciphertext bytes uploaded, total) while uploading.

        Raises:
            AttachmentTooLargeError: the file exceeds the protocol's attachment limit.
            StoreError: the file cannot be read.
            and everything `send_text` raises.
        """
        data = await self._file_message(Path(path), caption, content_type, progress)
        sent = await self._send_data(username, data)
        await self._flush_vouchers_quietly()
        return sent

    async def _file_message(
        self, path: Path, caption: str, content_type: str, progress: Progress | None
    ) -> pb.DataMessage:
        """Encrypt and upload one file; the message that carries its pointer (the key is in
        it) under ``caption``, to send to a contact or a group. An image also gets its
        detection voucher filed (`DetectionMixin._vouch`); the caller posts it after the send
        (`_flush_vouchers_quietly`).

        Raises: AttachmentTooLargeError, StoreError (unreadable file), ServerError,
        TransportError.
        """
        try:
            size = path.stat().st_size
        except OSError:
            raise StoreError(f"cannot read {path}") from None
        if size > attachment.MAX_ATTACHMENT_BYTES:
            raise AttachmentTooLargeError(
                f"the file is larger than {attachment.MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB"
            )
        # A file small enough to be an image PDQ hashes is read once, and the same bytes are
        # encrypted and vouched for (a file changed between two reads cannot get a voucher
        # for other bytes than those sent).
        plaintext: bytes | None = None
        key = attachment.generate_key()
        with tempfile.TemporaryFile() as ciphertext:
            try:
                if size <= MAX_IMAGE_BYTES:
                    plaintext = await asyncio.to_thread(path.read_bytes)
                    info = attachment.encrypt_file(key, io.BytesIO(plaintext), ciphertext)
                else:
                    with path.open("rb") as source:
                        info = attachment.encrypt_file(key, source, ciphertext)
            except OSError:
                raise StoreError(f"cannot read {path}") from None
            ciphertext.seek(0)
            attachment_id = await self._transport.upload_attachment(
                ciphertext, info.ciphertext_size, progress=progress
            )
        pointer = pb.AttachmentPointer(
            id=attachment_id,
            key=key,
            digest=info.digest,
            size=info.plaintext_size,
            chunk_size=info.chunk_size,
            content_type=content_type,
            file_name=path.name[:255],
        )
        if plaintext is not None:
            await self._vouch(plaintext, pointer)
        return pb.DataMessage(body=caption, attachments=[pointer])

    async def download_attachment(
        self,
        message_id: str,
        destination: Path,
        *,
        index: int = 0,
        progress: Progress | None = None,
    ) -> Path:
        """Download, verify and decrypt attachment ``index`` of a stored message into
        ``destination`` (a file path, or a directory to put the original file name in).
        ``progress`` sees (ciphertext bytes received, total) while downloading.

        Raises:
            ProtocolError: no such message or attachment.
            AttachmentError: the ciphertext does not match the digest or does not decrypt
                (nothing is left at ``destination`` then).
            ServerError: the attachment expired (404) or was refused.
        """
        record = self._message_record(message_id)
        pointers = [] if record is None else record.attachment_pointers
        if not 0 <= index < len(pointers):
            raise ProtocolError("no such message or attachment")
        pointer = pointers[index]
        destination = Path(destination)
        if destination.is_dir():
            name = Path(str(pointer.get("file_name") or "attachment")).name or "attachment"
            destination = destination / name
        ciphertext = await self._transport.download_attachment(
            str(pointer["id"]), progress=progress
        )
        partial = destination.with_name(destination.name + ".part")
        try:
            with partial.open("wb") as out:
                out.write(
                    attachment.decrypt_bytes(
                        b64d(pointer["key"]),
                        ciphertext,
                        b64d(pointer["digest"]),
                        expected_size=int(pointer["size"]),
                    )
                )
            partial.replace(destination)
        except OSError:
            partial.unlink(missing_ok=True)
            raise StoreError(f"cannot write {destination}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return destination

