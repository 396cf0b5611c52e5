"""The published detection list as a device, or an outside auditor, checks it (issue 10,
docs/detection.md "Hash-list transparency").

The server publishes its current blinded list at ``GET /v1/detection/list`` and, separately,
``GET /v1/detection/list/digest``: the list's version, SHA-256 digest, threshold, creation
time and size, with an Ed25519 signature over `tidings.wire.detection.list_statement` and the
signing public key. Before a device uses a list it checks, in this order:

1. the signature verifies under the key in the document, and that key is the one the device
   pinned when it first saw a list (a server that signs with another key is refused; a key
   change is what the key-transparency log, issue 12, will make auditable);
2. the list's bytes have exactly the published size, decode, and have the published digest,
   version and threshold.

A list that fails either check is refused with `DetectionListRefusedError` and not used; the
device keeps the list it held. Everyone who fetches the digest sees the same signed statement,
so a list served to one user only shows up as a second digest (``tidings audit
detection-list URL`` prints what an outsider sees). What the digest does *not* show is the
list's content: it is blinded.

Pure: bytes and JSON in, typed values out; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidings.crypto.primitives import (
    ED25519_PUBLIC_KEY_LEN,
    ED25519_SIGNATURE_LEN,
    constant_time_equal,
    ed25519_verify,
)
from tidings.crypto.psi import BlindedList
from tidings.errors import DecodeError, DetectionListRefusedError, InvalidSignatureError
from tidings.wire.base64url import b64d, b64e
from tidings.wire.binary import U32_MAX, U64_MAX
from tidings.wire.detection import list_statement

__all__ = ["DIGEST_LEN", "MAX_LIST_BYTES", "PublishedList"]

DIGEST_LEN = 32
MAX_LIST_BYTES = 300 * 1024 * 1024
"""A device downloads at most this much list: `tidings.crypto.psi.MAX_LIST_SLOTS` points of
32 bytes, plus headroom for the header."""


def _uint(doc: dict[str, Any], name: str, limit: int) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise DecodeError(f"the published list's {name} is not a number in range")
    return value


def _binary(doc: dict[str, Any], name: str, length: int) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise DecodeError(f"the published list's {name} is missing")
    data = b64d(value, what=f"the published list's {name}", max_len=length)
    if len(data) != length:
        raise DecodeError(f"the published list's {name} is not {length} bytes")
    return data


@dataclass(frozen=True, slots=True)
class PublishedList:
    """The signed statement of ``GET /v1/detection/list/digest``."""

    version: int
    digest: bytes
    signature: bytes
    signing_public_key: bytes
    threshold: int
    created_ms: int
    size: int

    @classmethod
    def from_json(cls, doc: object) -> PublishedList:
        """Parse the digest document.

        Raises:
            DecodeError: not an object, a field missing or of the wrong type or length.
        """
        if not isinstance(doc, dict):
            raise DecodeError("the published list is not a JSON object")
        return cls(
            version=_uint(doc, "version", U64_MAX),
            digest=_binary(doc, "digest", DIGEST_LEN),
            signature=_binary(doc, "signature", ED25519_SIGNATURE_LEN),
            signing_public_key=_binary(doc, "signing_public_key", ED25519_PUBLIC_KEY_LEN),
            threshold=_uint(doc, "threshold", U32_MAX),
            created_ms=_uint(doc, "created_ms", U64_MAX),
            size=_uint(doc, "size", MAX_LIST_BYTES),
        )

    def to_json(self) -> dict[str, Any]:
        """The document `from_json` reads (binary fields base64url)."""
        return {
            "version": self.version,
            "digest": b64e(self.digest),
            "signature": b64e(self.signature),
            "signing_public_key": b64e(self.signing_public_key),
            "threshold": self.threshold,
            "created_ms": self.created_ms,
            "size": self.size,
        }

    def verify(self, *, pinned_key: bytes | None = None) -> None:
        """Check the signature, and that it is made with ``pinned_key`` when one is given.

        Raises:
            DetectionListRefusedError: another signing key than the pinned one, or a
                signature that does not verify.
        """
        if pinned_key is not None and not constant_time_equal(
            pinned_key, self.signing_public_key
        ):
            raise DetectionListRefusedError(
                "the detection list is signed with another key than the one pinned"
            )
        statement = list_statement(
            version=self.version,
            digest=self.digest,
            threshold=self.threshold,
            created_ms=self.created_ms,
        )
        try:
            ed25519_verify(self.signing_public_key, statement, self.signature)
        except InvalidSignatureError:
            raise DetectionListRefusedError(
                "the detection list's published signature does not verify"
            ) from None

    def check_list(self, data: bytes) -> BlindedList:
        """The list in ``data`` if it is the published one (call `verify` first).

        Raises:
            DetectionListRefusedError: a size, digest, version or threshold other than the
                published ones.
            DecodeError (or a subclass): the bytes are not a blinded list.
        """
        if len(data) != self.size:
            raise DetectionListRefusedError("the detection list is not the published size")
        blinded = BlindedList.decode(data)
        if not constant_time_equal(blinded.digest(), self.digest):
            raise DetectionListRefusedError("the detection list does not have the published digest")
        if blinded.version != self.version or blinded.params.threshold != self.threshold:
            raise DetectionListRefusedError(
                "the detection list's version or threshold is not the published one"
            )
        return blinded
