"""The inner payload of a detection voucher (docs/detection.md "Vouchers", docs/protocol.md).

The device puts one `DetectionInnerPayload` inside each voucher it builds for an image it
sends: everything the provider needs to fetch and decrypt exactly that attachment, and only
once the account's matching vouchers crossed the threshold (before that the payload stays
encrypted under a key the server cannot derive). The server then re-hashes the decrypted image
itself and checks the distance in the clear; the PDQ hash carried here is the device's claim,
shown to the reviewer beside the server's own hash, never trusted alone.

Fixed size (`INNER_PAYLOAD_LEN`, 134 bytes), so every inner ciphertext has the same length
(a synthetic voucher's random inner bytes then have the length of a real one), and as small
as what the reviewer needs, so that a voucher fits in 8 KB (docs/detection.md, "Vouchers")::

    u8   version (= 2)
    32   attachment id (the 32 bytes whose base64url is the id)
    32   attachment key
    32   SHA-256 of the whole attachment ciphertext (the pointer's digest)
    u32  plaintext size (attachments are at most 100 MiB)
    u8   content type: an index into `CONTENT_TYPES` (0: not one of them)
    32   PDQ hash the device computed (256 bits, PDQ's own bit order)

Every field is checked: one payload has one encoding.

The published list's signature (``GET /v1/detection/list/digest``) is Ed25519 over
`list_statement`, which every client and ``tidings audit detection-list`` rebuild from the
published fields::

    "Tidings_DetectionList_v1" || u64(version) || digest (32) || u32(threshold)
        || u64(created_ms)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tidings.errors import DecodeError, OversizedError, TruncatedError, UnsupportedVersionError
from tidings.wire.base64url import b64d, b64e
from tidings.wire.binary import U32_MAX, U64_MAX, Reader, require_bytes, require_uint, u8, u32, u64

__all__ = [
    "CONTENT_TYPES",
    "DETECTION_INNER_VERSION",
    "INNER_PAYLOAD_LEN",
    "LIST_STATEMENT_LABEL",
    "NO_MESSAGE_ID",
    "DetectionInnerPayload",
    "list_statement",
]

DETECTION_INNER_VERSION = 2
"""Version 1 (256 bytes: padded ASCII id and content type, a message id) made vouchers 8.4 KB."""
_ID_LEN = 32
_KEY_LEN = 32
_DIGEST_LEN = 32
_PDQ_LEN = 32
INNER_PAYLOAD_LEN = 1 + _ID_LEN + _KEY_LEN + _DIGEST_LEN + 4 + 1 + _PDQ_LEN
"""Every encoded inner payload is exactly this long (134)."""
CONTENT_TYPES = (
    "",
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/tiff",
)
"""The content types a payload names; any other is sent as "" (the server decodes the image
itself, so this is only the sender's label, shown to the reviewer)."""
NO_MESSAGE_ID = bytes(16)
"""The message id recorded for a detection match: the payload carries none (the device builds
the voucher before the server assigns one)."""


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


def attachment_id_bytes(attachment_id: object) -> bytes:
    """The 32 bytes of an attachment id (43 base64url characters, canonical).

    Raises:
        DecodeError: anything else.
    """
    if not isinstance(attachment_id, str) or len(attachment_id) != 43:
        raise DecodeError("an attachment id is 43 base64url characters")
    raw = b64d(attachment_id, what="attachment id", max_len=_ID_LEN)
    if len(raw) != _ID_LEN or b64e(raw) != attachment_id:
        raise DecodeError("an attachment id is the base64url of 32 bytes")
    return raw


@dataclass(frozen=True, slots=True)
class DetectionInnerPayload:
    """What the server may learn about one matched image once the threshold is crossed.

    Construction checks every field (`DecodeError` naming the field): ``attachment_id`` an
    attachment id (the base64url of 32 bytes), ``key`` / ``digest`` / ``pdq`` 32 bytes,
    ``size`` an unsigned 32-bit integer, ``content_type`` one of `CONTENT_TYPES`
    (`for_content_type` maps any other to "").
    """

    attachment_id: str
    key: bytes = field(repr=False)
    digest: bytes
    size: int
    content_type: str
    pdq: bytes

    def __post_init__(self) -> None:
        attachment_id_bytes(self.attachment_id)
        require_bytes(self.key, _KEY_LEN, "attachment key")
        require_bytes(self.digest, _DIGEST_LEN, "attachment digest")
        require_uint(self.size, U32_MAX, "attachment size")
        if self.content_type not in CONTENT_TYPES:
            raise DecodeError("the content type is not one a payload names")
        require_bytes(self.pdq, _PDQ_LEN, "PDQ hash")

    @staticmethod
    def for_content_type(content_type: str) -> str:
        """``content_type`` if a payload can name it, else ""."""
        return content_type if content_type in CONTENT_TYPES else ""

    def encode(self) -> bytes:
        """The `INNER_PAYLOAD_LEN`-byte encoding (module docstring)."""
        return b"".join(
            (
                u8(DETECTION_INNER_VERSION),
                attachment_id_bytes(self.attachment_id),
                self.key,
                self.digest,
                u32(self.size),
                u8(CONTENT_TYPES.index(self.content_type)),
                self.pdq,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> DetectionInnerPayload:
        """Inverse of `encode`.

        Raises:
            OversizedError: longer than `INNER_PAYLOAD_LEN`.
            TruncatedError: shorter.
            UnsupportedVersionError: a version byte other than 2.
            DecodeError: not bytes, an unknown content type code.
        """
        if isinstance(data, bytes | bytearray | memoryview) and len(data) > INNER_PAYLOAD_LEN:
            raise OversizedError(f"a detection inner payload is {INNER_PAYLOAD_LEN} bytes")
        reader = Reader(data, "detection inner payload")
        if reader.remaining < INNER_PAYLOAD_LEN:
            raise TruncatedError(f"a detection inner payload is {INNER_PAYLOAD_LEN} bytes")
        version = reader.u8()
        if version != DETECTION_INNER_VERSION:
            raise UnsupportedVersionError(f"detection inner payload version {version}")
        attachment_id = b64e(reader.take(_ID_LEN))
        key = reader.take(_KEY_LEN)
        digest = reader.take(_DIGEST_LEN)
        size = reader.u32()
        code = reader.u8()
        if code >= len(CONTENT_TYPES):
            raise DecodeError("unknown content type code in a detection inner payload")
        pdq = reader.take(_PDQ_LEN)
        reader.finish()
        return cls(attachment_id, key, digest, size, CONTENT_TYPES[code], pdq)
