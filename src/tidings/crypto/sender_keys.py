"""Sender keys: the group-message encryption of Tidings (docs/protocol.md).

A sender device encrypts a group message once, with a symmetric chain it shares with every member
device, and signs it with an Ed25519 key only it holds. Members get the chain (a
`SenderKeyDistribution`) over their authenticated 1:1 sessions. This follows Signal's sender keys
and Matrix's Megolm.

Names:

- **distribution id** (16 random bytes): one sender device's line of keys for one group. It stays
  the same across rotations, so a receiver finds the sender's key by it.
- **chain id** (random u32): one generation of that line. A rotation draws a new chain id, a new
  chain key and a new signing key pair.
- **iteration** (u32): the position in the chain; message ``i`` uses the ``i``-th message key.

One chain step is `tidings.crypto.symmetric.chain_step` (message key = HMAC-SHA256(ck, 0x01),
next chain key = HMAC-SHA256(ck, 0x02)); a message is sealed with `symmetric.seal` under the
HKDF info `SENDER_KEY_MESSAGE_KEYS_INFO`. The associated data that is MACed, and signed together
with the ciphertext, is the fixed layout (all integers big-endian)::

    b"Tidings_SenderKey_v1" || version (u8) || distribution_id (16) || chain_id (u32)
        || iteration (u32) || len(caller AD) (u32) || caller AD
    signature = Ed25519(signing key, that layout || sealed ciphertext)

Receivers verify the signature first, then check the window, then derive and decrypt; any failure
leaves the receiver's state exactly as it was (all changes are computed in locals and committed
only after the MAC verified). Nothing here reads a clock, does I/O or keeps global state;
randomness comes from ``rng`` when given (tests), else the OS CSPRNG. Keys never appear in
``repr`` or in exception messages.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import InitVar, dataclass, field
from typing import TypeVar

from tidings.crypto import primitives
from tidings.crypto.identity import RandomSource
from tidings.crypto.symmetric import chain_step, open_sealed, seal
from tidings.errors import (
    DecodeError,
    DuplicateMessageError,
    InvalidKeyError,
    OutOfWindowError,
    ProtocolError,
    TooManySkippedMessagesError,
    UnknownSenderKeyError,
    UnsupportedVersionError,
)
from tidings.wire import binary, codec, limits
from tidings.wire import tidings_pb2 as pb

__all__ = [
    "CHAIN_KEY_LEN",
    "DISTRIBUTION_ID_LEN",
    "MAX_ITERATION",
    "MAX_SENDER_KEY_SKIP",
    "MAX_SENDER_KEY_STATES",
    "MAX_STORED_SENDER_KEYS",
    "SENDER_KEY_MESSAGE_KEYS_INFO",
    "SENDER_KEY_SIGNING_LABEL",
    "SENDER_KEY_VERSION",
    "STATE_FORMAT_VERSION",
    "GroupSenderKeys",
    "OwnSenderKey",
    "RandomSource",
    "RemoteSenderKey",
    "signing_layout",
]

# --- constants (docs/protocol.md) ---------------------------------------------

SENDER_KEY_VERSION = limits.PROTOCOL_VERSION
"""Version byte of the signing layout; equals the ``version`` field of the wire messages."""

SENDER_KEY_SIGNING_LABEL = b"Tidings_SenderKey_v1"
"""First 20 bytes of the associated-data / signing layout (domain separation)."""

SENDER_KEY_MESSAGE_KEYS_INFO = b"Tidings_SenderKey_MessageKeys_v1"
"""HKDF info of the message-key expansion (`symmetric.seal`) for sender-key messages."""

DISTRIBUTION_ID_LEN = 16
CHAIN_KEY_LEN = 32

MAX_ITERATION = 0xFFFF_FFFE
"""Largest iteration a message can use. A chain whose next iteration is 2**32 - 1 is exhausted:
the sender must rotate. (2**32 - 1 itself is never used, so every "next iteration" fits a u32.)"""

MAX_SENDER_KEY_SKIP = 2000
"""A message may be at most this many iterations ahead of the receiver's chain (that many message
keys are derived and stored in one jump). Further ahead: `TooManySkippedMessagesError`."""

MAX_STORED_SENDER_KEYS = 2000
"""At most this many skipped message keys are kept per chain; beyond it the oldest is evicted."""

MAX_SENDER_KEY_STATES = 5
"""At most this many chains (the newest first) are kept per sender line, so messages in flight
across a rotation still decrypt. Adding one more evicts the oldest."""

STATE_FORMAT_VERSION = 0x01
"""First byte of every `to_bytes()` serialization in this module."""

_KIND_OWN = 0x01
_KIND_REMOTE = 0x02
_KIND_GROUP = 0x03

_U32X2 = struct.Struct(">II")
_T = TypeVar("_T")
_PREFIX_HEAD = SENDER_KEY_SIGNING_LABEL + bytes((SENDER_KEY_VERSION,))
_BYTES_LIKE = (bytes, bytearray, memoryview)

_OWN_LEN = 2 + DISTRIBUTION_ID_LEN + 4 + 4 + CHAIN_KEY_LEN + primitives.ED25519_SEED_LEN


def _draw(rng: RandomSource | None, n: int) -> bytes:
    data = primitives.random_bytes(n) if rng is None else rng(n)
    if len(data) != n:
        # A broken injected source is a programming error, not bad input.
        raise ValueError(f"random source returned {len(data)} bytes, expected {n}")
    return bytes(data)


def _prefix(distribution_id: bytes, chain_id: int) -> bytes:
    return _PREFIX_HEAD + distribution_id + binary.u32(chain_id)


def signing_layout(
    distribution_id: bytes, chain_id: int, iteration: int, associated_data: bytes
) -> bytes:
    """The associated data of a sender-key message: the fixed layout in the module docstring.

    The signature covers this layout followed by the sealed ciphertext; the seal's MAC covers it
    as its associated data. Exposed for test vectors and independent implementations.
    """
    if len(distribution_id) != DISTRIBUTION_ID_LEN:
        raise ValueError("distribution id must be 16 bytes")
    return (
        _prefix(bytes(distribution_id), chain_id)
        + _U32X2.pack(iteration, len(associated_data))
        + bytes(associated_data)
    )


def _check_account(account: str, device: int) -> None:
    if not isinstance(account, str) or not 1 <= len(account) <= limits.MAX_IDENTIFIER_CHARS:
        raise ValueError("account must be a non-empty string of at most 64 characters")
    if not isinstance(device, int) or not 0 <= device <= binary.U32_MAX:
        raise ValueError("device id must be an unsigned 32-bit integer")


# --- serialization helpers ---------------------------------------------------------------------


def _reader(data: object, kind: int, what: str) -> binary.Reader:
    """A reader positioned after the two header bytes (format version, kind) of ``what``."""
    if not isinstance(data, _BYTES_LIKE):
        raise DecodeError(f"{what} is not bytes")
    reader = binary.Reader(bytes(data), what)
    if (fmt := reader.u8()) != STATE_FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{what} format {fmt} is not supported "
            f"(this implementation reads {STATE_FORMAT_VERSION})"
        )
    if reader.u8() != kind:
        raise DecodeError(f"input is not a serialized {what}")
    return reader


def _parse(data: object, kind: int, what: str, read: Callable[[binary.Reader], _T]) -> _T:
    """``read`` applied after the header of ``what`` (see `_reader`); it must consume the rest.

    Raises:
        DecodeError: trailing bytes (and whatever `_reader` and ``read`` raise).
    """
    reader = _reader(data, kind, what)
    value = read(reader)
    reader.finish()
    return value


def _read_account(reader: binary.Reader) -> tuple[str, int]:
    raw = reader.var16()
    try:
        account = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("account name is not UTF-8") from exc
    device = reader.u32()
    if not 1 <= len(account) <= limits.MAX_IDENTIFIER_CHARS:
        raise DecodeError("account name is empty or too long")
    return account, device


def _account_bytes(account: str, device: int) -> bytes:
    raw = account.encode("utf-8")
    return binary.u16(len(raw)) + raw + binary.u32(device)


def _checked_distribution(
    distribution: pb.SenderKeyDistribution | bytes,
) -> pb.SenderKeyDistribution:
    """Validate a distribution (a decoded message or its bytes) exactly as the codec does."""
    if isinstance(distribution, pb.SenderKeyDistribution):
        distribution = codec.encode(distribution)
    return codec.decode(pb.SenderKeyDistribution, distribution)


# --- our own sender key ------------------------------------------------------------------------


class OwnSenderKey:
    """This device's sender key for one group: the sending chain and the signing key pair.

    Mutable: `encrypt` advances the chain. Serialize with `to_bytes` after every encrypt that is
    persisted (a restored older state would reuse message keys).
    """

    __slots__ = (
        "_chain_id",
        "_chain_key",
        "_distribution_id",
        "_iteration",
        "_prefix",
        "_public",
        "_seed",
        "_signing_key",
    )

    def __init__(
        self,
        distribution_id: bytes,
        chain_id: int,
        iteration: int,
        chain_key: bytes,
        signing_seed: bytes,
    ) -> None:
        """Build from raw parts (tests, KATs, deserialization); use `generate` otherwise.

        Raises:
            InvalidKeyError: the chain key or the signing seed is not 32 bytes.
            ValueError: the distribution id is not 16 bytes, or an integer is not a u32.
        """
        if len(distribution_id) != DISTRIBUTION_ID_LEN:
            raise ValueError("distribution id must be 16 bytes")
        if not 0 <= chain_id <= binary.U32_MAX or not 0 <= iteration <= binary.U32_MAX:
            raise ValueError("chain id and iteration must be unsigned 32-bit integers")
        if len(chain_key) != CHAIN_KEY_LEN:
            raise InvalidKeyError("sender chain key must be 32 bytes")
        if len(signing_seed) != primitives.ED25519_SEED_LEN:
            raise InvalidKeyError("sender signing seed must be 32 bytes")
        self._distribution_id = bytes(distribution_id)
        self._chain_id = chain_id
        self._iteration = iteration
        self._chain_key = bytes(chain_key)
        self._seed = bytes(signing_seed)
        # The 64-byte libsodium expansion, cached: it signs every message.
        self._signing_key = primitives.ed25519_expand(self._seed)
        self._public = self._signing_key[32:]
        self._prefix = _prefix(self._distribution_id, chain_id)

    @classmethod
    def generate(
        cls, distribution_id: bytes | None = None, *, rng: RandomSource | None = None
    ) -> OwnSenderKey:
        """A fresh sender key at iteration 0.

        Draws, in order: the distribution id (16 bytes, only when not given), the chain id
        (4 bytes, big-endian), the chain key (32), the Ed25519 signing seed (32).
        """
        if distribution_id is None:
            distribution_id = _draw(rng, DISTRIBUTION_ID_LEN)
        return cls._fresh(distribution_id, rng)

    def rotate(self, *, rng: RandomSource | None = None) -> OwnSenderKey:
        """A new generation of this key line: same distribution id, new chain id (different
        from this one), new chain key, new signing key pair, iteration 0. ``self`` is unchanged.

        Holders of this key cannot derive anything of the new one. Draws like `generate`
        (redrawing the chain id while it equals the current one).
        """
        return OwnSenderKey._fresh(self._distribution_id, rng, other_than=self._chain_id)

    @classmethod
    def _fresh(
        cls, distribution_id: bytes, rng: RandomSource | None, *, other_than: int | None = None
    ) -> OwnSenderKey:
        # Draws the chain id (again while it equals ``other_than``), chain key, signing seed.
        while True:
            chain_id = int.from_bytes(_draw(rng, 4), "big")
            if chain_id != other_than:
                break
        chain_key = _draw(rng, CHAIN_KEY_LEN)
        return cls(distribution_id, chain_id, 0, chain_key, _draw(rng, primitives.ED25519_SEED_LEN))

    @property
    def distribution_id(self) -> bytes:
        return self._distribution_id

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def iteration(self) -> int:
        """The iteration the next `encrypt` will use."""
        return self._iteration

    @property
    def signing_public(self) -> bytes:
        """The Ed25519 public key receivers verify with (32 bytes)."""
        return self._public

    def distribution(self) -> pb.SenderKeyDistribution:
        """The distribution message for the *current* iteration: a receiver created from it can
        decrypt this key's messages from `iteration` on, never earlier ones."""
        return pb.SenderKeyDistribution(
            version=limits.PROTOCOL_VERSION,
            distribution_id=self._distribution_id,
            chain_id=self._chain_id,
            iteration=self._iteration,
            chain_key=self._chain_key,
            signing_key=self._public,
        )

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Encrypt, sign and advance: returns the encoded `SenderKeyMessage`.

        ``associated_data`` (e.g. the franking commitment) is bound by the MAC and the signature
        but not carried; the receiver must pass the same bytes.

        Raises:
            ProtocolError: the chain is exhausted (`MAX_ITERATION` used); rotate first.
                The key is unchanged.
        """
        iteration = self._iteration
        if iteration > MAX_ITERATION:
            raise ProtocolError("sender key chain is exhausted; rotate the sender key")
        message_key, next_chain_key = chain_step(self._chain_key)
        ad = self._prefix + _U32X2.pack(iteration, len(associated_data)) + associated_data
        sealed = seal(message_key, plaintext, ad, SENDER_KEY_MESSAGE_KEYS_INFO)
        signature = primitives.ed25519_sign(self._signing_key, ad + sealed)
        self._chain_key = next_chain_key
        self._iteration = iteration + 1
        return pb.SenderKeyMessage(
            version=SENDER_KEY_VERSION,
            distribution_id=self._distribution_id,
            chain_id=self._chain_id,
            iteration=iteration,
            ciphertext=sealed,
            signature=signature,
        ).SerializeToString(deterministic=True)

    def to_bytes(self) -> bytes:
        """``0x01 || 0x01 || distribution_id (16) || chain_id (u32) || iteration (u32)
        || chain_key (32) || signing seed (32)`` -- 90 bytes. Secret: store encrypted."""
        return (
            bytes((STATE_FORMAT_VERSION, _KIND_OWN))
            + self._distribution_id
            + _U32X2.pack(self._chain_id, self._iteration)
            + self._chain_key
            + self._seed
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> OwnSenderKey:
        """Inverse of `to_bytes` for untrusted bytes.

        Raises:
            UnsupportedVersionError: unknown format version.
            TruncatedError: the input ends early.
            DecodeError: not bytes, wrong kind, or trailing bytes.
        """
        return _parse(data, _KIND_OWN, "own sender key", cls._read)

    @classmethod
    def _read(cls, reader: binary.Reader) -> OwnSenderKey:
        distribution_id = reader.take(DISTRIBUTION_ID_LEN)
        chain_id = reader.u32()
        iteration = reader.u32()
        chain_key = reader.take(CHAIN_KEY_LEN)
        seed = reader.take(primitives.ED25519_SEED_LEN)
        return cls(distribution_id, chain_id, iteration, chain_key, seed)

    def __repr__(self) -> str:
        return (
            f"OwnSenderKey(distribution={self._distribution_id[:4].hex()}.., "
            f"chain_id={self._chain_id}, iteration={self._iteration})"
        )


# --- a remote sender's keys ----------------------------------------------------------------------


@dataclass(slots=True, eq=False, repr=False)  # no repr: it holds the chain key
class _ChainState:
    """One receiving chain: the next iteration's chain key and the skipped message keys.

    Invariant: every iteration in [floor, iteration) is either in ``skipped`` (its key is kept,
    not yet used) or was already decrypted. ``skipped`` is in ascending iteration order (keys are
    only ever added while moving forward), so eviction of the oldest only raises ``floor``.
    """

    distribution_id: InitVar[bytes]
    chain_id: int
    iteration: int
    chain_key: bytes
    public: bytes
    floor: int
    skipped: OrderedDict[int, bytes]
    prefix: bytes = field(init=False)

    def __post_init__(self, distribution_id: bytes) -> None:
        self.prefix = _prefix(distribution_id, self.chain_id)

    def to_bytes(self) -> bytes:
        parts = [
            _U32X2.pack(self.chain_id, self.iteration),
            binary.u32(self.floor),
            self.chain_key,
            self.public,
            binary.u16(len(self.skipped)),
        ]
        for iteration, key in self.skipped.items():
            parts.append(binary.u32(iteration))
            parts.append(key)
        return b"".join(parts)

    @classmethod
    def read(cls, reader: binary.Reader, distribution_id: bytes) -> _ChainState:
        chain_id = reader.u32()
        iteration = reader.u32()
        floor = reader.u32()
        chain_key = reader.take(CHAIN_KEY_LEN)
        public = reader.take(primitives.ED25519_PUBLIC_KEY_LEN)
        count = reader.u16()
        if floor > iteration:
            raise DecodeError("sender-key window floor is past the chain")
        if count > MAX_STORED_SENDER_KEYS:
            raise DecodeError("too many stored sender message keys")
        skipped: OrderedDict[int, bytes] = OrderedDict()
        previous = floor - 1
        for _ in range(count):
            skipped_iteration = reader.u32()
            if not previous < skipped_iteration < iteration:
                raise DecodeError("stored sender message keys are out of order or range")
            skipped[skipped_iteration] = reader.take(CHAIN_KEY_LEN)
            previous = skipped_iteration
        return cls(distribution_id, chain_id, iteration, chain_key, public, floor, skipped)


class RemoteSenderKey:
    """Another device's sender-key line for one group, as this device received it.

    Holds up to `MAX_SENDER_KEY_STATES` chains (newest first), each with its out-of-order window.
    """

    __slots__ = ("_distribution_id", "_states")

    def __init__(self, distribution_id: bytes, states: list[_ChainState]) -> None:
        # Internal: use `from_distribution` or `from_bytes`.
        self._distribution_id = distribution_id
        self._states = states

    @classmethod
    def from_distribution(cls, distribution: pb.SenderKeyDistribution | bytes) -> RemoteSenderKey:
        """The receiving state for a sender's distribution (decoded, or its encoded bytes).

        The distribution must come over an authenticated session from the sender's device.

        Raises:
            DecodeError, UnsupportedVersionError, OversizedError: the distribution is malformed.
        """
        d = _checked_distribution(distribution)
        key = cls(bytes(d.distribution_id), [])
        key._add(d)
        return key

    @property
    def distribution_id(self) -> bytes:
        return self._distribution_id

    @property
    def chain_ids(self) -> tuple[int, ...]:
        """The chain ids held, the most recently added first."""
        return tuple(s.chain_id for s in self._states)

    def add_distribution(self, distribution: pb.SenderKeyDistribution | bytes) -> bool:
        """Take in a rotation (new chain id) or a re-sent distribution of a known chain.

        - Unknown chain id: becomes the newest chain; the oldest beyond `MAX_SENDER_KEY_STATES`
          is dropped (its pending messages can no longer be decrypted).
        - Known chain id, same signing key: a re-send; the held chain is kept as it is (it never
          rewinds: an older chain key would re-open already decrypted messages). It becomes the
          newest chain.
        - Known chain id, different signing key: the sender replaced that chain; the old one is
          dropped and the new one added as newest.

        Returns True when a chain was added, False for a re-send of a known chain.

        Raises:
            DecodeError, UnsupportedVersionError, OversizedError: the distribution is malformed.
            UnknownSenderKeyError: it belongs to another distribution id (another key line).
        """
        d = _checked_distribution(distribution)
        if d.distribution_id != self._distribution_id:
            raise UnknownSenderKeyError("distribution belongs to another sender-key line")
        return self._add(d)

    def _add(self, d: pb.SenderKeyDistribution) -> bool:
        states = self._states
        for index, state in enumerate(states):
            if state.chain_id == d.chain_id:
                del states[index]
                if primitives.constant_time_equal(state.public, d.signing_key):
                    states.insert(0, state)
                    return False
                break
        iteration = d.iteration
        states.insert(
            0,
            _ChainState(
                self._distribution_id,
                d.chain_id,
                iteration,
                bytes(d.chain_key),
                bytes(d.signing_key),
                iteration,
                OrderedDict(),
            ),
        )
        del states[MAX_SENDER_KEY_STATES:]
        return True

    def decrypt(self, message: bytes | pb.SenderKeyMessage, associated_data: bytes) -> bytes:
        """Verify and decrypt a `SenderKeyMessage` (its bytes, or as `codec.decode` returned it).

        Order of checks: decode; find the chain (distribution id, chain id); verify the
        signature over (layout || ciphertext); window; derive the key; check the MAC and decrypt.
        Only after all of that is the state changed. The window rule, for iteration ``i`` and a
        chain at ``next`` with window floor ``floor``:

        - ``i >= next``: ok if ``i - next <= MAX_SENDER_KEY_SKIP``, else TooManySkippedMessages.
        - ``i < next`` and its key is stored: ok (the key is then deleted).
        - ``i < floor``: OutOfWindow (before the distribution this state started from, or the
          key was evicted; whether it was ever used is no longer known).
        - ``floor <= i < next``, key not stored: Duplicate (it was decrypted already).

        Raises:
            DecodeError (and subclasses): the bytes are not a valid message; iteration
                2**32 - 1.
            UnknownSenderKeyError: another distribution id, or a chain id not held.
            InvalidSignatureError: the signature does not verify (checked before anything else
                touches the chain).
            TooManySkippedMessagesError, OutOfWindowError, DuplicateMessageError: window.
            DecryptionError: wrong associated data, or altered ciphertext.
        """
        if isinstance(message, pb.SenderKeyMessage):
            msg = message
        else:
            msg = codec.decode(pb.SenderKeyMessage, message)
        if msg.distribution_id != self._distribution_id:
            raise UnknownSenderKeyError("message uses another sender-key line")
        chain_id = msg.chain_id
        for state in self._states:
            if state.chain_id == chain_id:
                break
        else:
            raise UnknownSenderKeyError("message uses a sender-key chain this device lacks")
        iteration = msg.iteration
        if iteration > MAX_ITERATION:
            raise DecodeError("sender-key iteration is out of range")
        ad = state.prefix + _U32X2.pack(iteration, len(associated_data)) + associated_data
        sealed = msg.ciphertext
        primitives.ed25519_verify(state.public, ad + sealed, msg.signature)

        current = state.iteration
        if iteration == current:
            # The common case: the next message in order.
            message_key, next_chain_key = chain_step(state.chain_key)
            plaintext = open_sealed(message_key, sealed, ad, SENDER_KEY_MESSAGE_KEYS_INFO)
            state.chain_key = next_chain_key
            state.iteration = current + 1
            return plaintext
        if iteration < current:
            stored = state.skipped.get(iteration)
            if stored is None:
                if iteration < state.floor:
                    raise OutOfWindowError()
                raise DuplicateMessageError()
            plaintext = open_sealed(stored, sealed, ad, SENDER_KEY_MESSAGE_KEYS_INFO)
            del state.skipped[iteration]
            return plaintext
        if iteration - current > MAX_SENDER_KEY_SKIP:
            raise TooManySkippedMessagesError()
        chain_key = state.chain_key
        new_keys: list[tuple[int, bytes]] = []
        for skipped_iteration in range(current, iteration):
            message_key, chain_key = chain_step(chain_key)
            new_keys.append((skipped_iteration, message_key))
        message_key, chain_key = chain_step(chain_key)
        plaintext = open_sealed(message_key, sealed, ad, SENDER_KEY_MESSAGE_KEYS_INFO)
        # Commit: nothing below can fail.
        skipped = state.skipped
        skipped.update(new_keys)
        excess = len(skipped) - MAX_STORED_SENDER_KEYS
        while excess > 0:
            evicted, _ = skipped.popitem(last=False)
            state.floor = evicted + 1
            excess -= 1
        state.chain_key = chain_key
        state.iteration = iteration + 1
        return plaintext

    def to_bytes(self) -> bytes:
        """``0x01 || 0x02 || distribution_id (16) || n (u8) || n chain states``, newest first;
        a chain state is ``chain_id (u32) || next iteration (u32) || floor (u32) ||
        chain_key (32) || signing public (32) || k (u16) || k x (iteration (u32) || key (32))``
        with the k stored keys in ascending iteration. Secret: store encrypted."""
        parts = [
            bytes((STATE_FORMAT_VERSION, _KIND_REMOTE)),
            self._distribution_id,
            bytes((len(self._states),)),
        ]
        parts.extend(state.to_bytes() for state in self._states)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> RemoteSenderKey:
        """Inverse of `to_bytes` for untrusted bytes; checks every invariant.

        Raises:
            UnsupportedVersionError: unknown format version.
            TruncatedError: the input ends early.
            DecodeError: not bytes, wrong kind, a broken invariant, or trailing bytes.
        """
        return _parse(data, _KIND_REMOTE, "remote sender key", cls._read)

    @classmethod
    def _read(cls, reader: binary.Reader) -> RemoteSenderKey:
        distribution_id = reader.take(DISTRIBUTION_ID_LEN)
        count = reader.u8()
        if not 1 <= count <= MAX_SENDER_KEY_STATES:
            raise DecodeError("remote sender key holds an invalid number of chains")
        states = [_ChainState.read(reader, distribution_id) for _ in range(count)]
        if len({s.chain_id for s in states}) != count:
            raise DecodeError("remote sender key holds a chain id twice")
        return cls(distribution_id, states)

    def __repr__(self) -> str:
        chains = ", ".join(f"{s.chain_id}@{s.iteration}" for s in self._states)
        return f"RemoteSenderKey(distribution={self._distribution_id[:4].hex()}.., [{chains}])"


# --- one group on one device --------------------------------------------------------------------

Device = tuple[str, int]
"""A member device: (account name, device id)."""


class GroupSenderKeys:
    """Everything one device holds for one group: its own sender key, the remote sender keys by
    member device, and which member devices already hold the current own key.

    Pure: the caller delivers distributions (over 1:1 sessions) and messages, and persists
    `to_bytes()`. Membership itself is the caller's (the group state); this class is told of
    departures through `remove_member` and rotates then.
    """

    __slots__ = ("_own", "_remote", "_shared_with")

    def __init__(
        self,
        own: OwnSenderKey,
        remote: dict[Device, RemoteSenderKey] | None = None,
        shared_with: Iterable[Device] = (),
    ) -> None:
        self._own = own
        self._remote: dict[Device, RemoteSenderKey] = {} if remote is None else remote
        self._shared_with: set[Device] = set(shared_with)

    @classmethod
    def create(
        cls, distribution_id: bytes | None = None, *, rng: RandomSource | None = None
    ) -> GroupSenderKeys:
        """A fresh group state with a new own sender key (see `OwnSenderKey.generate`)."""
        return cls(OwnSenderKey.generate(distribution_id, rng=rng))

    @property
    def own(self) -> OwnSenderKey:
        """The current own sender key."""
        return self._own

    def distribution(self) -> pb.SenderKeyDistribution:
        """The own key's distribution at its current iteration (for members lacking it)."""
        return self._own.distribution()

    def devices_needing_key(self, devices: Iterable[Device]) -> list[Device]:
        """Those of ``devices`` (the group's current member devices, without this one) that
        have not been sent the current own key; send them `distribution()` before the next
        `encrypt`, then call `mark_key_sent`. Order is kept."""
        shared = self._shared_with
        return [d for d in devices if d not in shared]

    def shared_with(self) -> list[Device]:
        """The member devices recorded (`mark_key_sent`) as holding the current own key, sorted.
        Empty after every rotation."""
        return sorted(self._shared_with)

    def mark_key_sent(self, devices: Iterable[Device]) -> None:
        """Record that ``devices`` were sent the current own key."""
        for account, device in devices:
            _check_account(account, device)
            self._shared_with.add((account, device))

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """`OwnSenderKey.encrypt` with the current own key."""
        return self._own.encrypt(plaintext, associated_data)

    def rotate(self, *, rng: RandomSource | None = None) -> pb.SenderKeyDistribution:
        """Replace the own key by a new generation (`OwnSenderKey.rotate`); nobody holds it yet.
        Returns its distribution, to send to the remaining member devices only."""
        self._own = self._own.rotate(rng=rng)
        self._shared_with.clear()
        return self._own.distribution()

    def remove_member(
        self, account: str, device: int | None = None, *, rng: RandomSource | None = None
    ) -> pb.SenderKeyDistribution:
        """A member (every device of ``account``, or only ``device``) left or was removed.

        Forgets their sender keys (their later messages are refused with
        `UnknownSenderKeyError`) and rotates the own key: the departed devices hold the old
        chain, which cannot derive the new one. Returns the new distribution, to be sent to
        the remaining member devices only. Every remaining member does the same on its side.
        """
        for key in list(self._remote):
            if key[0] == account and (device is None or key[1] == device):
                del self._remote[key]
        return self.rotate(rng=rng)

    def add_distribution(
        self, account: str, device: int, distribution: pb.SenderKeyDistribution | bytes
    ) -> bool:
        """Take in a member device's distribution, received over the 1:1 session with it.

        A distribution with a new distribution id replaces that device's key line (the sender
        started over); otherwise see `RemoteSenderKey.add_distribution`. Returns True when a
        chain was added. The state is unchanged on error.

        Raises:
            DecodeError, UnsupportedVersionError, OversizedError: the distribution is malformed.
            ValueError: ``account`` / ``device`` are not a valid device address.
        """
        _check_account(account, device)
        d = _checked_distribution(distribution)
        held = self._remote.get((account, device))
        if held is None or held.distribution_id != d.distribution_id:
            self._remote[(account, device)] = RemoteSenderKey.from_distribution(d)
            return True
        return held.add_distribution(d)

    def remote(self, account: str, device: int) -> RemoteSenderKey | None:
        """The sender key held for a member device, if any."""
        return self._remote.get((account, device))

    def senders(self) -> list[Device]:
        """The member devices whose sender keys are held, sorted."""
        return sorted(self._remote)

    def decrypt(
        self,
        account: str,
        device: int,
        message: bytes | pb.SenderKeyMessage,
        associated_data: bytes,
    ) -> bytes:
        """Decrypt a group message from ``(account, device)`` (the envelope's sender).

        Raises:
            UnknownSenderKeyError: no key held for that device, or see
                `RemoteSenderKey.decrypt` for the rest.
        """
        held = self._remote.get((account, device))
        if held is None:
            raise UnknownSenderKeyError()
        return held.decrypt(message, associated_data)

    def to_bytes(self) -> bytes:
        """``0x01 || 0x03 || own key (90 bytes, `OwnSenderKey.to_bytes`) || s (u32) ||
        s x device || r (u32) || r x (device || len (u32) || `RemoteSenderKey.to_bytes`)``,
        where device = ``len (u16) || UTF-8 account || device id (u32)``; both lists sorted by
        (account, device). Secret: store encrypted."""
        parts = [bytes((STATE_FORMAT_VERSION, _KIND_GROUP)), self._own.to_bytes()]
        shared = sorted(self._shared_with)
        parts.append(binary.u32(len(shared)))
        parts.extend(_account_bytes(a, d) for a, d in shared)
        parts.append(binary.u32(len(self._remote)))
        for key in sorted(self._remote):
            blob = self._remote[key].to_bytes()
            parts.append(_account_bytes(*key))
            parts.append(binary.u32(len(blob)))
            parts.append(blob)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupSenderKeys:
        """Inverse of `to_bytes` for untrusted bytes.

        Raises:
            UnsupportedVersionError: unknown format version (outer or nested).
            TruncatedError: the input ends early.
            DecodeError: not bytes, wrong kind, a broken invariant, devices not in strictly
                ascending order, or trailing bytes. (The encoding is canonical: a state has
                exactly one.)
        """
        reader = _reader(data, _KIND_GROUP, "group sender keys")
        own = OwnSenderKey.from_bytes(reader.take(_OWN_LEN))
        shared: list[Device] = []
        for _ in range(reader.u32()):
            entry = _read_account(reader)
            if shared and not shared[-1] < entry:
                raise DecodeError("devices are not in canonical (sorted, unique) order")
            shared.append(entry)
        remote: dict[Device, RemoteSenderKey] = {}
        previous: Device | None = None
        for _ in range(reader.u32()):
            entry = _read_account(reader)
            if previous is not None and not previous < entry:
                raise DecodeError("devices are not in canonical (sorted, unique) order")
            previous = entry
            remote[entry] = RemoteSenderKey.from_bytes(reader.take(reader.u32()))
        reader.finish()
        return cls(own, remote, shared)

    def __repr__(self) -> str:
        return f"GroupSenderKeys(own={self._own!r}, senders={len(self._remote)})"
