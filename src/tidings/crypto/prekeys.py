"""X25519 prekeys: the signed prekey and the one-time prekeys a device publishes so that others
can start sessions while it is offline (docs/protocol.md, "Prekeys").

- the *signed prekey* (X25519), signed by the identity Ed25519 key, rotated periodically; it is
  also the responder's first Double Ratchet key;
- *one-time prekeys* (X25519, unsigned), each used by at most one session.

The ML-KEM-768 prekeys are in `tidings.crypto.kem_prekeys`, the bundle that carries one of each
in `tidings.crypto.bundle`, and the device's private state holding them all in
`tidings.crypto.device_prekeys`. All kinds share one id space (`MAX_PREKEY_ID`).

The signature covers a fixed byte layout, not a protobuf encoding (which is not canonical)::

    signed prekey:  "Tidings_SignedPrekey_v1" || u32 id || X25519 public (32)

(integers big-endian). The label separates this signed statement from every other Ed25519
signature an identity makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tidings.crypto import primitives
from tidings.crypto.identity import IdentityKey, IdentityKeyPair, RandomSource, draw_random
from tidings.errors import DecodeError
from tidings.wire import binary
from tidings.wire import tidings_pb2 as pb

SIGNED_PREKEY_LABEL = b"Tidings_SignedPrekey_v1"
"""Domain label at the start of the signed-prekey signing layout."""

MAX_PREKEY_ID = binary.U32_MAX
"""Prekey ids are u32 in 1..MAX_PREKEY_ID; 0 is never issued (it is proto3's "unset")."""

_X = primitives.X25519_KEY_LEN
_SIG = primitives.ED25519_SIGNATURE_LEN


def check_prekey_id(prekey_id: int) -> None:
    """Raises `DecodeError` unless ``prekey_id`` is an int in 1..`MAX_PREKEY_ID`."""
    if not isinstance(prekey_id, int) or not 1 <= prekey_id <= MAX_PREKEY_ID:
        raise DecodeError("prekey id must be in 1..2^32-1")


def signed_prekey_signing_payload(prekey_id: int, public: bytes) -> bytes:
    """``"Tidings_SignedPrekey_v1" || u32 BE id || public (32)`` -- the bytes the identity signs.

    Raises:
        DecodeError: the id is outside 1..2^32-1 or the key is not 32 bytes.
    """
    check_prekey_id(prekey_id)
    binary.require_bytes(public, _X, "signed prekey")
    return SIGNED_PREKEY_LABEL + binary.u32(prekey_id) + public


# --- public records (what a bundle carries) -------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class IdentitySignedPrekey:
    """What every published prekey that the identity signs has: an id, a public key of its
    kind's length (`PUBLIC_KEY_LEN`) and the identity's Ed25519 signature over its kind's
    `signing_payload`. The kinds are `SignedPrekey` and `kem_prekeys.KemPrekey`.

    Raises (construction):
        DecodeError: id outside 1..2^32-1, key of the wrong length or signature not 64 bytes.
    """

    id: int
    public: bytes
    signature: bytes

    PUBLIC_KEY_LEN: ClassVar[int]
    KIND: ClassVar[str]
    """The kind's name in error messages."""

    def __post_init__(self) -> None:
        check_prekey_id(self.id)
        binary.require_bytes(self.public, self.PUBLIC_KEY_LEN, self.KIND)
        binary.require_bytes(self.signature, _SIG, f"{self.KIND} signature")

    def signing_payload(self) -> bytes:
        """The fixed layout the identity signs (see the kind)."""
        raise NotImplementedError

    def verify(self, identity: IdentityKey) -> None:
        """Raises `InvalidSignatureError` unless ``identity`` signed this prekey (and, for a KEM
        prekey, its last-resort flag)."""
        identity.verify(self.signing_payload(), self.signature)


@dataclass(frozen=True, slots=True, repr=False)
class SignedPrekey(IdentitySignedPrekey):
    """A published signed prekey: id, X25519 public key, identity signature.

    Raises (construction):
        DecodeError: id outside 1..2^32-1, key not 32 bytes or signature not 64 bytes.
    """

    PUBLIC_KEY_LEN: ClassVar[int] = _X
    KIND: ClassVar[str] = "signed prekey"

    def signing_payload(self) -> bytes:
        return signed_prekey_signing_payload(self.id, self.public)

    def to_wire(self) -> pb.SignedPrekey:
        return pb.SignedPrekey(id=self.id, public_key=self.public, signature=self.signature)

    @classmethod
    def from_wire(cls, message: pb.SignedPrekey) -> SignedPrekey:
        return cls(message.id, bytes(message.public_key), bytes(message.signature))

    def __repr__(self) -> str:
        return f"SignedPrekey(id={self.id})"


@dataclass(frozen=True, slots=True, repr=False)
class OneTimePrekey:
    """A published one-time X25519 prekey (unsigned: it only adds forward secrecy).

    Raises (construction):
        DecodeError: id outside 1..2^32-1 or key not 32 bytes.
    """

    id: int
    public: bytes

    def __post_init__(self) -> None:
        check_prekey_id(self.id)
        binary.require_bytes(self.public, _X, "one-time prekey")

    def to_wire(self) -> pb.OneTimePrekey:
        return pb.OneTimePrekey(id=self.id, public_key=self.public)

    @classmethod
    def from_wire(cls, message: pb.OneTimePrekey) -> OneTimePrekey:
        return cls(message.id, bytes(message.public_key))

    def __repr__(self) -> str:
        return f"OneTimePrekey(id={self.id})"


# --- private key pairs (what the device keeps) ----------------------------------------------


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class SignedPrekeyPair:
    """A signed prekey with its private key. ``created_ms`` is when it was generated.

    Private serialization (`to_bytes` / `read`, inside `DevicePrekeys.to_bytes`)::

        u32 id || u64 created_ms || private (32) || public (32) || signature (64)
    """

    id: int
    private: bytes
    public: bytes
    signature: bytes
    created_ms: int

    RECORD_LEN: ClassVar[int] = 4 + 8 + _X + _X + _SIG

    @classmethod
    def generate(
        cls, identity: IdentityKeyPair, prekey_id: int, now_ms: int, source: RandomSource
    ) -> SignedPrekeyPair:
        """A fresh key pair (32 bytes drawn from ``source``) signed by ``identity``."""
        private = draw_random(source, _X)
        public = primitives.x25519_public(private)
        signature = identity.sign(signed_prekey_signing_payload(prekey_id, public))
        return cls(prekey_id, private, public, signature, now_ms)

    @property
    def record(self) -> SignedPrekey:
        """The public record to publish."""
        return SignedPrekey(self.id, self.public, self.signature)

    def to_bytes(self) -> bytes:
        """The `RECORD_LEN`-byte private serialization (secret)."""
        prefix = binary.u32(self.id) + binary.u64(self.created_ms)
        return prefix + self.private + self.public + self.signature

    @classmethod
    def read(cls, r: binary.Reader) -> SignedPrekeyPair:
        """Inverse of `to_bytes`. Raises `TruncatedError` if the reader ends early."""
        prekey_id, created_ms = r.u32(), r.u64()
        return cls(prekey_id, r.take(_X), r.take(_X), r.take(_SIG), created_ms)

    def __repr__(self) -> str:
        return f"SignedPrekeyPair(id={self.id})"


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class OneTimePrekeyPair:
    """A one-time X25519 prekey with its private key.

    Private serialization: ``u32 id || private (32) || public (32)``.
    """

    id: int
    private: bytes
    public: bytes

    RECORD_LEN: ClassVar[int] = 4 + _X + _X

    @classmethod
    def generate(cls, prekey_id: int, source: RandomSource) -> OneTimePrekeyPair:
        """A fresh key pair (32 bytes drawn from ``source``)."""
        private = draw_random(source, _X)
        return cls(prekey_id, private, primitives.x25519_public(private))

    @property
    def record(self) -> OneTimePrekey:
        return OneTimePrekey(self.id, self.public)

    def to_bytes(self) -> bytes:
        """The `RECORD_LEN`-byte private serialization (secret)."""
        return binary.u32(self.id) + self.private + self.public

    @classmethod
    def read(cls, r: binary.Reader) -> OneTimePrekeyPair:
        """Inverse of `to_bytes`. Raises `TruncatedError` if the reader ends early."""
        return cls(r.u32(), r.take(_X), r.take(_X))

    def __repr__(self) -> str:
        return f"OneTimePrekeyPair(id={self.id})"
