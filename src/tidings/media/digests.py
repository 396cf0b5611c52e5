"""Exact digests of plaintext bytes, for the MD5 and SHA-256 entries of hash banks.

These are content identifiers, not a security mechanism: banks in the field (ThreatExchange,
HMA, NCMEC lists) publish MD5 and SHA-256 values of known files, and matching a file means
computing the same digest of the same bytes. Nothing here authenticates or protects anything,
which is why this module, and not `tidings.crypto.primitives`, is the home of MD5; it is listed
beside the hazmat modules in tests/test_layers.py because it imports `hashlib`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from string import hexdigits
from typing import Final, Literal

from tidings.errors import DecodeError

DigestKind = Literal["md5", "sha256"]
"""The exact-match signal types, named as in hash-bank CSVs (`md5,<32 hex>`, `sha256,<64 hex>`)."""

DIGEST_SIZES: Final[dict[DigestKind, int]] = {"md5": 16, "sha256": 32}
"""Bytes in a digest of each kind."""


@dataclass(frozen=True, slots=True)
class ContentDigests:
    """The MD5 and SHA-256 digests of one piece of plaintext."""

    md5: bytes
    sha256: bytes

    def of_kind(self, kind: DigestKind) -> bytes:
        """The digest of ``kind``."""
        return self.md5 if kind == "md5" else self.sha256


def content_digests(data: bytes) -> ContentDigests:
    """The MD5 and SHA-256 digests of ``data`` (any bytes; never raises)."""
    # usedforsecurity=False: MD5 is an identifier here, and FIPS-mode builds refuse it otherwise.
    return ContentDigests(
        md5=hashlib.md5(data, usedforsecurity=False).digest(),
        sha256=hashlib.sha256(data).digest(),
    )


def parse_digest(kind: DigestKind, text: str) -> bytes:
    """The digest of ``kind`` written as hex in ``text`` (either case, no spaces).

    Raises:
        DecodeError: ``text`` is not exactly the hex of a digest of that kind.
    """
    size = DIGEST_SIZES[kind]
    if len(text) != 2 * size:
        raise DecodeError(f"a {kind} digest is {2 * size} hex digits, not {len(text)}")
    if not all(c in hexdigits for c in text):  # bytes.fromhex would also skip spaces
        raise DecodeError(f"a {kind} digest must be hex digits only")
    return bytes.fromhex(text)
