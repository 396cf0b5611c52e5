"""Identity keys: a device's long-term Ed25519 signing key and X25519 agreement key.

Tidings does not use XEdDSA: an identity is a *pair* of independent keys, one per purpose, so no
key is ever used with two algorithms. The public identity is the pair, always handled as one
65-byte string (docs/protocol.md, "Identity key encoding")::

    IdentityKey.encode() = 0x01 || Ed25519 public key (32) || X25519 public key (32)

That encoding is ``Encode(IK)`` in the PQXDH associated data, the string the key-transparency log
and safety numbers commit to, and the unit of equality: two identities are equal only if both
halves are. Never compare, pin or display one half alone -- a substituted agreement key with the
right signing key is a *different* identity.

The private serialization (`IdentityKeyPair.to_bytes`) is::

    0x01 (format version) || Ed25519 seed (32) || X25519 private key (32)      -- 65 bytes

All cryptography goes through `tidings.crypto.primitives`. Nothing here reads a clock, does I/O or
keeps global state; randomness comes from ``rng`` when given (tests), else the OS CSPRNG.
"""

from __future__ import annotations

from collections.abc import Callable

from tidings.crypto import primitives
from tidings.errors import (
    DecodeError,
    InvalidKeyError,
    TruncatedError,
    UnsupportedVersionError,
)
from tidings.wire.binary import EqualByEncoding

RandomSource = Callable[[int], bytes]
"""A source of randomness: called with ``n``, returns ``n`` bytes. Tests inject fixed bytes;
production code passes nothing and gets `primitives.random_bytes` (the OS CSPRNG)."""

IDENTITY_KEY_TYPE = 0x01
"""First byte of the public identity encoding: "Ed25519 signing key + X25519 agreement key"."""

IDENTITY_KEY_LEN = 1 + primitives.ED25519_PUBLIC_KEY_LEN + primitives.X25519_KEY_LEN
"""Length of `IdentityKey.encode()`: 65 bytes (equals `tidings.wire.codec.IDENTITY_KEY_LEN`)."""

IDENTITY_PRIVATE_FORMAT = 0x01
"""First byte of `IdentityKeyPair.to_bytes()`: the private serialization's format version."""

IDENTITY_PRIVATE_LEN = 1 + primitives.ED25519_SEED_LEN + primitives.X25519_KEY_LEN
"""Length of `IdentityKeyPair.to_bytes()`: 65 bytes."""

_BYTES_LIKE = (bytes, bytearray, memoryview)


def random_source(rng: RandomSource | None) -> RandomSource:
    """``rng`` itself, or the OS CSPRNG when ``rng`` is None."""
    return primitives.random_bytes if rng is None else rng


def draw_random(rng: RandomSource, n: int) -> bytes:
    data = rng(n)
    if len(data) != n:
        # A broken injected source is a programming error, not bad input.
        raise ValueError(f"random source returned {len(data)} bytes, expected {n}")
    return bytes(data)


class IdentityKey(EqualByEncoding):
    """A public identity: an Ed25519 verification key and an X25519 agreement key.

    Immutable and hashable; equality is equality of the 65-byte encoding.
    """

    __slots__ = ("_agreement", "_encoded", "_signing")

    def __init__(self, signing_public: bytes, agreement_public: bytes) -> None:
        """Build from raw keys.

        Raises:
            InvalidKeyError: either key is not 32 bytes.
        """
        if len(signing_public) != primitives.ED25519_PUBLIC_KEY_LEN:
            raise InvalidKeyError("identity signing key must be 32 bytes")
        if len(agreement_public) != primitives.X25519_KEY_LEN:
            raise InvalidKeyError("identity agreement key must be 32 bytes")
        self._signing = bytes(signing_public)
        self._agreement = bytes(agreement_public)
        self._encoded = bytes((IDENTITY_KEY_TYPE,)) + self._signing + self._agreement

    @property
    def signing_public(self) -> bytes:
        """The raw Ed25519 public key (32 bytes)."""
        return self._signing

    @property
    def agreement_public(self) -> bytes:
        """The raw X25519 public key (32 bytes)."""
        return self._agreement

    def encode(self) -> bytes:
        """The 65-byte encoding ``0x01 || Ed25519 public || X25519 public``."""
        return self._encoded

    @classmethod
    def decode(cls, data: bytes) -> IdentityKey:
        """Parse an untrusted 65-byte identity encoding.

        Only the structure is checked here. A malformed Ed25519 point surfaces later as
        `InvalidSignatureError` from `verify`; a low-order X25519 point as `InvalidKeyError`
        from the agreement that uses it.

        Raises:
            TruncatedError: fewer than 65 bytes.
            DecodeError: not bytes, more than 65 bytes, or an unknown key-type byte.
        """
        if not isinstance(data, _BYTES_LIKE):
            raise DecodeError("identity key is not bytes")
        data = bytes(data)
        if len(data) < IDENTITY_KEY_LEN:
            raise TruncatedError(f"identity key must be {IDENTITY_KEY_LEN} bytes")
        if len(data) > IDENTITY_KEY_LEN:
            raise DecodeError(f"identity key must be {IDENTITY_KEY_LEN} bytes")
        if data[0] != IDENTITY_KEY_TYPE:
            raise DecodeError("identity key has an unknown key type")
        split = 1 + primitives.ED25519_PUBLIC_KEY_LEN
        return cls(data[1:split], data[split:])

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check an Ed25519 ``signature`` over ``message`` by this identity.

        Raises:
            InvalidSignatureError: the signature is malformed or does not verify.
        """
        primitives.ed25519_verify(self._signing, message, signature)

    def __repr__(self) -> str:
        # A short digest is enough to tell identities apart in logs and test output.
        return f"IdentityKey(sha256:{primitives.sha256(self._encoded)[:6].hex()})"


class IdentityKeyPair:
    """A device's private identity: Ed25519 seed and X25519 private key, plus the public half.

    The private keys never appear in ``repr`` or in exception messages.
    """

    __slots__ = ("_agreement_private", "_public", "_signing_key", "_signing_seed")

    def __init__(self, signing_seed: bytes, agreement_private: bytes) -> None:
        """Build from raw private keys.

        Raises:
            InvalidKeyError: the seed or the private key is not 32 bytes.
        """
        if len(signing_seed) != primitives.ED25519_SEED_LEN:
            raise InvalidKeyError("identity signing seed must be 32 bytes")
        if len(agreement_private) != primitives.X25519_KEY_LEN:
            raise InvalidKeyError("identity agreement key must be 32 bytes")
        self._signing_seed = bytes(signing_seed)
        # The 64-byte libsodium expansion, cached: a device signs many prekeys.
        self._signing_key = primitives.ed25519_expand(self._signing_seed)
        self._agreement_private = bytes(agreement_private)
        self._public = IdentityKey(
            primitives.ed25519_public(self._signing_seed),
            primitives.x25519_public(self._agreement_private),
        )

    @classmethod
    def generate(cls, *, rng: RandomSource | None = None) -> IdentityKeyPair:
        """A fresh identity. Draws 32 bytes (Ed25519 seed), then 32 bytes (X25519 private)."""
        source = random_source(rng)
        seed = draw_random(source, primitives.ED25519_SEED_LEN)
        agreement = draw_random(source, primitives.X25519_KEY_LEN)
        return cls(seed, agreement)

    @property
    def public(self) -> IdentityKey:
        """The public identity."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message`` (deterministic)."""
        return primitives.ed25519_sign(self._signing_key, message)

    def dh(self, public: bytes) -> bytes:
        """X25519 agreement between the identity agreement key and ``public``.

        Raises:
            InvalidKeyError: ``public`` is not 32 bytes, or the agreement is degenerate
                (low-order point, all-zero output).
        """
        return primitives.x25519(self._agreement_private, public)

    def to_bytes(self) -> bytes:
        """Private serialization: ``0x01 || Ed25519 seed (32) || X25519 private (32)``.

        Secret: store it only inside the device's encrypted store.
        """
        return bytes((IDENTITY_PRIVATE_FORMAT,)) + self._signing_seed + self._agreement_private

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityKeyPair:
        """Inverse of `to_bytes`.

        Raises:
            TruncatedError: shorter than 65 bytes.
            UnsupportedVersionError: the format byte is not 0x01.
            DecodeError: not bytes, or longer than 65 bytes.
        """
        if not isinstance(data, _BYTES_LIKE):
            raise DecodeError("identity key pair is not bytes")
        data = bytes(data)
        if not data:
            raise TruncatedError("identity key pair is empty")
        if data[0] != IDENTITY_PRIVATE_FORMAT:
            raise UnsupportedVersionError("identity key pair has an unknown format version")
        if len(data) < IDENTITY_PRIVATE_LEN:
            raise TruncatedError(f"identity key pair must be {IDENTITY_PRIVATE_LEN} bytes")
        if len(data) > IDENTITY_PRIVATE_LEN:
            raise DecodeError(f"identity key pair must be {IDENTITY_PRIVATE_LEN} bytes")
        split = 1 + primitives.ED25519_SEED_LEN
        return cls(data[1:split], data[split:])

    def __repr__(self) -> str:
        return f"IdentityKeyPair(public={self._public!r})"
