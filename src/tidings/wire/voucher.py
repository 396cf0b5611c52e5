"""The matching voucher's byte format (private threshold matching, issue 10; the protocol is in
`tidings.crypto.voucher`). Fixed layout, big-endian, built on `tidings.wire.binary`:

    u8   format version (VOUCHER_FORMAT_VERSION)
    u32  list version          \\  the header: also the outer layer's
    32   list digest           /   associated data, with the version byte
    u16  element count n       (= 4K of the list's parameters)
    u16  outer ciphertext length m
    n x (32-byte X25519 u-coordinate || 16-byte wrapped key)
    m    outer ciphertext

A voucher longer than `MAX_VOUCHER_BYTES` is refused before parsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidings.errors import MalformedVoucherError, OversizedError, UnsupportedVersionError
from tidings.wire.binary import Reader, u8, u16, u32

VOUCHER_FORMAT_VERSION = 1
LIST_DIGEST_LEN = 32
ELEMENT_U_LEN = 32
ELEMENT_WRAP_LEN = 16
ELEMENT_LEN = ELEMENT_U_LEN + ELEMENT_WRAP_LEN
HEADER_LEN = 1 + 4 + LIST_DIGEST_LEN
MAX_VOUCHER_ELEMENTS = 256
"""4 orientation classes x at most 64 tables."""
MAX_INNER_PAYLOAD_BYTES = 1024
"""What the caller may put in the inner layer (attachment pointer and key, for the reviewer)."""
MAX_OUTER_BYTES = 4096
MIN_OUTER_BYTES = 16
"""At least an AEAD tag."""
MAX_VOUCHER_BYTES = HEADER_LEN + 4 + MAX_VOUCHER_ELEMENTS * ELEMENT_LEN + MAX_OUTER_BYTES


@dataclass(frozen=True, slots=True)
class VoucherWire:
    """A parsed voucher: the header fields, the elements and the outer ciphertext (opaque)."""

    list_version: int
    list_digest: bytes
    elements: tuple[tuple[bytes, bytes], ...]
    outer_ct: bytes

    def header(self) -> bytes:
        """The bytes the outer AEAD authenticates: format version, list version, digest."""
        return voucher_header(self.list_version, self.list_digest)

    def encode(self) -> bytes:
        return b"".join(
            [
                self.header(),
                u16(len(self.elements)),
                u16(len(self.outer_ct)),
                *(u + wrap for u, wrap in self.elements),
                self.outer_ct,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> VoucherWire:
        """Parse a voucher.

        Raises:
            OversizedError: longer than `MAX_VOUCHER_BYTES`.
            UnsupportedVersionError: an unknown format version.
            TruncatedError: the input ends early.
            MalformedVoucherError: no elements, too many, an outer ciphertext out of bounds,
                trailing bytes, or not bytes.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedVoucherError("a voucher is bytes")
        if len(data) > MAX_VOUCHER_BYTES:
            raise OversizedError("the voucher is larger than the limit")
        reader = Reader(data, "voucher")
        if reader.u8() != VOUCHER_FORMAT_VERSION:
            raise UnsupportedVersionError("unknown voucher format version")
        list_version = reader.u32()
        digest = reader.take(LIST_DIGEST_LEN)
        count, outer_len = reader.u16(), reader.u16()
        if not 1 <= count <= MAX_VOUCHER_ELEMENTS:
            raise MalformedVoucherError("the voucher's element count is out of range")
        if not MIN_OUTER_BYTES <= outer_len <= MAX_OUTER_BYTES:
            raise MalformedVoucherError("the voucher's outer layer length is out of range")
        block = reader.take(count * ELEMENT_LEN)
        outer = reader.take(outer_len)
        if reader.remaining:
            raise MalformedVoucherError("the voucher has trailing bytes")
        elements = tuple(
            (block[i : i + ELEMENT_U_LEN], block[i + ELEMENT_U_LEN : i + ELEMENT_LEN])
            for i in range(0, len(block), ELEMENT_LEN)
        )
        return cls(list_version, digest, elements, outer)


def voucher_header(list_version: int, list_digest: bytes) -> bytes:
    """The header bytes for a voucher against list (version, digest)."""
    return u8(VOUCHER_FORMAT_VERSION) + u32(list_version) + list_digest
