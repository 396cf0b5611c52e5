"""The Double Ratchet (Tidings DR v1): Signal's algorithm, section 3, with PROTOCOL.md's constants.

The ratchet stands on its own: it starts from a 32-byte shared secret and Bob's ratchet key (what a
handshake such as PQXDH produces) and needs no server, storage or clock.

- `DoubleRatchet.init_alice` / `init_bob`: RatchetInitAlice / RatchetInitBob (spec 3.3).
- `DoubleRatchet.encrypt`: RatchetEncrypt. `DoubleRatchet.decrypt`: RatchetDecrypt, including
  TrySkippedMessageKeys, SkipMessageKeys and DHRatchet (spec 3.4, 3.5).
- `DoubleRatchet.to_bytes` / `from_bytes`: a versioned binary form for storage.

Cryptographic functions (PROTOCOL.md, "Double Ratchet (Tidings DR v1)"):

- GENERATE_DH: X25519; the 32 private-key bytes come from ``rng`` (default: the OS CSPRNG).
- KDF_RK(rk, dh_out): HKDF-SHA256(salt=rk, IKM=dh_out, info=``Tidings_DR_Root_v1``) -> 64 bytes;
  first 32 = new root key, last 32 = new chain key.
- KDF_CK(ck): `tidings.crypto.symmetric.chain_step` (HMAC-SHA256 with 0x01 / 0x02).
- ENCRYPT / DECRYPT: `tidings.crypto.symmetric.seal` / `open_sealed` with
  ``Tidings_DR_MessageKeys_v1``; the associated data is ``ad || header.encode()``.

Limits and the exact rules this module applies (also in docs/protocol.md):

- `MAX_SKIP`: one gap (in the current chain, or at the end of the previous chain during a DH ratchet
  step) may skip at most 1000 message keys; a larger gap raises `TooManySkippedMessagesError`.
- `MAX_STORED_SKIPPED_KEYS`: at most 2000 skipped keys are kept; after a successful decryption adds
  keys, the oldest inserted keys are evicted first until 2000 remain.
- `MAX_RECEIVING_CHAINS`: the session remembers the ratchet public keys of the 5 most recent
  receiving chains (the current one included). When a DH ratchet step starts a sixth, the oldest is
  forgotten and every skipped key belonging to it is deleted.
- Duplicates: a message whose key is not held although its chain is known raises
  `DuplicateMessageError`: its ratchet key is the current receiving key and ``n`` is below the
  receiving counter, or its ratchet key is one of the remembered earlier receiving keys, and
  ``(dh, n)`` is not among the stored skipped keys. Such a key was used already, or discarded by a
  limit above; either way the message cannot be decrypted any more.
- Any failure leaves the session exactly as it was: every candidate value is computed in locals and
  assigned only after the message authenticated.
"""

from __future__ import annotations

import struct
from itertools import islice
from typing import Any, Final

from tidings.crypto.identity import RandomSource
from tidings.crypto.primitives import hkdf_sha256, random_bytes, x25519, x25519_public
from tidings.crypto.symmetric import DR_MESSAGE_KEYS_INFO, chain_step, open_sealed, seal
from tidings.errors import (
    ChainExhaustedError,
    DecodeError,
    DecryptionError,
    DuplicateMessageError,
    InvalidKeyError,
    OversizedError,
    ProtocolError,
    TooManySkippedMessagesError,
    TruncatedError,
    UnsupportedVersionError,
)
from tidings.wire import binary

__all__ = [
    "DR_ROOT_INFO",
    "HEADER_LEN",
    "MAX_COUNTER",
    "MAX_RECEIVING_CHAINS",
    "MAX_SKIP",
    "MAX_STORED_SKIPPED_KEYS",
    "STATE_MAGIC",
    "STATE_VERSION",
    "DoubleRatchet",
    "Header",
]

MAX_SKIP: Final = 1000
"""Most message keys one gap may skip (spec MAX_SKIP)."""

MAX_STORED_SKIPPED_KEYS: Final = 2000
"""Most skipped message keys one session stores; the oldest inserted are evicted first."""

MAX_RECEIVING_CHAINS: Final = 5
"""Receiving chains (current included) whose ratchet keys and skipped keys are remembered."""

MAX_COUNTER: Final = 0xFFFF_FFFF
"""Largest ``pn`` / ``n`` a header can carry (unsigned 32-bit)."""

DR_ROOT_INFO: Final = b"Tidings_DR_Root_v1"
"""HKDF info of KDF_RK (PROTOCOL.md)."""

HEADER_LEN: Final = 40
KEY_LEN: Final = 32

STATE_MAGIC: Final = b"TDRS"
STATE_VERSION: Final = 1

_HEADER = struct.Struct(">32sII")
_COUNTERS = struct.Struct(">QQQ")  # ns, pn, nr: each may reach 2**32 (one past MAX_COUNTER)
_SKIPPED_ENTRY = struct.Struct(">BI32s")  # chain index, n, message key

_FLAG_DHR: Final = 0x01
_FLAG_CKS: Final = 0x02
_FLAG_CKR: Final = 0x04
# The only reachable combinations: Bob before his first message, Alice before her first reply,
# and every state after the first DH ratchet step.
_VALID_FLAGS: Final = frozenset({0, _FLAG_DHR | _FLAG_CKS, _FLAG_DHR | _FLAG_CKS | _FLAG_CKR})

_FIXED_STATE_LEN: Final = len(STATE_MAGIC) + 2 + 2 * KEY_LEN + _COUNTERS.size + 1 + 2
_MAX_STATE_LEN: Final = (
    _FIXED_STATE_LEN
    + 3 * KEY_LEN
    + MAX_RECEIVING_CHAINS * KEY_LEN
    + MAX_STORED_SKIPPED_KEYS * _SKIPPED_ENTRY.size
)

_set = object.__setattr__

SkippedKeys = dict[tuple[bytes, int], bytes]


class Header(binary.EqualByEncoding):
    """A Double Ratchet message header: the sender's ratchet public key ``dh``, the length ``pn``
    of its previous sending chain, and the message number ``n`` in the current one.

    Immutable; equal and hashed by its encoding. `encode` gives the 40-byte wire form
    ``dh (32) | pn (u32 BE) | n (u32 BE)``.

    Raises:
        DecodeError: ``dh`` is not 32 bytes, or ``pn`` / ``n`` is not an integer in [0, 2**32 - 1].
    """

    __slots__ = ("_encoded", "dh", "n", "pn")

    dh: bytes
    pn: int
    n: int
    _encoded: bytes

    def __init__(self, dh: bytes, pn: int, n: int) -> None:
        if not isinstance(dh, bytes) or len(dh) != KEY_LEN:
            raise DecodeError("header ratchet key must be 32 bytes")
        if type(pn) is not int or type(n) is not int:
            raise DecodeError("header counters must be integers")
        if not (0 <= pn <= MAX_COUNTER and 0 <= n <= MAX_COUNTER):
            raise DecodeError("header counter out of the unsigned 32-bit range")
        _set(self, "dh", dh)
        _set(self, "pn", pn)
        _set(self, "n", n)
        _set(self, "_encoded", _HEADER.pack(dh, pn, n))

    @classmethod
    def decode(cls, data: bytes) -> Header:
        """Parse the 40-byte encoding.

        Raises:
            TruncatedError: fewer than 40 bytes.
            DecodeError: more than 40 bytes.
        """
        if len(data) != HEADER_LEN:
            if len(data) < HEADER_LEN:
                raise TruncatedError(f"header must be {HEADER_LEN} bytes, got {len(data)}")
            raise DecodeError(f"header must be {HEADER_LEN} bytes, got {len(data)}")
        data = bytes(data)
        dh, pn, n = _HEADER.unpack(data)
        return _trusted_header(dh, pn, n, data)

    def encode(self) -> bytes:
        """The 40-byte wire form: dh (32) | pn (u32 big-endian) | n (u32 big-endian)."""
        return self._encoded

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Header is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Header is immutable")

    def __repr__(self) -> str:
        # A ratchet public key is not secret; a prefix is enough to tell chains apart in logs.
        return f"Header(dh={self.dh[:4].hex()}…, pn={self.pn}, n={self.n})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Header, (self.dh, self.pn, self.n))


def _trusted_header(dh: bytes, pn: int, n: int, encoded: bytes) -> Header:
    # Skips validation: callers pass values that are in range by construction.
    header: Header = object.__new__(Header)
    _set(header, "dh", dh)
    _set(header, "pn", pn)
    _set(header, "n", n)
    _set(header, "_encoded", encoded)
    return header


def _kdf_rk(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    okm = hkdf_sha256(dh_out, salt=root_key, info=DR_ROOT_INFO, length=2 * KEY_LEN)
    return okm[:KEY_LEN], okm[KEY_LEN:]


def _require_key(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != KEY_LEN:
        raise InvalidKeyError(f"{what} must be 32 bytes")
    return value


def _new_private(rng: RandomSource) -> bytes:
    private = rng(KEY_LEN)
    if not isinstance(private, bytes) or len(private) != KEY_LEN:
        raise InvalidKeyError("the rng must return 32 bytes for a new ratchet key")
    return private


class DoubleRatchet:
    """One party's Double Ratchet session state.

    Create with `init_alice`, `init_bob` or `from_bytes`; the constructor is not public. Not
    thread-safe: one session is driven by one caller at a time.

    Every method that fails raises a `tidings.errors.TidingsError` and leaves the state as it was.
    """

    __slots__ = (
        "_chains",
        "_ckr",
        "_cks",
        "_dhr",
        "_dhs_priv",
        "_dhs_pub",
        "_nr",
        "_ns",
        "_pn",
        "_rk",
        "_rng",
        "_skipped",
    )

    _rk: bytes
    _dhs_priv: bytes
    _dhs_pub: bytes
    _dhr: bytes | None
    _cks: bytes | None
    _ckr: bytes | None
    _ns: int
    _nr: int
    _pn: int
    _skipped: SkippedKeys
    _chains: list[bytes]
    _rng: RandomSource

    def __init__(self) -> None:
        raise TypeError("use DoubleRatchet.init_alice, init_bob or from_bytes")

    @classmethod
    def _blank(cls, rng: RandomSource | None) -> DoubleRatchet:
        self: DoubleRatchet = object.__new__(cls)
        self._rng = random_bytes if rng is None else rng
        self._dhr = None
        self._cks = None
        self._ckr = None
        self._ns = 0
        self._nr = 0
        self._pn = 0
        self._skipped = {}
        self._chains = []
        return self

    # --- initialisation (spec 3.3) --------------------------------------------------------------

    @classmethod
    def init_alice(
        cls, shared_secret: bytes, bob_dh_public: bytes, *, rng: RandomSource | None = None
    ) -> DoubleRatchet:
        """RatchetInitAlice: Alice, who knows Bob's ratchet public key, can send at once.

        ``rng(32)`` supplies each new X25519 private key (default: the OS CSPRNG).

        Raises:
            InvalidKeyError: a key is not 32 bytes, Bob's key is of low order (all-zero DH), or
                ``rng`` did not return 32 bytes.
        """
        sk = _require_key(shared_secret, "shared secret")
        bob = _require_key(bob_dh_public, "Bob's ratchet public key")
        self = cls._blank(rng)
        private = _new_private(self._rng)
        self._rk, self._cks = _kdf_rk(sk, x25519(private, bob))
        self._dhs_priv = private
        self._dhs_pub = x25519_public(private)
        self._dhr = bob
        return self

    @classmethod
    def init_bob(
        cls, shared_secret: bytes, bob_dh_private: bytes, *, rng: RandomSource | None = None
    ) -> DoubleRatchet:
        """RatchetInitBob: Bob keeps his ratchet key pair and waits for Alice's first message;
        he cannot encrypt before he has decrypted one.

        Raises:
            InvalidKeyError: a key is not 32 bytes.
        """
        sk = _require_key(shared_secret, "shared secret")
        private = _require_key(bob_dh_private, "Bob's ratchet private key")
        self = cls._blank(rng)
        self._rk = sk
        self._dhs_priv = private
        self._dhs_pub = x25519_public(private)
        return self

    # --- messages (spec 3.4, 3.5) -----------------------------------------------------------------

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> tuple[Header, bytes]:
        """RatchetEncrypt: encrypt ``plaintext``, authenticating ``associated_data || header``.

        Returns the header and ``ciphertext || 32-byte tag``.

        Raises:
            ProtocolError: this is Bob and he has not yet received Alice's first message.
            ChainExhaustedError: ``n`` or ``pn`` would not fit in 32 bits.
        """
        ck = self._cks
        if ck is None:
            raise ProtocolError("cannot send before the first message from the peer arrived")
        n = self._ns
        pn = self._pn
        if n > MAX_COUNTER or pn > MAX_COUNTER:
            raise ChainExhaustedError("the sending chain has used every message number")
        encoded = _HEADER.pack(self._dhs_pub, pn, n)
        mk, ck = chain_step(ck)
        ciphertext = seal(mk, plaintext, associated_data + encoded, DR_MESSAGE_KEYS_INFO)
        self._cks = ck
        self._ns = n + 1
        return _trusted_header(self._dhs_pub, pn, n, encoded), ciphertext

    def decrypt(self, header: Header, ciphertext: bytes, associated_data: bytes) -> bytes:
        """RatchetDecrypt: authenticate and decrypt one message.

        Uses a stored skipped key when there is one, else advances the current receiving chain,
        else performs a DH ratchet step. Keys skipped on the way are stored (see the module
        docstring for the limits).

        Raises:
            DecryptionError: authentication or padding failed, or the header names the ratchet key
                Alice was initialised with, which never has a receiving chain.
            DuplicateMessageError: the message's chain is known but its key is no longer held
                (already used, or evicted by a limit).
            TooManySkippedMessagesError: reaching the message would skip more than `MAX_SKIP` keys
                in one gap.
            InvalidKeyError: the header's ratchet key is of low order; or ``rng`` misbehaved.
        """
        dh = header.dh
        n = header.n
        skipped = self._skipped
        if skipped:
            mk = skipped.get((dh, n))
            if mk is not None:
                plaintext = open_sealed(
                    mk, ciphertext, associated_data + header._encoded, DR_MESSAGE_KEYS_INFO
                )
                del skipped[(dh, n)]
                return plaintext

        if dh != self._dhr:
            if dh in self._chains:
                raise DuplicateMessageError("message from an earlier chain whose key is not held")
            return self._decrypt_with_dh_ratchet(header, ciphertext, associated_data)

        ck = self._ckr
        if ck is None:
            # Alice's DHr is Bob's initial ratchet key, which Bob never sends from.
            raise DecryptionError("no receiving chain for this ratchet key")
        nr = self._nr
        if n == nr:  # in-order delivery: the common case, kept free of list work
            mk, ck = chain_step(ck)
            plaintext = open_sealed(
                mk, ciphertext, associated_data + header._encoded, DR_MESSAGE_KEYS_INFO
            )
            self._ckr = ck
            self._nr = n + 1
            return plaintext
        if n < nr:
            raise DuplicateMessageError("message number already passed in the current chain")
        if n - nr > MAX_SKIP:
            raise TooManySkippedMessagesError(f"message skips more than {MAX_SKIP} keys")
        new_keys: list[tuple[tuple[bytes, int], bytes]] = []
        for i in range(nr, n):
            mk, ck = chain_step(ck)
            new_keys.append(((dh, i), mk))
        mk, ck = chain_step(ck)
        plaintext = open_sealed(
            mk, ciphertext, associated_data + header._encoded, DR_MESSAGE_KEYS_INFO
        )
        self._store_skipped(new_keys)
        self._ckr = ck
        self._nr = n + 1
        return plaintext

    def _decrypt_with_dh_ratchet(
        self, header: Header, ciphertext: bytes, associated_data: bytes
    ) -> bytes:
        # SkipMessageKeys(pn), DHRatchet, SkipMessageKeys(n), decrypt: all into locals first. The
        # new sending key pair is generated only after the message authenticated, so a forgery
        # costs one DH and consumes no randomness.
        dh = header.dh
        n = header.n
        nr = self._nr
        if header.pn > nr + MAX_SKIP or n > MAX_SKIP:
            raise TooManySkippedMessagesError(f"message skips more than {MAX_SKIP} keys")

        new_keys: list[tuple[tuple[bytes, int], bytes]] = []
        old_ck = self._ckr
        old_dh = self._dhr
        if old_ck is not None and old_dh is not None:
            for i in range(nr, header.pn):
                mk, old_ck = chain_step(old_ck)
                new_keys.append(((old_dh, i), mk))

        rk, ck = _kdf_rk(self._rk, x25519(self._dhs_priv, dh))
        for i in range(n):
            mk, ck = chain_step(ck)
            new_keys.append(((dh, i), mk))
        mk, ck = chain_step(ck)
        plaintext = open_sealed(
            mk, ciphertext, associated_data + header._encoded, DR_MESSAGE_KEYS_INFO
        )

        private = _new_private(self._rng)
        public = x25519_public(private)
        rk, cks = _kdf_rk(rk, x25519(private, dh))

        chains = self._chains
        chains.append(dh)
        if len(chains) > MAX_RECEIVING_CHAINS:
            self._forget_chain(chains.pop(0))
        self._store_skipped(new_keys)
        self._pn = self._ns
        self._ns = 0
        self._nr = n + 1
        self._dhr = dh
        self._ckr = ck
        self._cks = cks
        self._rk = rk
        self._dhs_priv = private
        self._dhs_pub = public
        return plaintext

    def _store_skipped(self, new_keys: list[tuple[tuple[bytes, int], bytes]]) -> None:
        if not new_keys:
            return
        skipped = self._skipped
        skipped.update(new_keys)
        excess = len(skipped) - MAX_STORED_SKIPPED_KEYS
        if excess > 0:
            for key in list(islice(skipped, excess)):
                del skipped[key]

    def _forget_chain(self, dh: bytes) -> None:
        skipped = self._skipped
        for key in [key for key in skipped if key[0] == dh]:
            del skipped[key]

    # --- storage --------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise the whole state (version 1). The result contains secret keys: store it
        encrypted. The rng is not part of it.

        Layout (all integers big-endian)::

            magic "TDRS" | version u8 = 1 | flags u8 (0x01 DHr, 0x02 CKs, 0x04 CKr present)
            | RK (32) | DHs private (32) | [DHr (32)] | [CKs (32)] | [CKr (32)]
            | Ns u64 | PN u64 | Nr u64
            | chain count u8 | chain count x ratchet public key (32), oldest first
            | skipped count u16 | skipped count x (chain index u8 | n u32 | message key (32)),
              oldest inserted first
        """
        flags = 0
        parts = [STATE_MAGIC, b"", self._rk, self._dhs_priv]
        if self._dhr is not None:
            flags |= _FLAG_DHR
            parts.append(self._dhr)
        if self._cks is not None:
            flags |= _FLAG_CKS
            parts.append(self._cks)
        if self._ckr is not None:
            flags |= _FLAG_CKR
            parts.append(self._ckr)
        parts[1] = bytes((STATE_VERSION, flags))
        parts.append(_COUNTERS.pack(self._ns, self._pn, self._nr))
        index = {dh: i for i, dh in enumerate(self._chains)}
        parts.append(bytes((len(self._chains),)))
        parts.extend(self._chains)
        parts.append(binary.u16(len(self._skipped)))
        pack = _SKIPPED_ENTRY.pack
        parts.extend(pack(index[dh], n, mk) for (dh, n), mk in self._skipped.items())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, *, rng: RandomSource | None = None) -> DoubleRatchet:
        """Restore a state written by `to_bytes`, checking every invariant the ratchet relies on.

        Raises:
            OversizedError: longer than any valid state.
            TruncatedError: the data ends early.
            UnsupportedVersionError: another state version.
            DecodeError: wrong magic, trailing bytes, or an inconsistent state.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError("ratchet state must be bytes")
        data = bytes(data)
        if len(data) > _MAX_STATE_LEN:
            raise OversizedError("ratchet state is longer than any valid state")
        reader = binary.Reader(data, "ratchet state")
        if reader.take(len(STATE_MAGIC)) != STATE_MAGIC:
            raise DecodeError("not a Tidings ratchet state")
        version, flags = reader.take(2)
        if version != STATE_VERSION:
            raise UnsupportedVersionError(f"ratchet state version {version} is not supported")
        if flags not in _VALID_FLAGS:
            raise DecodeError("ratchet state flags are invalid")

        self = cls._blank(rng)
        self._rk = reader.take(KEY_LEN)
        self._dhs_priv = reader.take(KEY_LEN)
        self._dhs_pub = x25519_public(self._dhs_priv)
        if flags & _FLAG_DHR:
            self._dhr = reader.take(KEY_LEN)
        if flags & _FLAG_CKS:
            self._cks = reader.take(KEY_LEN)
        if flags & _FLAG_CKR:
            self._ckr = reader.take(KEY_LEN)
        self._ns, self._pn, self._nr = _COUNTERS.unpack(reader.take(_COUNTERS.size))
        if max(self._ns, self._pn, self._nr) > MAX_COUNTER + 1:
            raise DecodeError("ratchet state counter out of range")

        (chain_count,) = reader.take(1)
        if chain_count > MAX_RECEIVING_CHAINS:
            raise DecodeError("ratchet state keeps too many receiving chains")
        chains = [reader.take(KEY_LEN) for _ in range(chain_count)]
        if len(set(chains)) != chain_count:
            raise DecodeError("ratchet state repeats a receiving chain")
        self._chains = chains

        skipped_count = reader.u16()
        if skipped_count > MAX_STORED_SKIPPED_KEYS:
            raise DecodeError("ratchet state stores too many skipped keys")
        skipped: SkippedKeys = {}
        for _ in range(skipped_count):
            chain, n, mk = _SKIPPED_ENTRY.unpack(reader.take(_SKIPPED_ENTRY.size))
            if chain >= chain_count:
                raise DecodeError("skipped key names an unknown chain")
            dh = chains[chain]
            if dh == self._dhr and n >= self._nr:
                raise DecodeError("skipped key lies ahead of the receiving chain")
            if (dh, n) in skipped:
                raise DecodeError("skipped key repeated")
            skipped[(dh, n)] = mk
        self._skipped = skipped
        if reader.remaining:
            raise DecodeError("trailing bytes after the ratchet state")

        if flags & _FLAG_CKR:
            if chains[-1:] != [self._dhr]:
                raise DecodeError("current receiving chain is not the newest kept chain")
        elif chain_count or skipped_count or self._nr or self._pn:
            raise DecodeError("ratchet state without a receiving chain has receiving data")
        elif not flags and self._ns:
            raise DecodeError("ratchet state without a sending chain has sent messages")
        return self

    def __repr__(self) -> str:
        # Deliberately no keys, not even public ones: reprs end up in logs.
        return (
            f"DoubleRatchet(sent={self._ns}, previous_sent={self._pn}, received={self._nr}, "
            f"skipped_keys={len(self._skipped)}, receiving_chains={len(self._chains)}, "
            f"can_send={self._cks is not None})"
        )
