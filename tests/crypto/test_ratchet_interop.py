"""Tidings DR v1 interoperates with an independent implementation: Syndace's `doubleratchet`
package (PyPI), configured only from the PROTOCOL.md table.

The package is configured through its abstract classes, each written here against `cryptography`
directly (no tidings code):

- DiffieHellmanRatchet: X25519.
- root-chain KDF: HKDF-SHA256(salt = root key, IKM = DH output, info = Tidings_DR_Root_v1). The
  package's KDFChain keeps the first 32 output bytes as the new root key and returns the rest as
  the chain key, which is PROTOCOL.md's split.
- message-chain KDF: the package steps a chain with a constant and keeps output[:32] as the next
  chain key, output[32:] as the message key; with the constant 0x02 0x01 and one HMAC per constant
  byte this is HMAC(ck, 0x02) || HMAC(ck, 0x01), i.e. PROTOCOL.md's KDF_CK.
- AEAD: HKDF-SHA256(salt = 32 zero bytes, info = Tidings_DR_MessageKeys_v1, 80 bytes), AES-256-CBC
  with PKCS#7, HMAC-SHA256 over associated data || ciphertext, full 32-byte tag appended.
- `_build_associated_data(ad, header)`: ad || dh || pn (u32 BE) || n (u32 BE), PROTOCOL.md's
  CONCAT(ad, header).
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

import doubleratchet as dr
import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto.primitives import x25519_public
from tidings.crypto.ratchet import (
    MAX_SKIP,
    MAX_STORED_SKIPPED_KEYS,
    DoubleRatchet,
    Header,
)

T = TypeVar("T")
AD = b"interop associated data"
ROOT_INFO = b"Tidings_DR_Root_v1"
MESSAGE_KEYS_INFO = b"Tidings_DR_MessageKeys_v1"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive one of the package's coroutines. They are async by signature only (they never wait
    on anything), so stepping once completes them; anything else is a loud failure."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("doubleratchet coroutine actually suspended")


def _hmac(key: bytes, data: bytes) -> bytes:
    h = crypto_hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


class _PrivateKeys:
    """Where the package's X25519 key generation draws from; tests may queue fixed keys."""

    queue: ClassVar[list[bytes]] = []


class X25519Ratchet(dr.DiffieHellmanRatchet):
    @staticmethod
    def _generate_priv() -> bytes:
        if _PrivateKeys.queue:
            return _PrivateKeys.queue.pop(0)
        return X25519PrivateKey.generate().private_bytes_raw()

    @staticmethod
    def _derive_pub(priv: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()

    @staticmethod
    def _perform_diffie_hellman(own_priv: bytes, other_pub: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(own_priv).exchange(
            X25519PublicKey.from_public_bytes(other_pub)
        )


class RootKDF(dr.KDF):
    @staticmethod
    async def derive(key: bytes, data: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=key, info=ROOT_INFO).derive(data)


class MessageKDF(dr.KDF):
    @staticmethod
    async def derive(key: bytes, data: bytes, length: int) -> bytes:
        assert length == 32 * len(data)
        return b"".join(_hmac(key, data[i : i + 1]) for i in range(len(data)))


class TidingsAEAD(dr.AEAD):
    @staticmethod
    def _expand(key: bytes) -> tuple[bytes, bytes, bytes]:
        okm = HKDF(
            algorithm=hashes.SHA256(), length=80, salt=bytes(32), info=MESSAGE_KEYS_INFO
        ).derive(key)
        return okm[:32], okm[32:64], okm[64:]

    @staticmethod
    async def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
        enc_key, auth_key, iv = TidingsAEAD._expand(key)
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        return ciphertext + _hmac(auth_key, associated_data + ciphertext)

    @staticmethod
    async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
        enc_key, auth_key, iv = TidingsAEAD._expand(key)
        body, tag = ciphertext[:-32], ciphertext[-32:]
        if _hmac(auth_key, associated_data + body) != tag:
            raise dr.AuthenticationFailedException("tag mismatch")
        decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(body) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()


class TidingsConfiguredRatchet(dr.DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: Any) -> bytes:
        encoded: bytes = header.ratchet_pub + struct.pack(
            ">II", header.previous_sending_chain_length, header.sending_chain_length
        )
        return associated_data + encoded


CONFIG: dict[str, Any] = {
    "diffie_hellman_ratchet_class": X25519Ratchet,
    "root_chain_kdf": RootKDF,
    "message_chain_kdf": MessageKDF,
    "message_chain_constant": b"\x02\x01",  # output = next chain key (0x02) | message key (0x01)
    "dos_protection_threshold": MAX_SKIP,
    "max_num_skipped_message_keys": MAX_STORED_SKIPPED_KEYS,
    "aead": TidingsAEAD,
}


def to_lib(header: Header, ciphertext: bytes) -> Any:
    return dr.EncryptedMessage(
        header=dr.Header(
            ratchet_pub=header.dh,
            previous_sending_chain_length=header.pn,
            sending_chain_length=header.n,
        ),
        ciphertext=ciphertext,
    )


def from_lib(message: Any) -> tuple[Header, bytes]:
    h = message.header
    # Through the 40-byte wire form, as a real receiver would get it.
    encoded = h.ratchet_pub + struct.pack(
        ">II", h.previous_sending_chain_length, h.sending_chain_length
    )
    return Header.decode(encoded), message.ciphertext


class LibParty:
    """The package behind the same synchronous API as a Tidings session."""

    def __init__(self, ratchet: Any) -> None:
        self.ratchet = ratchet

    @classmethod
    def alice(cls, sk: bytes, bob_public: bytes, first: bytes) -> tuple[LibParty, Header, bytes]:
        ratchet, message = run(
            TidingsConfiguredRatchet.encrypt_initial_message(
                shared_secret=sk,
                recipient_ratchet_pub=bob_public,
                message=first,
                associated_data=AD,
                **CONFIG,
            )
        )
        return cls(ratchet), *from_lib(message)

    @classmethod
    def bob(
        cls, sk: bytes, bob_private: bytes, header: Header, ciphertext: bytes
    ) -> tuple[LibParty, bytes]:
        ratchet, plaintext = run(
            TidingsConfiguredRatchet.decrypt_initial_message(
                shared_secret=sk,
                own_ratchet_priv=bob_private,
                message=to_lib(header, ciphertext),
                associated_data=AD,
                **CONFIG,
            )
        )
        return cls(ratchet), plaintext

    def encrypt(self, plaintext: bytes, ad: bytes) -> tuple[Header, bytes]:
        return from_lib(run(self.ratchet.encrypt_message(plaintext, ad)))

    def decrypt(self, header: Header, ciphertext: bytes, ad: bytes) -> bytes:
        plaintext: bytes = run(self.ratchet.decrypt_message(to_lib(header, ciphertext), ad))
        return plaintext


Party = DoubleRatchet | LibParty


def keys(label: bytes) -> tuple[bytes, bytes]:
    return hashlib.sha256(label + b"/sk").digest(), hashlib.sha256(label + b"/bob").digest()


def start(tidings_is_alice: bool, label: bytes = b"interop") -> tuple[Party, Party]:
    """Alice's first message goes out and is read; returns (alice, bob)."""
    sk, bob_private = keys(label)
    alice: Party
    bob: Party
    if tidings_is_alice:
        alice = DoubleRatchet.init_alice(sk, x25519_public(bob_private))
        header, ct = alice.encrypt(b"first", AD)
        bob, plaintext = LibParty.bob(sk, bob_private, header, ct)
    else:
        alice, header, ct = LibParty.alice(sk, x25519_public(bob_private), b"first")
        bob = DoubleRatchet.init_bob(sk, bob_private)
        plaintext = bob.decrypt(header, ct, AD)
    assert plaintext == b"first"
    return alice, bob


DIRECTIONS = pytest.mark.parametrize(
    "tidings_is_alice", [True, False], ids=["tidings-alice", "tidings-bob"]
)


@DIRECTIONS
def test_ping_pong(tidings_is_alice: bool) -> None:
    alice, bob = start(tidings_is_alice)
    for round_ in range(10):
        for sender, receiver in ((bob, alice), (alice, bob)):
            for i in range(round_ % 3 + 1):  # 1-3 messages per turn
                body = b"round %d message %d " % (round_, i) * (round_ + 1)
                ad = AD + bytes((round_, i))
                header, ct = sender.encrypt(body, ad)
                assert receiver.decrypt(header, ct, ad) == body


@DIRECTIONS
def test_out_of_order_and_lost_messages(tidings_is_alice: bool) -> None:
    alice, bob = start(tidings_is_alice)
    rnd = random.Random(1)
    for round_ in range(8):
        for sender, receiver in ((bob, alice), (alice, bob)):
            batch = [
                (b"r%d m%d" % (round_, i), *sender.encrypt(b"r%d m%d" % (round_, i), AD))
                for i in range(5)
            ]
            rnd.shuffle(batch)
            late = batch.pop()  # delivered after the next turn's messages
            for body, header, ct in batch:
                assert receiver.decrypt(header, ct, AD) == body
            # The last message of the turn reaches the receiver only once the peer has moved on.
            reply = receiver.encrypt(b"ack", AD)
            assert sender.decrypt(*reply, AD) == b"ack"
            body, header, ct = late
            assert receiver.decrypt(header, ct, AD) == body


@DIRECTIONS
def test_skipped_initial_messages_and_previous_chain(tidings_is_alice: bool) -> None:
    """Alice's very first messages are lost and arrive after a full round trip."""
    sk, bob_private = keys(b"skipped-initial")
    alice: Party
    bob: Party
    if tidings_is_alice:
        alice = DoubleRatchet.init_alice(sk, x25519_public(bob_private))
        lost = [alice.encrypt(b"lost %d" % i, AD) for i in range(3)]
        header, ct = alice.encrypt(b"arrives", AD)
        bob, plaintext = LibParty.bob(sk, bob_private, header, ct)
    else:
        alice, first_header, first_ct = LibParty.alice(sk, x25519_public(bob_private), b"lost 0")
        lost = [(first_header, first_ct)] + [alice.encrypt(b"lost %d" % i, AD) for i in (1, 2)]
        header, ct = alice.encrypt(b"arrives", AD)
        bob = DoubleRatchet.init_bob(sk, bob_private)
        plaintext = bob.decrypt(header, ct, AD)
    assert plaintext == b"arrives"
    assert alice.decrypt(*bob.encrypt(b"reply", AD), AD) == b"reply"
    more = [alice.encrypt(b"second chain %d" % i, AD) for i in range(2)]
    assert bob.decrypt(*more[1], AD) == b"second chain 1"
    for i, (h, c) in reversed(list(enumerate(lost))):
        assert bob.decrypt(h, c, AD) == b"lost %d" % i
    assert bob.decrypt(*more[0], AD) == b"second chain 0"


def test_identical_transcripts_from_identical_randomness() -> None:
    """Same secret, same private keys: the package and Tidings emit byte-identical headers and
    ciphertexts, in both roles, through eight DH ratchet steps."""
    sk, bob_private = keys(b"transcript")
    alice_keys = [hashlib.sha256(b"alice key %d" % i).digest() for i in range(8)]
    bob_keys = [hashlib.sha256(b"bob key %d" % i).digest() for i in range(8)]

    def rng_from(values: list[bytes]) -> Any:
        it = iter(values)
        return lambda n: next(it)

    t_alice = DoubleRatchet.init_alice(sk, x25519_public(bob_private), rng=rng_from(alice_keys))
    t_bob = DoubleRatchet.init_bob(sk, bob_private, rng=rng_from(bob_keys))
    # Each package party draws from its own list; the package pops from whichever is queued.
    lib_alice_keys, lib_bob_keys = list(alice_keys), list(bob_keys)
    try:
        _PrivateKeys.queue = lib_alice_keys
        l_alice, *l_first = LibParty.alice(sk, x25519_public(bob_private), b"m0")
        t_first = t_alice.encrypt(b"m0", AD)
        assert t_first == tuple(l_first)
        assert t_bob.decrypt(*t_first, AD) == b"m0"
        _PrivateKeys.queue = lib_bob_keys
        l_bob, plaintext = LibParty.bob(sk, bob_private, *t_first)
        assert plaintext == b"m0"
        sides = [(t_alice, l_alice, lib_alice_keys), (t_bob, l_bob, lib_bob_keys)]
        for turn in range(1, 9):
            (ts, ls, ls_keys), (tr, lr, lr_keys) = sides[turn % 2], sides[(turn + 1) % 2]
            for j in range(2):
                body = b"turn %d message %d" % (turn, j)
                t_msg = ts.encrypt(body, AD)
                _PrivateKeys.queue = ls_keys
                assert ls.encrypt(body, AD) == t_msg
                assert tr.decrypt(*t_msg, AD) == body
                _PrivateKeys.queue = lr_keys
                assert lr.decrypt(*t_msg, AD) == body
        # One key at the start plus one per DH ratchet step, drawn identically by both sides.
        assert len(lib_alice_keys) == len(lib_bob_keys) == 3
    finally:
        _PrivateKeys.queue = []


@given(
    tidings_is_alice=st.booleans(),
    schedule=st.lists(
        st.tuples(st.booleans(), st.integers(1, 4), st.randoms(use_true_random=False)),
        min_size=1,
        max_size=8,
    ),
)
@settings(max_examples=25, deadline=None)
def test_random_schedules(tidings_is_alice: bool, schedule: list[tuple[bool, int, Any]]) -> None:
    """Turns of 1-4 messages, each turn delivered in a random order, in either direction."""
    alice, bob = start(tidings_is_alice, b"random")
    for alice_sends, count, rnd in schedule:
        sender, receiver = (alice, bob) if alice_sends else (bob, alice)
        batch = [(b"%d" % i, *sender.encrypt(b"%d" % i, AD)) for i in range(count)]
        rnd.shuffle(batch)
        for body, header, ct in batch:
            assert receiver.decrypt(header, ct, AD) == body
