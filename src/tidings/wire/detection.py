"""The inner payload of a detection voucher (docs/detection.md "Vouchers", docs/protocol.md).

The device puts one `DetectionInnerPayload` inside each voucher it builds for an image it
sends: everything the provider needs to fetch and decrypt exactly that attachment, and only
once the account's matching vouchers crossed the threshold (before that the payload stays
encrypted under a key the server cannot derive). The server then re-hashes the decrypted image
itself and checks the distance in the clear; the PDQ hash carried here is the device's claim,
shown to the reviewer beside the server's own hash, never trusted alone.

Fixed size, so every inner ciphertext has the same length whatever the attachment id or
content type (a synthetic voucher's random inner bytes then have the length of a real one)::

    u8   version (= 1)
    u8   len(attachment_id)  ||  attachment_id (ASCII)  padded with zeros to 64 bytes
    32   attachment key
    32   SHA-256 of the whole attachment ciphertext (the pointer's digest)
    u64  plaintext size
    u8   len(content_type)   ||  content_type (ASCII)   padded with zeros to 64 bytes
    32   PDQ hash the device computed (256 bits, PDQ's own bit order)
    16   server-assigned message id of the message carrying it, or 16 zero bytes if unknown
    zero bytes up to `INNER_PAYLOAD_LEN` (256)

Every padding byte must be zero and every length in range: one payload has one encoding.

The published list's signature (``GET /v1/detection/list/digest``) is Ed25519 over
`list_statement`, which every client and ``tidings audit detection-list`` rebuild from the
published fields::

    "Tidings_DetectionList_v1" || u64(version) || digest (32) || u32(threshold)
        || u64(created_ms)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tidings.errors import DecodeError, OversizedError, TruncatedError, UnsupportedVersionError
from tidings.wire.binary import U32_MAX, U64_MAX, Reader, require_bytes, require_uint, u8, u32, u64

__all__ = [
    "DETECTION_INNER_VERSION",
    "INNER_PAYLOAD_LEN",
    "LIST_STATEMENT_LABEL",
    "MAX_INNER_ATTACHMENT_ID_CHARS",
    "MAX_INNER_CONTENT_TYPE_CHARS",
    "NO_MESSAGE_ID",
    "DetectionInnerPayload",
    "list_statement",
]

DETECTION_INNER_VERSION = 1
INNER_PAYLOAD_LEN = 256
"""Every encoded inner payload is exactly this long."""
MAX_INNER_ATTACHMENT_ID_CHARS = 64
MAX_INNER_CONTENT_TYPE_CHARS = 64
_KEY_LEN = 32
_DIGEST_LEN = 32
_PDQ_LEN = 32
_MESSAGE_ID_LEN = 16
NO_MESSAGE_ID = bytes(_MESSAGE_ID_LEN)
"""The message id field of a payload whose message id the device did not know."""


LIST_STATEMENT_LABEL = b"Tidings_DetectionList_v1"
_LIST_DIGEST_LEN = 32


def list_statement(*, version: int, digest: bytes, threshold: int, created_ms: int) -> bytes:
    """The bytes the list-signing key signs for one published list (module docstring).

    Raises:
        DecodeError: a field out of range (``digest`` not 32 bytes, a negative number).
    """
    return b"".join(
        (
            LIST_STATEMENT_LABEL,
            u64(require_uint(version, U64_MAX, "list version")),
            require_bytes(digest, _LIST_DIGEST_LEN, "list digest"),
            u32(require_uint(threshold, U32_MAX, "threshold")),
            u64(require_uint(created_ms, U64_MAX, "list creation time")),
        )
    )


def _ascii_field(value: object, limit: int, what: str, *, allow_empty: bool) -> bytes:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise DecodeError(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise DecodeError(f"{what} is longer than {limit} characters")
    if not value.isascii() or not value.isprintable():
        raise DecodeError(f"{what} must be printable ASCII")
    return value.encode("ascii")


def _padded(value: bytes, width: int) -> bytes:
    return u8(len(value)) + value + bytes(width - len(value))


def _read_padded(reader: Reader, width: int, what: str) -> str:
    n = reader.u8()
    body = reader.take(width)
    if n > width:
        raise DecodeError(f"{what} length is out of range")
    if any(body[n:]):
        raise DecodeError(f"{what} padding is not zero")
    try:
        text = body[:n].decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} must be printable ASCII") from None
    if not text.isprintable():
        raise DecodeError(f"{what} must be printable ASCII")
    return text


@dataclass(frozen=True, slots=True)
class DetectionInnerPayload:
    """What the server may learn about one matched image once the threshold is crossed.

    Construction checks every field (`DecodeError` naming the field): ``attachment_id``
    1..64 printable ASCII characters, ``key`` / ``digest`` / ``pdq`` 32 bytes, ``size`` an
    unsigned 64-bit integer, ``content_type`` 0..64 printable ASCII characters,
    ``message_id`` 16 bytes (`NO_MESSAGE_ID` when unknown).
    """

    attachment_id: str
    key: bytes = field(repr=False)
    digest: bytes
    size: int
    content_type: str
    pdq: bytes
    message_id: bytes = NO_MESSAGE_ID

    def __post_init__(self) -> None:
        _ascii_field(
            self.attachment_id, MAX_INNER_ATTACHMENT_ID_CHARS, "attachment id", allow_empty=False
        )
        require_bytes(self.key, _KEY_LEN, "attachment key")
        require_bytes(self.digest, _DIGEST_LEN, "attachment digest")
        require_uint(self.size, U64_MAX, "attachment size")
        _ascii_field(
            self.content_type, MAX_INNER_CONTENT_TYPE_CHARS, "content type", allow_empty=True
        )
        require_bytes(self.pdq, _PDQ_LEN, "PDQ hash")
        require_bytes(self.message_id, _MESSAGE_ID_LEN, "message id")

    def encode(self) -> bytes:
        """The `INNER_PAYLOAD_LEN`-byte encoding (module docstring)."""
        body = b"".join(
            (
                u8(DETECTION_INNER_VERSION),
                _padded(self.attachment_id.encode("ascii"), MAX_INNER_ATTACHMENT_ID_CHARS),
                self.key,
                self.digest,
                u64(self.size),
                _padded(self.content_type.encode("ascii"), MAX_INNER_CONTENT_TYPE_CHARS),
                self.pdq,
                self.message_id,
            )
        )
        return body + bytes(INNER_PAYLOAD_LEN - len(body))

    @classmethod
    def decode(cls, data: bytes) -> DetectionInnerPayload:
        """Inverse of `encode`.

        Raises:
            OversizedError: longer than `INNER_PAYLOAD_LEN`.
            TruncatedError: shorter.
            UnsupportedVersionError: a version byte other than 1.
            DecodeError: not bytes, a length out of range, non-zero padding, non-ASCII text.
        """
        if isinstance(data, bytes | bytearray | memoryview) and len(data) > INNER_PAYLOAD_LEN:
            raise OversizedError(f"a detection inner payload is {INNER_PAYLOAD_LEN} bytes")
        reader = Reader(data, "detection inner payload")
        if reader.remaining < INNER_PAYLOAD_LEN:
            raise TruncatedError(f"a detection inner payload is {INNER_PAYLOAD_LEN} bytes")
        version = reader.u8()
        if version != DETECTION_INNER_VERSION:
            raise UnsupportedVersionError(f"detection inner payload version {version}")
        attachment_id = _read_padded(reader, MAX_INNER_ATTACHMENT_ID_CHARS, "attachment id")
        if not attachment_id:
            raise DecodeError("attachment id must be a non-empty string")
        key = reader.take(_KEY_LEN)
        digest = reader.take(_DIGEST_LEN)
        size = reader.u64()
        content_type = _read_padded(reader, MAX_INNER_CONTENT_TYPE_CHARS, "content type")
        pdq = reader.take(_PDQ_LEN)
        message_id = reader.take(_MESSAGE_ID_LEN)
        if any(reader.take(reader.remaining)):
            raise DecodeError("detection inner payload padding is not zero")
        reader.finish()
        return cls(attachment_id, key, digest, size, content_type, pdq, message_id)
