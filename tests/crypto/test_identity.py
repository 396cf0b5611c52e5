"""Identity keys: encoding, private serialization, signing, agreement, hostile decoder input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import primitives
from tidings.crypto.identity import (
    IDENTITY_KEY_LEN,
    IDENTITY_PRIVATE_LEN,
    IdentityKey,
    IdentityKeyPair,
)
from tidings.errors import (
    DecodeError,
    InvalidKeyError,
    InvalidSignatureError,
    TidingsError,
    TruncatedError,
    UnsupportedVersionError,
)


def scripted(*chunks: bytes) -> Callable[[int], bytes]:
    queue = list(chunks)

    def rng(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return rng


ALICE = IdentityKeyPair.generate()
BOB = IdentityKeyPair.generate()


def test_encoding_is_type_byte_then_signing_then_agreement_key() -> None:
    seed, private = bytes(range(32)), bytes(range(32, 64))
    pair = IdentityKeyPair.generate(rng=scripted(seed, private))
    encoded = pair.public.encode()
    assert len(encoded) == IDENTITY_KEY_LEN == 65
    assert encoded == b"\x01" + primitives.ed25519_public(seed) + primitives.x25519_public(private)
    assert pair.public.signing_public == encoded[1:33]
    assert pair.public.agreement_public == encoded[33:]
    assert IdentityKey.decode(encoded) == pair.public


def test_private_serialization_round_trips_and_has_documented_layout() -> None:
    data = ALICE.to_bytes()
    assert len(data) == IDENTITY_PRIVATE_LEN == 65
    assert data[0] == 0x01
    restored = IdentityKeyPair.from_bytes(data)
    assert restored.public == ALICE.public
    assert restored.to_bytes() == data
    assert primitives.ed25519_public(data[1:33]) == ALICE.public.signing_public
    assert primitives.x25519_public(data[33:]) == ALICE.public.agreement_public


def test_sign_and_verify() -> None:
    signature = ALICE.sign(b"statement")
    assert len(signature) == 64
    ALICE.public.verify(b"statement", signature)
    with pytest.raises(InvalidSignatureError):
        ALICE.public.verify(b"statement!", signature)
    with pytest.raises(InvalidSignatureError):
        BOB.public.verify(b"statement", signature)
    with pytest.raises(InvalidSignatureError):
        ALICE.public.verify(b"statement", signature[:63])


def test_dh_agrees_and_refuses_degenerate_points() -> None:
    assert ALICE.dh(BOB.public.agreement_public) == BOB.dh(ALICE.public.agreement_public)
    with pytest.raises(InvalidKeyError):
        ALICE.dh(bytes(32))  # a low-order point: all-zero shared secret
    with pytest.raises(InvalidKeyError):
        ALICE.dh(bytes(31))


def test_equality_and_hash_cover_both_halves() -> None:
    same = IdentityKey.decode(ALICE.public.encode())
    assert same == ALICE.public and hash(same) == hash(ALICE.public)
    # Same signing key, another agreement key: a different identity.
    spliced = IdentityKey(ALICE.public.signing_public, BOB.public.agreement_public)
    assert spliced != ALICE.public
    assert len({ALICE.public, same, spliced}) == 2
    assert ALICE.public != ALICE.public.encode()


def test_decode_errors_are_typed() -> None:
    encoded = ALICE.public.encode()
    with pytest.raises(TruncatedError):
        IdentityKey.decode(encoded[:-1])
    with pytest.raises(DecodeError):
        IdentityKey.decode(encoded + b"\x00")
    with pytest.raises(DecodeError):
        IdentityKey.decode(b"\x05" + encoded[1:])
    with pytest.raises(DecodeError):
        IdentityKey.decode("not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        IdentityKey(bytes(31), bytes(32))
    with pytest.raises(InvalidKeyError):
        IdentityKeyPair(bytes(32), bytes(33))


def test_private_decode_errors_are_typed() -> None:
    data = ALICE.to_bytes()
    with pytest.raises(TruncatedError):
        IdentityKeyPair.from_bytes(b"")
    with pytest.raises(TruncatedError):
        IdentityKeyPair.from_bytes(data[:-1])
    with pytest.raises(DecodeError):
        IdentityKeyPair.from_bytes(data + b"\x00")
    with pytest.raises(UnsupportedVersionError):
        IdentityKeyPair.from_bytes(b"\x02" + data[1:])


def test_repr_shows_no_key_material() -> None:
    secret = ALICE.to_bytes()
    for text in (repr(ALICE), repr(ALICE.public), str(ALICE)):
        assert secret[1:33].hex() not in text and secret[33:].hex() not in text
        assert ALICE.public.signing_public.hex()[:16] not in text
        assert ALICE.public.agreement_public.hex()[:16] not in text


def test_injected_rng_is_deterministic_and_checked() -> None:
    a = IdentityKeyPair.generate(rng=scripted(b"\x07" * 32, b"\x09" * 32))
    b = IdentityKeyPair.generate(rng=scripted(b"\x07" * 32, b"\x09" * 32))
    assert a.to_bytes() == b.to_bytes()
    with pytest.raises(ValueError):
        IdentityKeyPair.generate(rng=lambda n: b"\x00")


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, extensions and byte flips of ``data``, plus arbitrary bytes."""
    flips = st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)).map(
        lambda t: data[: t[0]] + bytes((data[t[0]] ^ t[1],)) + data[t[0] + 1 :]
    )
    cuts = st.integers(0, len(data)).map(lambda n: data[:n])
    tails = st.binary(min_size=1, max_size=8).map(lambda extra: data + extra)
    return st.one_of(st.binary(max_size=200), flips, cuts, tails)


@settings(max_examples=300, deadline=None)
@given(_mutations(ALICE.public.encode()))
def test_identity_decoder_raises_only_typed_errors(data: bytes) -> None:
    try:
        key = IdentityKey.decode(data)
    except TidingsError:
        return
    assert key.encode() == data


@settings(max_examples=300, deadline=None)
@given(_mutations(ALICE.to_bytes()))
def test_private_decoder_raises_only_typed_errors(data: bytes) -> None:
    try:
        pair = IdentityKeyPair.from_bytes(data)
    except TidingsError:
        return
    assert pair.to_bytes() == data
