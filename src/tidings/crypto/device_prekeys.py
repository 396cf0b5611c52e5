"""A device's private prekey state (responder side): its current signed prekey and last-resort
ML-KEM prekey, the retired ones still inside their grace period, and the unused one-time X25519
and ML-KEM prekeys (docs/protocol.md, "Prekeys"). The records themselves are in
`tidings.crypto.prekeys` (X25519) and `tidings.crypto.kem_prekeys` (ML-KEM).

`DevicePrekeys`' lookups and `pqxdh.respond` never mutate it; consumption of one-time keys is
the separate, explicit `DevicePrekeys.consume`, which the session layer calls only after the
first ratchet message of the new session authenticated -- so a forged prekey message cannot
burn prekeys. Time is passed in as integer milliseconds.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from tidings.crypto.bundle import PrekeyBundle
from tidings.crypto.identity import IdentityKey, IdentityKeyPair, RandomSource, random_source
from tidings.crypto.kem_prekeys import KemPrekey, KemPrekeyPair
from tidings.crypto.prekeys import (
    MAX_PREKEY_ID,
    OneTimePrekey,
    OneTimePrekeyPair,
    SignedPrekey,
    SignedPrekeyPair,
)
from tidings.errors import (
    DecodeError,
    InvalidKeyError,
    ProtocolError,
    UnknownPrekeyError,
    UnsupportedVersionError,
)
from tidings.wire import binary, codec

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


def _check_time(ms: int, what: str) -> None:
    if not isinstance(ms, int) or not 0 <= ms <= binary.U64_MAX:
        raise ValueError(f"{what} must be an integer number of milliseconds in 0..2^64-1")


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
            signed=SignedPrekeyPair.generate(identity, 1, now_ms, source),
            last_resort=KemPrekeyPair.generate(identity, 2, True, now_ms, source),
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
            pair = OneTimePrekeyPair.generate(self._allocate_id(), source)
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
            pair = KemPrekeyPair.generate(identity, self._allocate_id(), False, 0, source)
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
        signed = SignedPrekeyPair.generate(identity, self._last_id + 1, now_ms, source)
        last_resort = KemPrekeyPair.generate(identity, self._last_id + 2, True, now_ms, source)
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
        self._retired_signed = _still_kept(self._retired_signed, now_ms)
        self._retired_last_resort = _still_kept(self._retired_last_resort, now_ms)
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
        pair = _current_or_retired(self._signed, self._retired_signed, prekey_id)
        if pair is None:
            raise UnknownPrekeyError("no such signed prekey")
        return pair

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
        pair = self._kem_one_time.get(prekey_id) or _current_or_retired(
            self._last_resort, self._retired_last_resort, prekey_id
        )
        if pair is None:
            raise UnknownPrekeyError("no such ML-KEM prekey")
        return pair

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
        parts = [
            binary.u8(DEVICE_PREKEYS_FORMAT),
            self._identity.encode(),
            binary.u32(self._last_id),
            self._signed.to_bytes(),
            self._last_resort.to_bytes(),
            _pack_retired(self._retired_signed),
            _pack_retired(self._retired_last_resort),
            _pack_unused(self._one_time.values()),
            _pack_unused(self._kem_one_time.values()),
        ]
        return b"".join(parts)

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
        signed = SignedPrekeyPair.read(r)
        last_resort = KemPrekeyPair.read_last_resort(r)
        retired_signed = r.records(
            r.u16(),
            SignedPrekeyPair.RECORD_LEN + 8,
            _read_retired_signed,
            MAX_RETIRED_SIGNED_PREKEYS,
        )
        retired_last_resort = r.records(
            r.u16(),
            KemPrekeyPair.LAST_RESORT_RECORD_LEN + 8,
            _read_retired_last_resort,
            MAX_RETIRED_SIGNED_PREKEYS,
        )
        one_time = r.records(r.u32(), OneTimePrekeyPair.RECORD_LEN, OneTimePrekeyPair.read)
        kem_one_time = r.records(
            r.u32(), KemPrekeyPair.ONE_TIME_RECORD_LEN, KemPrekeyPair.read_one_time
        )
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


# --- helpers ------------------------------------------------------------------------------------

_Rotated = TypeVar("_Rotated", SignedPrekeyPair, KemPrekeyPair)


def _current_or_retired(
    current: _Rotated, retired: list[tuple[_Rotated, int]], prekey_id: int
) -> _Rotated | None:
    """The current pair or a retired one with this id, if any."""
    if current.id == prekey_id:
        return current
    return next((pair for pair, _ in retired if pair.id == prekey_id), None)


def _still_kept(retired: list[tuple[_Rotated, int]], now_ms: int) -> list[tuple[_Rotated, int]]:
    """The retired pairs inside their grace period at ``now_ms``, at most the newest
    `MAX_RETIRED_SIGNED_PREKEYS`."""
    kept = [(p, r) for p, r in retired if now_ms < r + SIGNED_PREKEY_GRACE_PERIOD_MS]
    return kept[:MAX_RETIRED_SIGNED_PREKEYS]


def _pack_retired(
    retired: list[tuple[SignedPrekeyPair, int]] | list[tuple[KemPrekeyPair, int]],
) -> bytes:
    """``u16 count || (pair record || u64 retired_ms)*``, newest first."""
    return binary.u16(len(retired)) + b"".join(p.to_bytes() + binary.u64(r) for p, r in retired)


def _pack_unused(pairs: Collection[OneTimePrekeyPair] | Collection[KemPrekeyPair]) -> bytes:
    """``u32 count || pair record*``, oldest first."""
    return binary.u32(len(pairs)) + b"".join(p.to_bytes() for p in pairs)


def _read_retired_signed(r: binary.Reader) -> tuple[SignedPrekeyPair, int]:
    return SignedPrekeyPair.read(r), r.u64()


def _read_retired_last_resort(r: binary.Reader) -> tuple[KemPrekeyPair, int]:
    return KemPrekeyPair.read_last_resort(r), r.u64()
