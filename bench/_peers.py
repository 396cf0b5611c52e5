"""The peers' side of `bench/ratchet.py`: vodozemac (Olm, Megolm) and `doubleratchet` (PyPI).

Every function here follows the same contract as the Tidings side in `bench/ratchet.py`::

    run(n: int) -> float

It builds its sessions *untimed*, then times exactly ``n`` operations with `time.perf_counter` and
returns the elapsed seconds. An operation is "encrypt one message to wire bytes, parse the bytes
on the other side, decrypt them and check the plaintext" for the message scenarios, and "from
handshake start to the first decrypted message" for the setup scenario.

Both peers are optional: `VODOZEMAC` / `DOUBLERATCHET` hold the reason they could not be imported
(or None), and the caller skips their cases with that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

RunFn = Callable[[int], float]

AD_LEN = 130
"""Associated data length given to every ratchet that takes AD: Encode(IK_A) || Encode(IK_B),
two 65-byte Tidings identity encodings, as a real session would bind."""

# --- optional imports ---------------------------------------------------------------------------

vodozemac: ModuleType | None
VODOZEMAC_MISSING: str | None
try:
    import vodozemac as _vodozemac

    vodozemac = _vodozemac
    VODOZEMAC_MISSING = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    vodozemac = None
    VODOZEMAC_MISSING = (
        f"vodozemac is not importable ({exc}); install it with "
        "`.venv/bin/pip install -e '.[bench]'` to compare against Olm/Megolm"
    )

DOUBLERATCHET_MISSING: str | None
try:
    import doubleratchet as _dr
    from doubleratchet.recommended import HashFunction as _HashFunction
    from doubleratchet.recommended import aead_aes_hmac as _aead_aes_hmac
    from doubleratchet.recommended import (
        diffie_hellman_ratchet_curve25519 as _dh_curve25519,
    )
    from doubleratchet.recommended import kdf_hkdf as _kdf_hkdf
    from doubleratchet.recommended import kdf_separate_hmacs as _kdf_separate_hmacs

    DOUBLERATCHET_MISSING = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    DOUBLERATCHET_MISSING = (
        f"doubleratchet is not importable ({exc}); install it with "
        "`.venv/bin/pip install -e '.[bench]'` to compare against the pure-Python ratchet"
    )


def versions() -> dict[str, str]:
    """Installed versions of the peer libraries (absent ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in ("vodozemac", "DoubleRatchet"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


# --- vodozemac: Olm -----------------------------------------------------------------------------


def _vz() -> Any:
    if vodozemac is None:
        raise RuntimeError(VODOZEMAC_MISSING)
    return vodozemac


def _olm_pair() -> tuple[Any, Any]:
    """An established Olm session pair (Alice, Bob), past the pre-key stage in both directions.

    Warm-up (untimed): A->B (pre-key message), B->A, A->B, so the timed stream that follows sends
    normal messages on a chain both sides already hold -- the same warm-up the Tidings and
    doubleratchet pairs get.
    """
    vz = _vz()
    alice_account, bob_account = vz.Account(), vz.Account()
    bob_account.generate_one_time_keys(1)
    otk = next(iter(bob_account.one_time_keys.values()))
    bob_account.mark_keys_as_published()
    alice = alice_account.create_outbound_session(bob_account.curve25519_key, otk)
    first = alice.encrypt(b"hello")
    bob, plaintext = bob_account.create_inbound_session(
        alice_account.curve25519_key, first.to_pre_key()
    )
    assert plaintext == b"hello"
    assert alice.decrypt(bob.encrypt(b"reply")) == b"reply"
    assert bob.decrypt(alice.encrypt(b"again")) == b"again"
    return alice, bob


def vodozemac_one_way(plaintexts: Sequence[bytes]) -> RunFn:
    """Alice sends ``n`` messages; Bob parses and decrypts each one as it arrives."""

    def run(n: int) -> float:
        vz = _vz()
        alice, bob = _olm_pair()
        from_parts = vz.AnyOlmMessage.from_parts
        encrypt, decrypt = alice.encrypt, bob.decrypt
        k = len(plaintexts)
        start = time.perf_counter()
        for i in range(n):
            plaintext = plaintexts[i % k]
            message_type, wire = encrypt(plaintext).to_parts()
            if decrypt(from_parts(message_type, wire)) != plaintext:
                raise AssertionError("vodozemac one-way: wrong plaintext")
        return time.perf_counter() - start

    return run


def vodozemac_ping_pong(plaintexts: Sequence[bytes]) -> RunFn:
    """Strict alternation A->B, B->A, ...: every message starts a new ratchet chain."""

    def run(n: int) -> float:
        vz = _vz()
        alice, bob = _olm_pair()
        from_parts = vz.AnyOlmMessage.from_parts
        # After the warm-up Alice spoke last, so Bob opens the alternation.
        sides = ((bob.encrypt, alice.decrypt), (alice.encrypt, bob.decrypt))
        k = len(plaintexts)
        start = time.perf_counter()
        for i in range(n):
            encrypt, decrypt = sides[i & 1]
            plaintext = plaintexts[i % k]
            message_type, wire = encrypt(plaintext).to_parts()
            if decrypt(from_parts(message_type, wire)) != plaintext:
                raise AssertionError("vodozemac ping-pong: wrong plaintext")
        return time.perf_counter() - start

    return run


_OTK_BATCH = 50


def vodozemac_setup(plaintext: bytes) -> RunFn:
    """Olm session setup, from handshake start to the first decrypted message.

    Timed per setup: Alice ``create_outbound_session`` (3 X25519 agreements, HKDF) -> encrypt the
    first message -> pre-key message to wire bytes; Bob parses it and ``create_inbound_session``
    (3 X25519 agreements, HKDF, decrypt). Untimed: the accounts and Bob's published one-time
    keys, which in Olm as in Tidings exist before any handshake starts (generated in batches of
    50, the account's limit). Olm has no post-quantum KEM and no prekey signature inside the
    protocol (Matrix signs one-time keys in JSON, outside vodozemac), so it does strictly less
    work than PQXDH.
    """

    def run(n: int) -> float:
        vz = _vz()
        alice_account, bob_account = vz.Account(), vz.Account()
        alice_identity, bob_identity = alice_account.curve25519_key, bob_account.curve25519_key
        pre_key = vz.AnyOlmMessage.pre_key
        elapsed = 0.0
        done = 0
        while done < n:
            batch = min(_OTK_BATCH, n - done)
            bob_account.generate_one_time_keys(batch)
            otks = list(bob_account.one_time_keys.values())
            bob_account.mark_keys_as_published()
            start = time.perf_counter()
            for otk in otks:
                alice = alice_account.create_outbound_session(bob_identity, otk)
                _, wire = alice.encrypt(plaintext).to_parts()
                message = pre_key(wire).to_pre_key()
                _bob, first = bob_account.create_inbound_session(alice_identity, message)
                if first != plaintext:
                    raise AssertionError("vodozemac setup: wrong plaintext")
            elapsed += time.perf_counter() - start
            done += batch
        return elapsed

    return run


def vodozemac_group(plaintexts: Sequence[bytes]) -> RunFn:
    """Megolm: the sender encrypts (AES-256-CBC, HMAC, Ed25519 signature) and one member parses
    and decrypts (signature verification, MAC, AES) each message."""

    def run(n: int) -> float:
        vz = _vz()
        outbound = vz.GroupSession()
        inbound = vz.InboundGroupSession(outbound.session_key)
        from_bytes = vz.MegolmMessage.from_bytes
        encrypt, decrypt = outbound.encrypt, inbound.decrypt
        k = len(plaintexts)
        start = time.perf_counter()
        for i in range(n):
            plaintext = plaintexts[i % k]
            if decrypt(from_bytes(encrypt(plaintext).to_bytes())).plaintext != plaintext:
                raise AssertionError("vodozemac group: wrong plaintext")
        return time.perf_counter() - start

    return run


# --- doubleratchet (PyPI): configured like Signal and like Tidings DR v1 ------------------------

DR_ROOT_INFO = b"Tidings_DR_Root_v1"
DR_MESSAGE_KEYS_INFO = b"Tidings_DR_MessageKeys_v1"
DR_MESSAGE_CHAIN_CONSTANT = b"\x02\x01"
"""doubleratchet keeps the first 32 bytes of a chain step as the next chain key, so 0x02 then 0x01
gives next chain key = HMAC(ck, 0x02) and message key = HMAC(ck, 0x01), as PROTOCOL.md KDF_CK."""

DR_MAX_SKIP = 1000
DR_MAX_STORED = 2000

_HEADER = struct.Struct(">32sII")


def _encode_header(header: Any) -> bytes:
    """PROTOCOL.md header encoding: dh (32) || pn (4, big-endian) || n (4, big-endian)."""
    return _HEADER.pack(
        header.ratchet_pub, header.previous_sending_chain_length, header.sending_chain_length
    )


if DOUBLERATCHET_MISSING is None:

    class DrDiffieHellmanRatchet(_dh_curve25519.DiffieHellmanRatchet):
        """X25519 through `cryptography`, the package's recommended implementation."""

    class DrAEAD(_aead_aes_hmac.AEAD):
        """HKDF-SHA256 (80 bytes) -> AES-256-CBC + HMAC-SHA256, info as Tidings DR v1."""

        @staticmethod
        def _get_hash_function() -> _HashFunction:
            return _HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return DR_MESSAGE_KEYS_INFO

    class DrRootChainKDF(_kdf_hkdf.KDF):
        """KDF_RK: HKDF-SHA256, salt = root key, IKM = DH output."""

        @staticmethod
        def _get_hash_function() -> _HashFunction:
            return _HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return DR_ROOT_INFO

    class DrMessageChainKDF(_kdf_separate_hmacs.KDF):
        """KDF_CK: one HMAC-SHA256 per constant byte."""

        @staticmethod
        def _get_hash_function() -> _HashFunction:
            return _HashFunction.SHA_256

    class DrDoubleRatchet(_dr.DoubleRatchet):
        """AD || 40-byte header, the Tidings CONCAT."""

        @staticmethod
        def _build_associated_data(associated_data: bytes, header: Any) -> bytes:
            return associated_data + _encode_header(header)

    _DR_CONFIG: dict[str, Any] = {
        "diffie_hellman_ratchet_class": DrDiffieHellmanRatchet,
        "root_chain_kdf": DrRootChainKDF,
        "message_chain_kdf": DrMessageChainKDF,
        "message_chain_constant": DR_MESSAGE_CHAIN_CONSTANT,
        "dos_protection_threshold": DR_MAX_SKIP,
        "max_num_skipped_message_keys": DR_MAX_STORED,
        "aead": DrAEAD,
    }


class _DrWire:
    """Bytes on the wire for doubleratchet, which has no wire format of its own: the 40-byte
    PROTOCOL.md header followed by the ciphertext. Costs about a microsecond a message."""

    @staticmethod
    def encode(message: Any) -> bytes:
        ciphertext: bytes = message.ciphertext
        return _encode_header(message.header) + ciphertext

    @staticmethod
    def decode(wire: bytes) -> Any:
        ratchet_pub, pn, n = _HEADER.unpack_from(wire)
        return _dr.EncryptedMessage(
            header=_dr.Header(ratchet_pub, pn, n), ciphertext=wire[_HEADER.size :]
        )


async def _dr_pair(shared_secret: bytes, ad: bytes) -> tuple[Any, Any]:
    """An established doubleratchet pair with the same warm-up as the other pairs."""
    if DOUBLERATCHET_MISSING is not None:
        raise RuntimeError(DOUBLERATCHET_MISSING)
    bob_priv = DrDiffieHellmanRatchet._generate_priv()
    bob_pub = DrDiffieHellmanRatchet._derive_pub(bob_priv)
    alice, first = await DrDoubleRatchet.encrypt_initial_message(
        shared_secret=shared_secret,
        recipient_ratchet_pub=bob_pub,
        message=b"hello",
        associated_data=ad,
        **_DR_CONFIG,
    )
    bob, plaintext = await DrDoubleRatchet.decrypt_initial_message(
        shared_secret=shared_secret,
        own_ratchet_priv=bob_priv,
        message=first,
        associated_data=ad,
        **_DR_CONFIG,
    )
    assert plaintext == b"hello"
    assert await alice.decrypt_message(await bob.encrypt_message(b"reply", ad), ad) == b"reply"
    assert await bob.decrypt_message(await alice.encrypt_message(b"again", ad), ad) == b"again"
    return alice, bob


def _run_async(coro_fn: Callable[[], Any]) -> float:
    """Run a timing coroutine on a fresh event loop; the loop's own start-up is not timed."""
    loop = asyncio.new_event_loop()
    try:
        return float(loop.run_until_complete(coro_fn()))
    finally:
        loop.close()


def doubleratchet_one_way(plaintexts: Sequence[bytes], shared_secret: bytes, ad: bytes) -> RunFn:
    """Same stream as `vodozemac_one_way`, through doubleratchet's asyncio API."""

    def run(n: int) -> float:
        async def timed() -> float:
            alice, bob = await _dr_pair(shared_secret, ad)
            encode, decode = _DrWire.encode, _DrWire.decode
            encrypt, decrypt = alice.encrypt_message, bob.decrypt_message
            k = len(plaintexts)
            start = time.perf_counter()
            for i in range(n):
                plaintext = plaintexts[i % k]
                wire = encode(await encrypt(plaintext, ad))
                if await decrypt(decode(wire), ad) != plaintext:
                    raise AssertionError("doubleratchet one-way: wrong plaintext")
            return time.perf_counter() - start

        return _run_async(timed)

    return run


def doubleratchet_ping_pong(plaintexts: Sequence[bytes], shared_secret: bytes, ad: bytes) -> RunFn:
    """Same alternation as `vodozemac_ping_pong`, through doubleratchet's asyncio API."""

    def run(n: int) -> float:
        async def timed() -> float:
            alice, bob = await _dr_pair(shared_secret, ad)
            encode, decode = _DrWire.encode, _DrWire.decode
            sides = (
                (bob.encrypt_message, alice.decrypt_message),
                (alice.encrypt_message, bob.decrypt_message),
            )
            k = len(plaintexts)
            start = time.perf_counter()
            for i in range(n):
                encrypt, decrypt = sides[i & 1]
                plaintext = plaintexts[i % k]
                wire = encode(await encrypt(plaintext, ad))
                if await decrypt(decode(wire), ad) != plaintext:
                    raise AssertionError("doubleratchet ping-pong: wrong plaintext")
            return time.perf_counter() - start

        return _run_async(timed)

    return run


def doubleratchet_interop_check(
    tidings_alice: Any, bob_private: bytes, shared_secret: bytes, ad: bytes, rounds: int = 4
) -> int:
    """Prove the configuration above *is* Tidings DR v1 (so both ratchets do the same
    cryptographic work): a Tidings Alice (``tidings_alice``, made with ``init_alice`` towards
    ``bob_private``'s public key) talks to a doubleratchet Bob over the 40-byte-header wire form,
    both ways, with DH ratchet steps. Returns the number of messages exchanged; raises on any
    mismatch. Untimed; called once before measuring."""
    from tidings.crypto.ratchet import Header

    async def talk() -> int:
        header, ciphertext = tidings_alice.encrypt(b"interop 0", ad)
        bob, plaintext = await DrDoubleRatchet.decrypt_initial_message(
            shared_secret=shared_secret,
            own_ratchet_priv=bob_private,
            message=_DrWire.decode(header.encode() + ciphertext),
            associated_data=ad,
            **_DR_CONFIG,
        )
        if plaintext != b"interop 0":
            raise AssertionError("doubleratchet could not read Tidings' first message")
        count = 1
        for i in range(rounds):
            for j in range(2):
                text = f"bob {i}.{j}".encode()
                wire = _DrWire.encode(await bob.encrypt_message(text, ad))
                got = tidings_alice.decrypt(Header.decode(wire[:40]), wire[40:], ad)
                if got != text:
                    raise AssertionError("Tidings could not read doubleratchet's message")
                text = f"alice {i}.{j}".encode()
                header, ciphertext = tidings_alice.encrypt(text, ad)
                if (
                    await bob.decrypt_message(_DrWire.decode(header.encode() + ciphertext), ad)
                    != text
                ):
                    raise AssertionError("doubleratchet could not read Tidings' message")
                count += 2
        return count

    if DOUBLERATCHET_MISSING is not None:
        raise RuntimeError(DOUBLERATCHET_MISSING)
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(talk())
    finally:
        loop.close()
