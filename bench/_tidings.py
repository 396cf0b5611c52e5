"""The Tidings side of `bench/ratchet.py`, with the same contract as `bench/_peers.py`::

    run(n: int) -> float     # untimed set-up, then n timed operations; returns seconds

Tidings modules are imported lazily and each scenario reports why it cannot run
(`MISSING_RATCHET`, `MISSING_SETUP`, `MISSING_GROUP`) instead of failing the whole benchmark, so
the script also works on a tree where a module is not written yet.

Wire bytes: the ratchet scenarios put ``header.encode() || ciphertext`` on the wire (the 40-byte
header is fixed-size, so this is an unambiguous framing) and the receiver parses it with
`Header.decode`. `one_way_session` goes one layer up: `Session.encrypt` / `Session.decrypt` with the
protobuf `RatchetMessage` and the franking commitment in the associated data, as the client uses it.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

RunFn = Callable[[int], float]

CLOCK_START_LISTENERS: list[Callable[[], None]] = []
"""Called when a run's timed window opens (once per run, outside the timed loop); the per-primitive
breakdown (`_breakdown.instrumented`) uses it to forget the untimed set-up's primitive calls."""


def _clock_start() -> float:
    for listener in CLOCK_START_LISTENERS:
        listener()
    return time.perf_counter()


_HEADER_LEN = 40


def _missing(*modules: str) -> str | None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name} is not importable yet ({exc})"
    return None


MISSING_RATCHET = _missing("tidings.crypto.ratchet")
MISSING_SESSION = _missing("tidings.crypto.session", "tidings.crypto.pqxdh")
MISSING_SETUP = _missing(
    "tidings.crypto.identity",
    "tidings.crypto.device_prekeys",
    "tidings.crypto.pqxdh",
    "tidings.crypto.ratchet",
)
MISSING_GROUP = _missing("tidings.crypto.sender_keys")


# --- Double Ratchet ------------------------------------------------------------------------------


def _ratchet_pair(ad: bytes) -> tuple[Any, Any]:
    """Alice and Bob ratchets from a random shared secret, warmed up A->B, B->A, A->B (untimed),
    exactly like the vodozemac and doubleratchet pairs."""
    from tidings.crypto.primitives import x25519_generate
    from tidings.crypto.ratchet import DoubleRatchet

    shared_secret = os.urandom(32)
    bob_private, bob_public = x25519_generate()
    alice = DoubleRatchet.init_alice(shared_secret, bytes(bob_public))
    bob = DoubleRatchet.init_bob(shared_secret, bob_private)
    for sender, receiver, text in ((alice, bob, b"hello"), (bob, alice, b"reply"),
                                   (alice, bob, b"again")):  # fmt: skip
        header, ciphertext = sender.encrypt(text, ad)
        assert receiver.decrypt(header, ciphertext, ad) == text
    return alice, bob


def one_way(plaintexts: Sequence[bytes], ad: bytes) -> RunFn:
    """Alice sends ``n`` messages; Bob parses the wire bytes and decrypts each as it arrives."""

    def run(n: int) -> float:
        from tidings.crypto.ratchet import Header

        alice, bob = _ratchet_pair(ad)
        encrypt, decrypt, decode = alice.encrypt, bob.decrypt, Header.decode
        k = len(plaintexts)
        start = _clock_start()
        for i in range(n):
            plaintext = plaintexts[i % k]
            header, ciphertext = encrypt(plaintext, ad)
            wire = header.encode() + ciphertext
            if decrypt(decode(wire[:_HEADER_LEN]), wire[_HEADER_LEN:], ad) != plaintext:
                raise AssertionError("tidings one-way: wrong plaintext")
        return time.perf_counter() - start

    return run


def ping_pong(plaintexts: Sequence[bytes], ad: bytes) -> RunFn:
    """Strict alternation: every message is the first of a new chain (one DH ratchet step)."""

    def run(n: int) -> float:
        from tidings.crypto.ratchet import Header

        alice, bob = _ratchet_pair(ad)
        decode = Header.decode
        sides = ((bob.encrypt, alice.decrypt), (alice.encrypt, bob.decrypt))
        k = len(plaintexts)
        start = _clock_start()
        for i in range(n):
            encrypt, decrypt = sides[i & 1]
            plaintext = plaintexts[i % k]
            header, ciphertext = encrypt(plaintext, ad)
            wire = header.encode() + ciphertext
            if decrypt(decode(wire[:_HEADER_LEN]), wire[_HEADER_LEN:], ad) != plaintext:
                raise AssertionError("tidings ping-pong: wrong plaintext")
        return time.perf_counter() - start

    return run


# --- 1:1 session layer --------------------------------------------------------------------------


def _identity_and_prekeys(one_time: int) -> tuple[Any, Any]:
    from tidings.crypto.device_prekeys import DevicePrekeys
    from tidings.crypto.identity import IdentityKeyPair

    identity = IdentityKeyPair.generate()
    prekeys = DevicePrekeys.generate(
        identity, now_ms=0, one_time_count=one_time, kem_count=one_time
    )
    return identity, prekeys


def _fresh_bundles(prekeys: Any, registration_id: int) -> list[Any]:
    """One unverified bundle per one-time key pair, as the server hands them out: each one-time
    X25519 prekey and each one-time ML-KEM prekey is claimed once."""
    one_time_ids = [k.id for k in prekeys.one_time_prekeys]
    kem_ids = [k.id for k in prekeys.kem_prekeys]
    return [
        prekeys.bundle(1, registration_id, otk, kem)
        for otk, kem in zip(one_time_ids, kem_ids, strict=True)
    ]


def one_way_session(plaintexts: Sequence[bytes]) -> RunFn:
    """One-way stream through `Session` (protobuf `RatchetMessage`, AD = handshake AD ||
    franking commitment). The commitments are computed before timing (franking is not measured)."""

    def run(n: int) -> float:
        from tidings.crypto.identity import IdentityKeyPair
        from tidings.crypto.session import Session
        from tidings.wire import codec, pb

        alice_identity = IdentityKeyPair.generate()
        bob_identity, bob_prekeys = _identity_and_prekeys(1)
        (bundle,) = _fresh_bundles(bob_prekeys, 2)
        commitments = [os.urandom(32) for _ in range(len(plaintexts))]
        alice = Session.initiate(alice_identity, bundle, local_registration_id=1)
        first = alice.encrypt(b"hello", commitments[0])
        bob, _ = Session.accept(
            bob_identity, bob_prekeys, codec.decode(pb.PrekeyMessage, first.body), commitments[0]
        )
        reply = bob.encrypt(b"reply", commitments[1])
        alice.decrypt(codec.decode(pb.RatchetMessage, reply.body), commitments[1])
        again = alice.encrypt(b"again", commitments[2])
        bob.decrypt(codec.decode(pb.RatchetMessage, again.body), commitments[2])

        encrypt, decrypt, decode = alice.encrypt, bob.decrypt, codec.decode
        ratchet_message = pb.RatchetMessage
        k = len(plaintexts)
        start = _clock_start()
        for i in range(n):
            plaintext, commitment = plaintexts[i % k], commitments[i % k]
            body = encrypt(plaintext, commitment).body
            if decrypt(decode(ratchet_message, body), commitment) != plaintext:
                raise AssertionError("tidings session one-way: wrong plaintext")
        return time.perf_counter() - start

    return run


def setup(plaintext: bytes) -> RunFn:
    """PQXDH session setup, from handshake start to the first decrypted message.

    Timed per setup -- Alice: `Session.initiate` (verify the signed-prekey and ML-KEM-prekey
    signatures, ephemeral key, 4 X25519 agreements, ML-KEM-768 encapsulation, HKDF, ratchet init
    with one more X25519), encrypt the first 1 KiB message into a protobuf `PrekeyMessage`
    (1,088-byte KEM ciphertext inside). Bob: `codec.decode` the bytes, `Session.accept` (4 X25519,
    ML-KEM-768 decapsulation, HKDF, ratchet init, DH ratchet step, decrypt, consume the one-time
    prekeys). Untimed: both identities and Bob's published prekeys (one one-time X25519 and one
    one-time ML-KEM prekey per setup) -- they exist before any handshake starts, as Bob's
    one-time keys do for Olm -- and a fresh, not yet verified bundle object per setup.
    """

    def run(n: int) -> float:
        from tidings.crypto.identity import IdentityKeyPair
        from tidings.crypto.session import Session
        from tidings.wire import codec, pb

        alice_identity = IdentityKeyPair.generate()
        bob_identity, bob_prekeys = _identity_and_prekeys(n)
        bundles = _fresh_bundles(bob_prekeys, 2)
        commitment = os.urandom(32)
        initiate, accept, decode = Session.initiate, Session.accept, codec.decode
        prekey_message = pb.PrekeyMessage
        start = _clock_start()
        for bundle in bundles:
            alice = initiate(alice_identity, bundle, local_registration_id=1)
            body = alice.encrypt(plaintext, commitment).body
            _bob, first = accept(
                bob_identity, bob_prekeys, decode(prekey_message, body), commitment
            )
            if first != plaintext:
                raise AssertionError("tidings setup: wrong plaintext")
        return time.perf_counter() - start

    return run


# --- groups: sender keys -------------------------------------------------------------------------


def group(plaintexts: Sequence[bytes]) -> RunFn:
    """Sender keys: the sender encrypts (chain step, AES-256-CBC + HMAC, Ed25519 signature, protobuf
    `SenderKeyMessage`) and one member parses and decrypts (signature check, MAC, AES) each message.
    The associated data is a 32-byte franking commitment per message, computed before timing (Megolm
    has no associated data; the extra 32 bytes cost one HMAC block and are noise here)."""

    def run(n: int) -> float:
        from tidings.crypto.sender_keys import OwnSenderKey, RemoteSenderKey

        sender = OwnSenderKey.generate()
        member = RemoteSenderKey.from_distribution(sender.distribution())
        commitments = [os.urandom(32) for _ in range(len(plaintexts))]
        encrypt, decrypt = sender.encrypt, member.decrypt
        k = len(plaintexts)
        start = _clock_start()
        for i in range(n):
            plaintext, commitment = plaintexts[i % k], commitments[i % k]
            if decrypt(encrypt(plaintext, commitment), commitment) != plaintext:
                raise AssertionError("tidings group: wrong plaintext")
        return time.perf_counter() - start

    return run
