"""Safety numbers: the per-conversation fingerprint two people compare to verify each other.

Follows Signal's numeric fingerprint scheme (docs/protocol.md is normative), over each side's
*vouched device list*: the identity keys of the devices its signed device list (key
transparency) names, sorted, so the number covers every device of the account::

    keys    = K_1 || ... || K_n      the n distinct 65-byte identity keys, in ascending order
    h_0     = u16(SAFETY_NUMBER_VERSION) || u8(n) || keys || UTF-8(account name)
    h_{i+1} = SHA-512(h_i || keys)                      for i = 0 .. ITERATIONS-1
    fingerprint(side) = h_ITERATIONS                    (64 bytes)
    digits(side)      = for each of the first six 5-byte chunks c of the fingerprint:
                        "%05d" % (int.from_bytes(c, "big") % 100000)          (30 digits)
    safety number     = min(digits(A), digits(B)) || max(digits(A), digits(B))  (60 digits)

Both sides order the two halves the same way (by the digit strings), so both see the same 60
digits, shown as 12 groups of 5. The number changes when any device key of either side (a
device added, removed or re-keyed) or either account name changes. The 5200 iterations make a
brute-force search for a key whose number matches a victim's slow (Signal's value; about 5 ms
here).

QR payload (what one phone shows and the other scans)::

    u8(SAFETY_NUMBER_VERSION) || fp_local[0:32] || fp_remote[0:32]          (65 bytes)

"local" is the side that displays the code. The scanner matches when the scanned local half is
its own remote half and vice versa (compared in constant time).

Nothing here reads a clock, does I/O or keeps global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from tidings.crypto.primitives import constant_time_equal, sha512
from tidings.errors import DecodeError, InvalidKeyError, UnsupportedVersionError
from tidings.wire import codec
from tidings.wire.binary import identifier_bytes, u8, u16

__all__ = [
    "DIGITS_PER_SIDE",
    "FINGERPRINT_LEN",
    "IDENTITY_KEY_LEN",
    "ITERATIONS",
    "MAX_KEYS",
    "QR_PAYLOAD_LEN",
    "SAFETY_NUMBER_VERSION",
    "SCANNABLE_LEN",
    "SafetyNumber",
    "ScanResult",
    "displayable_digits",
    "fingerprint",
]

SAFETY_NUMBER_VERSION = 2
"""Prefixes the iterated hash (as u16) and the QR payload (as u8). Version 2 hashes a side's
sorted device keys (version 1 hashed one identity key)."""

MAX_KEYS = 16
"""Device keys per side at most (`tidings.crypto.kt_device_list.MAX_DEVICES`)."""

ITERATIONS = 5200
"""SHA-512 iterations per side (Signal's value)."""

IDENTITY_KEY_LEN = codec.IDENTITY_KEY_LEN
"""65: the IdentityKey encoding, 0x01 || Ed25519 public (32) || X25519 public (32)."""

FINGERPRINT_LEN = 64
"""One side's iterated SHA-512 output."""

DIGITS_PER_SIDE = 30
"""Six groups of five digits per side; 60 digits in all."""

SCANNABLE_LEN = 32
"""Bytes of each side's fingerprint that go into the QR payload."""

QR_PAYLOAD_LEN = 1 + 2 * SCANNABLE_LEN
"""65 bytes."""

_CHUNK_LEN = 5
_GROUP_MODULUS = 100_000


class ScanResult(Enum):
    """Outcome of comparing a scanned QR payload with our own safety number."""

    MATCH = "match"
    MISMATCH = "mismatch"


Keys = bytes | Sequence[bytes]
"""One identity key, or a side's device keys (any order: they are sorted)."""


def _sorted_keys(identity_keys: Keys, who: str) -> list[bytes]:
    keys = [identity_keys] if isinstance(identity_keys, bytes | bytearray) else identity_keys
    if not 1 <= len(keys) <= MAX_KEYS:
        raise InvalidKeyError(f"{who} side has 1 to {MAX_KEYS} device keys")
    out = []
    for key in keys:
        if not isinstance(key, bytes | bytearray) or len(key) != IDENTITY_KEY_LEN:
            raise InvalidKeyError(f"{who} identity key must be {IDENTITY_KEY_LEN} bytes")
        out.append(bytes(key))
    if len(set(out)) != len(out):
        raise InvalidKeyError(f"{who} side lists one device key twice")
    return sorted(out)


def fingerprint(identity_keys: Keys, account: str) -> bytes:
    """One side's 64-byte fingerprint: ``ITERATIONS`` rounds of SHA-512, each over the previous
    output followed by the sorted device keys, starting from version || count || keys ||
    account name.

    Raises:
        InvalidKeyError: a key is not 65 bytes, none or more than `MAX_KEYS` are given, or
            one is given twice.
        DecodeError: ``account`` is empty, longer than 64 characters or not UTF-8 encodable.
    """
    keys = _sorted_keys(identity_keys, "the")
    name = identifier_bytes(account, "the account")
    key = b"".join(keys)
    digest = u16(SAFETY_NUMBER_VERSION) + u8(len(keys)) + key + name
    for _ in range(ITERATIONS):
        digest = sha512(digest + key)
    return digest


def displayable_digits(fingerprint_bytes: bytes) -> str:
    """The 30 digits of one side: the first six 5-byte big-endian chunks, each mod 100000,
    zero-padded to five digits."""
    return "".join(
        f"{int.from_bytes(fingerprint_bytes[i : i + _CHUNK_LEN], 'big') % _GROUP_MODULUS:05d}"
        for i in range(0, DIGITS_PER_SIDE // 5 * _CHUNK_LEN, _CHUNK_LEN)
    )


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """The safety number of one conversation as seen from the local side.

    Build it with `SafetyNumber.compute`. `digits` / `display` are the same for both sides;
    `qr_payload` differs (each side puts its own half first) and `matches_scanned` accounts for
    that.
    """

    local_fingerprint: bytes = field(repr=False)
    remote_fingerprint: bytes = field(repr=False)

    @classmethod
    def compute(
        cls,
        local_identity_key: Keys,
        local_account: str,
        remote_identity_key: Keys,
        remote_account: str,
    ) -> SafetyNumber:
        """Compute both fingerprints (about 2 x 5200 SHA-512 over n x 65 bytes each); each
        side is one identity key or its vouched device keys.

        Raises:
            InvalidKeyError: see `fingerprint`.
            DecodeError: an account name is empty, too long or not UTF-8 encodable.
        """
        return cls(
            local_fingerprint=fingerprint(local_identity_key, local_account),
            remote_fingerprint=fingerprint(remote_identity_key, remote_account),
        )

    @property
    def digits(self) -> str:
        """The 60 digits, the two sides' halves in ascending order (identical on both sides)."""
        local = displayable_digits(self.local_fingerprint)
        remote = displayable_digits(self.remote_fingerprint)
        return local + remote if local <= remote else remote + local

    @property
    def groups(self) -> tuple[str, ...]:
        """The 12 groups of five digits."""
        digits = self.digits
        return tuple(digits[i : i + 5] for i in range(0, len(digits), 5))

    def display(self) -> str:
        """``"12345 67890 ..."``: 12 groups separated by single spaces."""
        return " ".join(self.groups)

    def qr_payload(self) -> bytes:
        """``u8(version) || local fingerprint[0:32] || remote fingerprint[0:32]``."""
        return (
            u8(SAFETY_NUMBER_VERSION)
            + self.local_fingerprint[:SCANNABLE_LEN]
            + self.remote_fingerprint[:SCANNABLE_LEN]
        )

    def matches_scanned(self, payload: bytes) -> ScanResult:
        """Compare the QR payload scanned from the other side's screen with ours.

        It matches when its first half is our remote fingerprint and its second half is our
        local one. Both halves are always compared (constant time, no early exit).

        Raises:
            DecodeError: ``payload`` is not bytes or not 65 bytes.
            UnsupportedVersionError: the payload's version byte is not `SAFETY_NUMBER_VERSION`.
        """
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise DecodeError("safety number payload is not bytes")
        data = bytes(payload)
        if len(data) != QR_PAYLOAD_LEN:
            raise DecodeError(f"safety number payload must be {QR_PAYLOAD_LEN} bytes")
        if data[0] != SAFETY_NUMBER_VERSION:
            raise UnsupportedVersionError(f"safety number version {data[0]} is not supported")
        theirs_local = data[1 : 1 + SCANNABLE_LEN]
        theirs_remote = data[1 + SCANNABLE_LEN :]
        local_ok = constant_time_equal(theirs_remote, self.local_fingerprint[:SCANNABLE_LEN])
        remote_ok = constant_time_equal(theirs_local, self.remote_fingerprint[:SCANNABLE_LEN])
        return ScanResult.MATCH if local_ok & remote_ok else ScanResult.MISMATCH

    def __repr__(self) -> str:
        return "SafetyNumber(<60 digits>)"
