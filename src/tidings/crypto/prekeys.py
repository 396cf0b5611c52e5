"""Prekeys: the keys a device publishes so that others can start sessions while it is offline.

Three kinds (docs/protocol.md, "Prekeys"):

- the *signed prekey* (X25519), signed by the identity Ed25519 key, rotated periodically; it is
  also the responder's first Double Ratchet key;
- *one-time prekeys* (X25519, unsigned), each used by at most one session;
- *KEM prekeys* (ML-KEM-768), each signed by the identity key: one-time ones, used by at most one
  session, and one *last-resort* key, reused whenever no one-time KEM prekey is left and rotated
  together with the signed prekey.

Signatures cover fixed byte layouts, not protobuf encodings (which are not canonical)::

    signed prekey:  "Tidings_SignedPrekey_v1" || u32 id || X25519 public (32)
    KEM prekey:     "Tidings_KemPrekey_v1"    || u32 id || u8 last_resort || ML-KEM public (1184)

(integers big-endian). The labels separate the two kinds of signed statement from each other and
from every other Ed25519 signature an identity makes; the last-resort flag is signed so that a
server cannot present a one-time key as reusable or the reverse.

`DevicePrekeys` is the responder's private state. Its lookups and `pqxdh.respond` never mutate
it; consumption of one-time keys is the separate, explicit `DevicePrekeys.consume`, which the
session layer calls only after the first ratchet message of the new session authenticated -- so a
forged prekey message cannot burn prekeys. Time is passed in as integer milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidings.crypto import primitives
from tidings.crypto.identity import (
    IdentityKey,
    IdentityKeyPair,
    RandomSource,
    draw_random,
    random_source,
)
from tidings.errors import (
    DecodeError,
    InvalidKeyError,
    ProtocolError,
    UnknownPrekeyError,
    UnsupportedVersionError,
)
from tidings.wire import binary, codec, limits
from tidings.wire import tidings_pb2 as pb

SIGNED_PREKEY_LABEL = b"Tidings_SignedPrekey_v1"
"""Domain label at the start of the signed-prekey signing layout."""

KEM_PREKEY_LABEL = b"Tidings_KemPrekey_v1"
"""Domain label at the start of the KEM-prekey signing layout."""

MAX_PREKEY_ID = 0xFFFF_FFFF
"""Prekey ids are u32 in 1..MAX_PREKEY_ID; 0 is never issued (it is proto3's "unset")."""

SIGNED_PREKEY_ROTATION_INTERVAL_MS = 7 * 24 * 3600 * 1000
"""Recommended age (7 days) after which `DevicePrekeys.rotation_due` says to rotate."""

SIGNED_PREKEY_GRACE_PERIOD_MS = 30 * 24 * 3600 * 1000
"""How long (30 days) a replaced signed prekey / last-resort KEM prekey stays usable after its
retirement, so that prekey messages built from a bundle fetched before the rotation, and queued
on the server meanwhile, still open. It matches the longest time a server is expected to keep an
undelivered envelope; keeping keys longer only weakens forward secrecy."""

MAX_RETIRED_SIGNED_PREKEYS = 16
"""At most this many retired signed prekeys (and, separately, retired last-resort KEM prekeys)
are kept, newest first, even inside the grace period: it bounds the state if a device rotates
far more often than recommended."""

DEFAULT_PREKEY_BATCH = 100
"""How many one-time X25519 and one-time KEM prekeys `DevicePrekeys.generate` makes by default."""

DEVICE_PREKEYS_FORMAT = 0x01
"""First byte of `DevicePrekeys.to_bytes()`."""

_MAX_U64 = 0xFFFF_FFFF_FFFF_FFFF

_X = primitives.X25519_KEY_LEN
_SIG = primitives.ED25519_SIGNATURE_LEN
_KEM_PUB = primitives.MLKEM768_PUBLIC_KEY_LEN
_KEM_SEED = primitives.MLKEM768_SEED_LEN

# Record sizes of the private serialization (docs/protocol.md).
_SPK_RECORD = 4 + 8 + _X + _X + _SIG  # id, created_ms, private, public, signature
_LR_RECORD = 4 + 8 + _KEM_SEED + _KEM_PUB + _SIG  # id, created_ms, seed, public, signature
_OTPK_RECORD = 4 + _X + _X  # id, private, public
_KEM_RECORD = 4 + _KEM_SEED + _KEM_PUB + _SIG  # id, seed, public, signature


def _check_id(prekey_id: int) -> None:
    if not isinstance(prekey_id, int) or not 1 <= prekey_id <= MAX_PREKEY_ID:
        raise DecodeError("prekey id must be in 1..2^32-1")


def _check_len(value: bytes, length: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise DecodeError(f"{what} must be {length} bytes")


def _check_time(ms: int, what: str) -> None:
    if not isinstance(ms, int) or not 0 <= ms <= _MAX_U64:
        raise ValueError(f"{what} must be an integer number of milliseconds in 0..2^64-1")


def signed_prekey_signing_payload(prekey_id: int, public: bytes) -> bytes:
    """``"Tidings_SignedPrekey_v1" || u32 BE id || public (32)`` -- the bytes the identity signs.

    Raises:
        DecodeError: the id is outside 1..2^32-1 or the key is not 32 bytes.
    """
    _check_id(prekey_id)
    _check_len(public, _X, "signed prekey")
    return SIGNED_PREKEY_LABEL + binary.u32(prekey_id) + public


def kem_prekey_signing_payload(prekey_id: int, last_resort: bool, public: bytes) -> bytes:
    """``"Tidings_KemPrekey_v1" || u32 BE id || u8 last_resort (0/1) || public (1184)``.

    Raises:
        DecodeError: the id is outside 1..2^32-1 or the key is not 1184 bytes.
    """
    _check_id(prekey_id)
    _check_len(public, _KEM_PUB, "ML-KEM prekey")
    return KEM_PREKEY_LABEL + binary.u32(prekey_id) + bytes((1 if last_resort else 0,)) + public


# --- public records (what a bundle carries) -------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class SignedPrekey:
    """A published signed prekey: id, X25519 public key, identity signature.

    Raises (construction):
        DecodeError: id outside 1..2^32-1, key not 32 bytes or signature not 64 bytes.
    """

    id: int
    public: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_len(self.public, _X, "signed prekey")
        _check_len(self.signature, _SIG, "signed prekey signature")

    def signing_payload(self) -> bytes:
        return signed_prekey_signing_payload(self.id, self.public)

    def verify(self, identity: IdentityKey) -> None:
        """Raises `InvalidSignatureError` unless ``identity`` signed this prekey."""
        identity.verify(self.signing_payload(), self.signature)

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
        _check_id(self.id)
        _check_len(self.public, _X, "one-time prekey")

    def to_wire(self) -> pb.OneTimePrekey:
        return pb.OneTimePrekey(id=self.id, public_key=self.public)

    @classmethod
    def from_wire(cls, message: pb.OneTimePrekey) -> OneTimePrekey:
        return cls(message.id, bytes(message.public_key))

    def __repr__(self) -> str:
        return f"OneTimePrekey(id={self.id})"


@dataclass(frozen=True, slots=True, repr=False)
class KemPrekey:
    """A published ML-KEM-768 prekey (one-time or last-resort) with its identity signature.

    Raises (construction):
        DecodeError: id outside 1..2^32-1, key not 1184 bytes or signature not 64 bytes.
    """

    id: int
    public: bytes
    signature: bytes
    last_resort: bool

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_len(self.public, _KEM_PUB, "ML-KEM prekey")
        _check_len(self.signature, _SIG, "ML-KEM prekey signature")

    def signing_payload(self) -> bytes:
        return kem_prekey_signing_payload(self.id, self.last_resort, self.public)

    def verify(self, identity: IdentityKey) -> None:
        """Raises `InvalidSignatureError` unless ``identity`` signed this prekey and its flag."""
        identity.verify(self.signing_payload(), self.signature)

    def to_wire(self) -> pb.KemPrekey:
        return pb.KemPrekey(
            id=self.id,
            public_key=self.public,
            signature=self.signature,
            last_resort=self.last_resort,
        )

    @classmethod
    def from_wire(cls, message: pb.KemPrekey) -> KemPrekey:
        return cls(
            message.id,
            bytes(message.public_key),
            bytes(message.signature),
            bool(message.last_resort),
        )

    def __repr__(self) -> str:
        kind = "last-resort" if self.last_resort else "one-time"
        return f"KemPrekey(id={self.id}, {kind})"


# --- private key pairs (what the device keeps) ----------------------------------------------


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class SignedPrekeyPair:
    """A signed prekey with its private key. ``created_ms`` is when it was generated."""

    id: int
    private: bytes
    public: bytes
    signature: bytes
    created_ms: int

    @property
    def record(self) -> SignedPrekey:
        """The public record to publish."""
        return SignedPrekey(self.id, self.public, self.signature)

    def __repr__(self) -> str:
        return f"SignedPrekeyPair(id={self.id})"


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class OneTimePrekeyPair:
    """A one-time X25519 prekey with its private key."""

    id: int
    private: bytes
    public: bytes

    @property
    def record(self) -> OneTimePrekey:
        return OneTimePrekey(self.id, self.public)

    def __repr__(self) -> str:
        return f"OneTimePrekeyPair(id={self.id})"


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class KemPrekeyPair:
    """An ML-KEM-768 prekey with its 64-byte private seed. ``created_ms`` is 0 for one-time keys
    (their age does not matter) and the generation time for last-resort keys."""

    id: int
    seed: bytes
    public: bytes
    signature: bytes
    last_resort: bool
    created_ms: int = 0

    @property
    def record(self) -> KemPrekey:
        return KemPrekey(self.id, self.public, self.signature, self.last_resort)

    def __repr__(self) -> str:
        kind = "last-resort" if self.last_resort else "one-time"
        return f"KemPrekeyPair(id={self.id}, {kind})"


@dataclass(frozen=True, slots=True)
class PrekeyConsumption:
    """Which one-time prekeys a handshake used, to pass to `DevicePrekeys.consume` once the
    session's first message authenticated. ``None`` means "nothing of that kind to consume"
    (no one-time X25519 prekey was used; the KEM key was the last-resort key)."""

    one_time_prekey_id: int | None
    kem_prekey_id: int | None

    @property
    def empty(self) -> bool:
        return self.one_time_prekey_id is None and self.kem_prekey_id is None


# --- the bundle -------------------------------------------------------------------------------


class PrekeyBundle:
    """A typed view of one device's published keys, as an initiator fetches them.

    Instances from `decode` / `from_wire` have their signatures checked (unless the caller asks
    otherwise); `pqxdh.initiate` calls `verify` again, which is free once it succeeded. The
    device and registration ids are server-supplied metadata and are not signed.
    """

    __slots__ = (
        "_device_id",
        "_identity_key",
        "_kem_prekey",
        "_one_time_prekey",
        "_registration_id",
        "_signed_prekey",
        "_verified",
    )

    def __init__(
        self,
        *,
        identity_key: IdentityKey,
        device_id: int,
        registration_id: int,
        signed_prekey: SignedPrekey,
        kem_prekey: KemPrekey,
        one_time_prekey: OneTimePrekey | None = None,
    ) -> None:
        """Assemble a bundle (unverified).

        Raises:
            DecodeError: device or registration id outside 0..2^32-1.
        """
        for value, what in ((device_id, "device id"), (registration_id, "registration id")):
            if not isinstance(value, int) or not 0 <= value <= MAX_PREKEY_ID:
                raise DecodeError(f"{what} must be a u32")
        self._identity_key = identity_key
        self._device_id = device_id
        self._registration_id = registration_id
        self._signed_prekey = signed_prekey
        self._kem_prekey = kem_prekey
        self._one_time_prekey = one_time_prekey
        self._verified = False

    @property
    def identity_key(self) -> IdentityKey:
        return self._identity_key

    @property
    def device_id(self) -> int:
        return self._device_id

    @property
    def registration_id(self) -> int:
        return self._registration_id

    @property
    def signed_prekey(self) -> SignedPrekey:
        return self._signed_prekey

    @property
    def kem_prekey(self) -> KemPrekey:
        return self._kem_prekey

    @property
    def one_time_prekey(self) -> OneTimePrekey | None:
        return self._one_time_prekey

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
        self._signed_prekey.verify(self._identity_key)
        self._kem_prekey.verify(self._identity_key)
        self._verified = True

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
            identity_key=self._identity_key.encode(),
            device_id=self._device_id,
            registration_id=self._registration_id,
            signed_prekey=self._signed_prekey.to_wire(),
            kem_prekey=self._kem_prekey.to_wire(),
        )
        if self._one_time_prekey is not None:
            message.one_time_prekey.CopyFrom(self._one_time_prekey.to_wire())
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
        one_time = None if self._one_time_prekey is None else self._one_time_prekey.id
        return (
            f"PrekeyBundle(identity={self._identity_key!r}, device_id={self._device_id}, "
            f"signed_prekey_id={self._signed_prekey.id}, one_time_prekey_id={one_time}, "
            f"kem_prekey_id={self._kem_prekey.id}, verified={self._verified})"
        )


# --- the device's private prekey state ------------------------------------------------------


class DevicePrekeys:
    """A device's private prekey state (responder side).

    Holds the current signed prekey and last-resort KEM prekey, the retired ones still inside
    their grace period, and the unused one-time X25519 and KEM prekeys. Ids come from one
    counter shared by all kinds, starting at 1, never reused within the state's lifetime.

    Mutating methods: `generate_one_time_prekeys`, `generate_kem_prekeys`,
    `rotate_signed_prekeys`, `prune`, `consume`. Everything else is read-only; in particular the
    ``find_*`` lookups that `pqxdh.respond` uses.
    """

    __slots__ = (
        "_identity",
        "_kem_one_time",
        "_last_id",
        "_last_resort",
        "_one_time",
        "_retired_last_resort",
        "_retired_signed",
        "_signed",
    )

    def __init__(
        self,
        *,
        identity: IdentityKey,
        last_id: int,
        signed: SignedPrekeyPair,
        last_resort: KemPrekeyPair,
        retired_signed: list[tuple[SignedPrekeyPair, int]],
        retired_last_resort: list[tuple[KemPrekeyPair, int]],
        one_time: dict[int, OneTimePrekeyPair],
        kem_one_time: dict[int, KemPrekeyPair],
    ) -> None:
        # Internal: use `generate` or `from_bytes`.
        self._identity = identity
        self._last_id = last_id
        self._signed = signed
        self._last_resort = last_resort
        self._retired_signed = retired_signed
        self._retired_last_resort = retired_last_resort
        self._one_time = one_time
        self._kem_one_time = kem_one_time

    # -- creation ------------------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        identity: IdentityKeyPair,
        *,
        now_ms: int,
        one_time_count: int = DEFAULT_PREKEY_BATCH,
        kem_count: int = DEFAULT_PREKEY_BATCH,
        rng: RandomSource | None = None,
    ) -> DevicePrekeys:
        """Fresh prekey state for a device whose identity is ``identity``.

        Keys are made, and ids allocated from 1, in this order: the signed prekey (32 random
        bytes), the last-resort KEM prekey (64-byte seed), ``one_time_count`` one-time X25519
        prekeys (32 bytes each), ``kem_count`` one-time KEM prekeys (64 bytes each).

        Raises:
            ValueError: a negative count or an out-of-range ``now_ms``.
        """
        _check_time(now_ms, "now_ms")
        source = random_source(rng)
        state = cls(
            identity=identity.public,
            last_id=2,
            signed=_make_signed(identity, 1, now_ms, source),
            last_resort=_make_kem(identity, 2, True, now_ms, source),
            retired_signed=[],
            retired_last_resort=[],
            one_time={},
            kem_one_time={},
        )
        state.generate_one_time_prekeys(one_time_count, rng=source)
        state.generate_kem_prekeys(identity, kem_count, rng=source)
        return state

    def _allocate_id(self) -> int:
        if self._last_id >= MAX_PREKEY_ID:
            # 4 billion prekeys: the device must re-register (new identity/state) instead.
            raise ProtocolError("prekey id space exhausted")
        self._last_id += 1
        return self._last_id

    def _check_identity(self, identity: IdentityKeyPair) -> None:
        if identity.public != self._identity:
            raise InvalidKeyError("these prekeys belong to another identity")

    def generate_one_time_prekeys(
        self, count: int, *, rng: RandomSource | None = None
    ) -> tuple[OneTimePrekey, ...]:
        """Add ``count`` one-time X25519 prekeys; return their public records to upload.

        Raises:
            ValueError: ``count`` is negative.
            ProtocolError: the id space is exhausted (no key is added then).
        """
        if count < 0:
            raise ValueError("count must not be negative")
        if self._last_id + count > MAX_PREKEY_ID:
            raise ProtocolError("prekey id space exhausted")
        source = random_source(rng)
        made: list[OneTimePrekey] = []
        for _ in range(count):
            private = draw_random(source, _X)
            pair = OneTimePrekeyPair(
                self._allocate_id(), private, primitives.x25519_public(private)
            )
            self._one_time[pair.id] = pair
            made.append(pair.record)
        return tuple(made)

    def generate_kem_prekeys(
        self, identity: IdentityKeyPair, count: int, *, rng: RandomSource | None = None
    ) -> tuple[KemPrekey, ...]:
        """Add ``count`` signed one-time KEM prekeys; return their public records to upload.

        Raises:
            ValueError: ``count`` is negative.
            InvalidKeyError: ``identity`` is not the identity these prekeys belong to.
            ProtocolError: the id space is exhausted (no key is added then).
        """
        if count < 0:
            raise ValueError("count must not be negative")
        self._check_identity(identity)
        if self._last_id + count > MAX_PREKEY_ID:
            raise ProtocolError("prekey id space exhausted")
        source = random_source(rng)
        made: list[KemPrekey] = []
        for _ in range(count):
            pair = _make_kem(identity, self._allocate_id(), False, 0, source)
            self._kem_one_time[pair.id] = pair
            made.append(pair.record)
        return tuple(made)

    def rotate_signed_prekeys(
        self, identity: IdentityKeyPair, *, now_ms: int, rng: RandomSource | None = None
    ) -> tuple[SignedPrekey, KemPrekey]:
        """Replace the signed prekey and the last-resort KEM prekey (in that order) at ``now_ms``.

        The replaced keys are retired, not deleted: they keep answering prekey messages until
        ``now_ms + SIGNED_PREKEY_GRACE_PERIOD_MS`` (see `prune`, which this also runs), and at
        most `MAX_RETIRED_SIGNED_PREKEYS` of each kind are kept. Returns the new public records.

        Raises:
            ValueError: ``now_ms`` out of range.
            InvalidKeyError: ``identity`` is not the identity these prekeys belong to.
            ProtocolError: the id space is exhausted (nothing changes then).
        """
        _check_time(now_ms, "now_ms")
        self._check_identity(identity)
        if self._last_id + 2 > MAX_PREKEY_ID:
            raise ProtocolError("prekey id space exhausted")
        source = random_source(rng)
        signed = _make_signed(identity, self._last_id + 1, now_ms, source)
        last_resort = _make_kem(identity, self._last_id + 2, True, now_ms, source)
        self._last_id += 2
        self._retired_signed.insert(0, (self._signed, now_ms))
        self._retired_last_resort.insert(0, (self._last_resort, now_ms))
        self._signed, self._last_resort = signed, last_resort
        self.prune(now_ms)
        return signed.record, last_resort.record

    def prune(self, now_ms: int) -> int:
        """Delete retired signed / last-resort prekeys whose grace period is over at ``now_ms``
        (retired at ``r``: kept while ``now_ms < r + SIGNED_PREKEY_GRACE_PERIOD_MS``), and any
        beyond the newest `MAX_RETIRED_SIGNED_PREKEYS`. Returns how many keys were deleted.

        Raises:
            ValueError: ``now_ms`` out of range.
        """
        _check_time(now_ms, "now_ms")
        before = len(self._retired_signed) + len(self._retired_last_resort)
        self._retired_signed = [
            (pair, retired)
            for pair, retired in self._retired_signed
            if now_ms < retired + SIGNED_PREKEY_GRACE_PERIOD_MS
        ][:MAX_RETIRED_SIGNED_PREKEYS]
        self._retired_last_resort = [
            (pair, retired)
            for pair, retired in self._retired_last_resort
            if now_ms < retired + SIGNED_PREKEY_GRACE_PERIOD_MS
        ][:MAX_RETIRED_SIGNED_PREKEYS]
        return before - len(self._retired_signed) - len(self._retired_last_resort)

    def rotation_due(self, now_ms: int) -> bool:
        """Whether the current signed prekey is at least `SIGNED_PREKEY_ROTATION_INTERVAL_MS`
        old at ``now_ms``."""
        return now_ms - self._signed.created_ms >= SIGNED_PREKEY_ROTATION_INTERVAL_MS

    # -- read-only views -------------------------------------------------------------------

    @property
    def identity_key(self) -> IdentityKey:
        """The identity that signed these prekeys."""
        return self._identity

    @property
    def signed_prekey(self) -> SignedPrekey:
        """The current signed prekey's public record."""
        return self._signed.record

    @property
    def signed_prekey_created_ms(self) -> int:
        return self._signed.created_ms

    @property
    def last_resort_kem_prekey(self) -> KemPrekey:
        """The current last-resort KEM prekey's public record."""
        return self._last_resort.record

    @property
    def one_time_prekeys(self) -> tuple[OneTimePrekey, ...]:
        """Public records of the unused one-time X25519 prekeys, oldest first."""
        return tuple(pair.record for pair in self._one_time.values())

    @property
    def kem_prekeys(self) -> tuple[KemPrekey, ...]:
        """Public records of the unused one-time KEM prekeys, oldest first."""
        return tuple(pair.record for pair in self._kem_one_time.values())

    @property
    def one_time_prekey_count(self) -> int:
        return len(self._one_time)

    @property
    def kem_prekey_count(self) -> int:
        """Unused one-time KEM prekeys (the last-resort key is not counted)."""
        return len(self._kem_one_time)

    @property
    def retired_signed_prekey_ids(self) -> tuple[int, ...]:
        """Ids of the retired signed prekeys still kept, newest first."""
        return tuple(pair.id for pair, _ in self._retired_signed)

    def bundle(
        self,
        device_id: int,
        registration_id: int,
        one_time_id: int | None = None,
        kem_id: int | None = None,
    ) -> PrekeyBundle:
        """A bundle to publish: current signed prekey, the one-time X25519 prekey
        ``one_time_id`` (none if None), and the one-time KEM prekey ``kem_id`` (the current
        last-resort key if None, or if ``kem_id`` names it). Does not consume anything.

        Raises:
            UnknownPrekeyError: an id names no unused one-time key (nor the current last resort).
            DecodeError: device or registration id outside 0..2^32-1.
        """
        one_time = None
        if one_time_id is not None:
            one_time = self.find_one_time_prekey(one_time_id).record
        if kem_id is None or kem_id == self._last_resort.id:
            kem = self._last_resort.record
        else:
            pair = self._kem_one_time.get(kem_id)
            if pair is None:
                raise UnknownPrekeyError("no such unused ML-KEM prekey")
            kem = pair.record
        return PrekeyBundle(
            identity_key=self._identity,
            device_id=device_id,
            registration_id=registration_id,
            signed_prekey=self._signed.record,
            kem_prekey=kem,
            one_time_prekey=one_time,
        )

    def find_signed_prekey(self, prekey_id: int) -> SignedPrekeyPair:
        """The current or a retired (still kept) signed prekey with this id.

        Raises:
            UnknownPrekeyError: no such key (never issued, or pruned).
        """
        if self._signed.id == prekey_id:
            return self._signed
        for pair, _ in self._retired_signed:
            if pair.id == prekey_id:
                return pair
        raise UnknownPrekeyError("no such signed prekey")

    def find_one_time_prekey(self, prekey_id: int) -> OneTimePrekeyPair:
        """The unused one-time X25519 prekey with this id.

        Raises:
            UnknownPrekeyError: no such key (never issued, or already consumed).
        """
        pair = self._one_time.get(prekey_id)
        if pair is None:
            raise UnknownPrekeyError("no such one-time prekey")
        return pair

    def find_kem_prekey(self, prekey_id: int) -> KemPrekeyPair:
        """An unused one-time KEM prekey, the current last-resort key, or a retired (still
        kept) last-resort key, with this id.

        Raises:
            UnknownPrekeyError: no such key (never issued, consumed, or pruned).
        """
        pair = self._kem_one_time.get(prekey_id)
        if pair is not None:
            return pair
        if self._last_resort.id == prekey_id:
            return self._last_resort
        for retired, _ in self._retired_last_resort:
            if retired.id == prekey_id:
                return retired
        raise UnknownPrekeyError("no such ML-KEM prekey")

    # -- consumption -------------------------------------------------------------------------

    def consume(self, consumption: PrekeyConsumption) -> None:
        """Delete the one-time prekeys a completed handshake used. All or nothing.

        Call it only after the new session's first message authenticated. Raising here means
        another accepted session already used one of these keys (a replayed or duplicated
        prekey message): the caller must discard the new session.

        Raises:
            UnknownPrekeyError: a named one-time key is not (or no longer) held; nothing is
                deleted then.
        """
        one_time_id, kem_id = consumption.one_time_prekey_id, consumption.kem_prekey_id
        # Check everything first so that a failure leaves the state exactly as it was.
        if one_time_id is not None and one_time_id not in self._one_time:
            raise UnknownPrekeyError("one-time prekey already used or never issued")
        if kem_id is not None and kem_id not in self._kem_one_time:
            raise UnknownPrekeyError("one-time ML-KEM prekey already used or never issued")
        if one_time_id is not None:
            del self._one_time[one_time_id]
        if kem_id is not None:
            del self._kem_one_time[kem_id]

    # -- serialization -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The private serialization (format 0x01; layout in docs/protocol.md).

        Secret: store it only inside the device's encrypted store.
        """
        out = [
            bytes((DEVICE_PREKEYS_FORMAT,)),
            self._identity.encode(),
            binary.u32(self._last_id),
            _pack_signed(self._signed),
            _pack_last_resort(self._last_resort),
            binary.u16(len(self._retired_signed)),
        ]
        out.extend(_pack_signed(p) + binary.u64(r) for p, r in self._retired_signed)
        out.append(binary.u16(len(self._retired_last_resort)))
        out.extend(_pack_last_resort(p) + binary.u64(r) for p, r in self._retired_last_resort)
        out.append(binary.u32(len(self._one_time)))
        out.extend(binary.u32(p.id) + p.private + p.public for p in self._one_time.values())
        out.append(binary.u32(len(self._kem_one_time)))
        out.extend(
            binary.u32(p.id) + p.seed + p.public + p.signature for p in self._kem_one_time.values()
        )
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> DevicePrekeys:
        """Inverse of `to_bytes`.

        Checks structure and id consistency (every id in 1..last_id, no id twice). It does not
        recompute public keys from private ones: the device store authenticates what it holds.

        Raises:
            TruncatedError: the data ends early.
            UnsupportedVersionError: unknown format byte.
            DecodeError: not bytes, trailing bytes, a bad identity encoding, too many retired
                keys, or inconsistent ids.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError("prekey state is not bytes")
        r = binary.Reader(data, "prekey state")
        if r.take(1)[0] != DEVICE_PREKEYS_FORMAT:
            raise UnsupportedVersionError("prekey state has an unknown format version")
        identity = IdentityKey.decode(r.take(codec.IDENTITY_KEY_LEN))
        last_id = r.u32()
        signed = _unpack_signed(r.take(_SPK_RECORD))
        last_resort = _unpack_last_resort(r.take(_LR_RECORD))
        retired_signed = [
            (_unpack_signed(rec[:_SPK_RECORD]), int.from_bytes(rec[_SPK_RECORD:], "big"))
            for rec in r.records(r.u16(), _SPK_RECORD + 8, MAX_RETIRED_SIGNED_PREKEYS)
        ]
        retired_last_resort = [
            (_unpack_last_resort(rec[:_LR_RECORD]), int.from_bytes(rec[_LR_RECORD:], "big"))
            for rec in r.records(r.u16(), _LR_RECORD + 8, MAX_RETIRED_SIGNED_PREKEYS)
        ]
        one_time = [_unpack_one_time(rec) for rec in r.records(r.u32(), _OTPK_RECORD)]
        kem_one_time = [_unpack_kem(rec) for rec in r.records(r.u32(), _KEM_RECORD)]
        r.finish()

        ids = [signed.id, last_resort.id]
        ids += [p.id for p, _ in retired_signed] + [p.id for p, _ in retired_last_resort]
        ids += [p.id for p in one_time] + [p.id for p in kem_one_time]
        if len(set(ids)) != len(ids):
            raise DecodeError("prekey state uses an id twice")
        if any(not 1 <= i <= last_id for i in ids):
            raise DecodeError("prekey state holds an id the counter has not reached")
        return cls(
            identity=identity,
            last_id=last_id,
            signed=signed,
            last_resort=last_resort,
            retired_signed=retired_signed,
            retired_last_resort=retired_last_resort,
            one_time={p.id: p for p in one_time},
            kem_one_time={p.id: p for p in kem_one_time},
        )

    def __repr__(self) -> str:
        return (
            f"DevicePrekeys(identity={self._identity!r}, signed_prekey_id={self._signed.id}, "
            f"last_resort_kem_id={self._last_resort.id}, one_time={len(self._one_time)}, "
            f"kem_one_time={len(self._kem_one_time)}, "
            f"retired={len(self._retired_signed)}+{len(self._retired_last_resort)})"
        )


# --- helpers ----------------------------------------------------------------------------------


def _make_signed(
    identity: IdentityKeyPair, prekey_id: int, now_ms: int, source: RandomSource
) -> SignedPrekeyPair:
    private = draw_random(source, _X)
    public = primitives.x25519_public(private)
    signature = identity.sign(signed_prekey_signing_payload(prekey_id, public))
    return SignedPrekeyPair(prekey_id, private, public, signature, now_ms)


def _make_kem(
    identity: IdentityKeyPair,
    prekey_id: int,
    last_resort: bool,
    now_ms: int,
    source: RandomSource,
) -> KemPrekeyPair:
    seed = draw_random(source, _KEM_SEED)
    public = primitives.mlkem768_public(seed)
    signature = identity.sign(kem_prekey_signing_payload(prekey_id, last_resort, public))
    return KemPrekeyPair(prekey_id, seed, public, signature, last_resort, now_ms)


def _pack_signed(p: SignedPrekeyPair) -> bytes:
    return binary.u32(p.id) + binary.u64(p.created_ms) + p.private + p.public + p.signature


def _pack_last_resort(p: KemPrekeyPair) -> bytes:
    return binary.u32(p.id) + binary.u64(p.created_ms) + p.seed + p.public + p.signature


def _unpack_signed(rec: bytes) -> SignedPrekeyPair:
    prekey_id, created = int.from_bytes(rec[:4], "big"), int.from_bytes(rec[4:12], "big")
    o = 12
    private, public, signature = rec[o : o + _X], rec[o + _X : o + 2 * _X], rec[o + 2 * _X :]
    return SignedPrekeyPair(prekey_id, private, public, signature, created)


def _unpack_last_resort(rec: bytes) -> KemPrekeyPair:
    prekey_id, created = int.from_bytes(rec[:4], "big"), int.from_bytes(rec[4:12], "big")
    pair = _unpack_kem(rec[:4] + rec[12:])
    return KemPrekeyPair(prekey_id, pair.seed, pair.public, pair.signature, True, created)


def _unpack_one_time(rec: bytes) -> OneTimePrekeyPair:
    prekey_id = int.from_bytes(rec[:4], "big")
    return OneTimePrekeyPair(prekey_id, rec[4 : 4 + _X], rec[4 + _X :])


def _unpack_kem(rec: bytes) -> KemPrekeyPair:
    prekey_id = int.from_bytes(rec[:4], "big")
    seed_end = 4 + _KEM_SEED
    public_end = seed_end + _KEM_PUB
    return KemPrekeyPair(
        prekey_id, rec[4:seed_end], rec[seed_end:public_end], rec[public_end:], False
    )
