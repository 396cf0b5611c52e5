"""ML-KEM-768 prekeys (docs/protocol.md, "Prekeys"): each signed by the identity key; one-time
ones, used by at most one session, and one *last-resort* key, reused whenever no one-time KEM
prekey is left and rotated together with the signed prekey. Their ids come from the same space
as the X25519 prekeys' (`tidings.crypto.prekeys.MAX_PREKEY_ID`).

The signature covers a fixed byte layout, not a protobuf encoding (which is not canonical)::

    KEM prekey:  "Tidings_KemPrekey_v1" || u32 id || u8 last_resort || ML-KEM public (1184)

(integers big-endian). The label separates it from the signed-prekey statement and every other
Ed25519 signature an identity makes; the last-resort flag is signed so that a server cannot
present a one-time key as reusable or the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tidings.crypto import primitives
from tidings.crypto.identity import IdentityKeyPair, RandomSource, draw_random
from tidings.crypto.prekeys import IdentitySignedPrekey, check_prekey_id
from tidings.wire import binary
from tidings.wire import tidings_pb2 as pb

KEM_PREKEY_LABEL = b"Tidings_KemPrekey_v1"
"""Domain label at the start of the KEM-prekey signing layout."""

_SIG = primitives.ED25519_SIGNATURE_LEN
_KEM_PUB = primitives.MLKEM768_PUBLIC_KEY_LEN
_KEM_SEED = primitives.MLKEM768_SEED_LEN


def kem_prekey_signing_payload(prekey_id: int, last_resort: bool, public: bytes) -> bytes:
    """``"Tidings_KemPrekey_v1" || u32 BE id || u8 last_resort (0/1) || public (1184)``.

    Raises:
        DecodeError: the id is outside 1..2^32-1 or the key is not 1184 bytes.
    """
    check_prekey_id(prekey_id)
    binary.require_bytes(public, _KEM_PUB, "ML-KEM prekey")
    return KEM_PREKEY_LABEL + binary.u32(prekey_id) + binary.u8(1 if last_resort else 0) + public


def _kind(last_resort: bool) -> str:
    return "last-resort" if last_resort else "one-time"


@dataclass(frozen=True, slots=True, repr=False)
class KemPrekey(IdentitySignedPrekey):
    """A published ML-KEM-768 prekey (one-time or last-resort) with its identity signature,
    which covers the last-resort flag too.

    Raises (construction):
        DecodeError: id outside 1..2^32-1, key not 1184 bytes or signature not 64 bytes.
    """

    last_resort: bool

    PUBLIC_KEY_LEN: ClassVar[int] = _KEM_PUB
    KIND: ClassVar[str] = "ML-KEM prekey"

    def signing_payload(self) -> bytes:
        return kem_prekey_signing_payload(self.id, self.last_resort, self.public)

    def to_wire(self) -> pb.KemPrekey:
        return pb.KemPrekey(
            id=self.id,
            public_key=self.public,
            signature=self.signature,
            last_resort=self.last_resort,
        )

    @classmethod
    def from_wire(cls, message: pb.KemPrekey) -> KemPrekey:
        public, signature = bytes(message.public_key), bytes(message.signature)
        return cls(message.id, public, signature, bool(message.last_resort))

    def __repr__(self) -> str:
        return f"KemPrekey(id={self.id}, {_kind(self.last_resort)})"


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class KemPrekeyPair:
    """An ML-KEM-768 prekey with its 64-byte private seed. ``created_ms`` is 0 for one-time keys
    (their age does not matter) and the generation time for last-resort keys.

    Private serialization (`to_bytes` / `read`, inside `DevicePrekeys.to_bytes`); only the
    last-resort layout carries the creation time::

        one-time:     u32 id || seed (64) || public (1184) || signature (64)
        last-resort:  u32 id || u64 created_ms || seed (64) || public (1184) || signature (64)
    """

    id: int
    seed: bytes
    public: bytes
    signature: bytes
    last_resort: bool
    created_ms: int = 0

    ONE_TIME_RECORD_LEN: ClassVar[int] = 4 + _KEM_SEED + _KEM_PUB + _SIG
    LAST_RESORT_RECORD_LEN: ClassVar[int] = ONE_TIME_RECORD_LEN + 8

    @classmethod
    def generate(
        cls,
        identity: IdentityKeyPair,
        prekey_id: int,
        last_resort: bool,
        now_ms: int,
        source: RandomSource,
    ) -> KemPrekeyPair:
        """A fresh key pair (a 64-byte seed drawn from ``source``) signed by ``identity``."""
        seed = draw_random(source, _KEM_SEED)
        public = primitives.mlkem768_public(seed)
        signature = identity.sign(kem_prekey_signing_payload(prekey_id, last_resort, public))
        return cls(prekey_id, seed, public, signature, last_resort, now_ms)

    @property
    def record(self) -> KemPrekey:
        return KemPrekey(self.id, self.public, self.signature, self.last_resort)

    def to_bytes(self) -> bytes:
        """The private serialization of the pair's own kind (secret)."""
        created = binary.u64(self.created_ms) if self.last_resort else b""
        return binary.u32(self.id) + created + self.seed + self.public + self.signature

    @classmethod
    def read(cls, r: binary.Reader, *, last_resort: bool) -> KemPrekeyPair:
        """Inverse of `to_bytes` for a pair of the given kind.

        Raises:
            TruncatedError: the reader ends early.
        """
        prekey_id = r.u32()
        created_ms = r.u64() if last_resort else 0
        seed, public, signature = r.take(_KEM_SEED), r.take(_KEM_PUB), r.take(_SIG)
        return cls(prekey_id, seed, public, signature, last_resort, created_ms)

    @classmethod
    def read_one_time(cls, r: binary.Reader) -> KemPrekeyPair:
        return cls.read(r, last_resort=False)

    @classmethod
    def read_last_resort(cls, r: binary.Reader) -> KemPrekeyPair:
        return cls.read(r, last_resort=True)

    def __repr__(self) -> str:
        return f"KemPrekeyPair(id={self.id}, {_kind(self.last_resort)})"
