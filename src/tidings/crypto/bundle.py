"""The prekey bundle: one device's published keys as an initiator fetches them (identity key,
signed prekey, one ML-KEM prekey, optionally one one-time X25519 prekey), and its verification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tidings.crypto.identity import IdentityKey
from tidings.crypto.kem_prekeys import KemPrekey
from tidings.crypto.prekeys import OneTimePrekey, SignedPrekey
from tidings.errors import DecodeError, UnsupportedVersionError
from tidings.wire import binary, codec, limits
from tidings.wire import tidings_pb2 as pb


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class PrekeyBundle:
    """A typed, immutable view of one device's published keys, as an initiator fetches them.

    Construction (keyword arguments only) assembles an unverified bundle. Instances from
    `decode` / `from_wire` have their signatures checked (unless the caller asks otherwise);
    `pqxdh.initiate` calls `verify` again, which is free once it succeeded. The device and
    registration ids are server-supplied metadata and are not signed. Bundles are equal when
    their wire encodings are.

    Raises (construction):
        DecodeError: device or registration id outside 0..2^32-1.
    """

    identity_key: IdentityKey
    device_id: int
    registration_id: int
    signed_prekey: SignedPrekey
    kem_prekey: KemPrekey
    one_time_prekey: OneTimePrekey | None = None
    # Memo of `verify`: a pure function of the (frozen) fields, so setting it once is safe.
    _verified: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        binary.require_uint(self.device_id, binary.U32_MAX, "device id")
        binary.require_uint(self.registration_id, binary.U32_MAX, "registration id")

    @property
    def verified(self) -> bool:
        """True once `verify` succeeded on this (immutable) bundle."""
        return self._verified

    def verify(self) -> None:
        """Check the signed-prekey and KEM-prekey signatures under the bundle's identity key.

        Does not say whether the identity is the *right* one: the caller checks that against
        key transparency / the pinned identity (`pqxdh.initiate(expected_identity=...)`).

        Raises:
            InvalidSignatureError: either signature does not verify.
        """
        if self._verified:
            return
        self.signed_prekey.verify(self.identity_key)
        self.kem_prekey.verify(self.identity_key)
        object.__setattr__(self, "_verified", True)

    @classmethod
    def from_wire(cls, message: pb.PrekeyBundle, *, verify: bool = True) -> PrekeyBundle:
        """Build from a parsed wire message (ideally from `codec.decode`).

        Raises:
            UnsupportedVersionError: the version is not `limits.PROTOCOL_VERSION`.
            DecodeError: a required part is missing or malformed.
            InvalidSignatureError: ``verify`` is true and a signature does not verify.
        """
        if message.version != limits.PROTOCOL_VERSION:
            raise UnsupportedVersionError("prekey bundle version is not supported")
        if not message.HasField("signed_prekey") or not message.HasField("kem_prekey"):
            raise DecodeError("bundle lacks its signed prekey or ML-KEM prekey")
        one_time = (
            OneTimePrekey.from_wire(message.one_time_prekey)
            if message.HasField("one_time_prekey")
            else None
        )
        bundle = cls(
            identity_key=IdentityKey.decode(bytes(message.identity_key)),
            device_id=message.device_id,
            registration_id=message.registration_id,
            signed_prekey=SignedPrekey.from_wire(message.signed_prekey),
            kem_prekey=KemPrekey.from_wire(message.kem_prekey),
            one_time_prekey=one_time,
        )
        if verify:
            bundle.verify()
        return bundle

    @classmethod
    def decode(cls, data: bytes, *, verify: bool = True) -> PrekeyBundle:
        """Parse untrusted bytes (size limit, version, structure) and, by default, verify.

        Raises:
            DecodeError (and subclasses): see `codec.decode` and `from_wire`.
            InvalidSignatureError: ``verify`` is true and a signature does not verify.
        """
        return cls.from_wire(codec.decode(pb.PrekeyBundle, data), verify=verify)

    def to_wire(self) -> pb.PrekeyBundle:
        message = pb.PrekeyBundle(
            version=limits.PROTOCOL_VERSION,
            identity_key=self.identity_key.encode(),
            device_id=self.device_id,
            registration_id=self.registration_id,
            signed_prekey=self.signed_prekey.to_wire(),
            kem_prekey=self.kem_prekey.to_wire(),
        )
        if self.one_time_prekey is not None:
            message.one_time_prekey.CopyFrom(self.one_time_prekey.to_wire())
        return message

    def encode(self) -> bytes:
        """Deterministic wire bytes (`codec.encode(self.to_wire())`)."""
        return codec.encode(self.to_wire())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrekeyBundle):
            return NotImplemented
        return self.encode() == other.encode()

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        one_time = None if self.one_time_prekey is None else self.one_time_prekey.id
        return (
            f"PrekeyBundle(identity={self.identity_key!r}, device_id={self.device_id}, "
            f"signed_prekey_id={self.signed_prekey.id}, one_time_prekey_id={one_time}, "
            f"kem_prekey_id={self.kem_prekey.id}, verified={self._verified})"
        )
