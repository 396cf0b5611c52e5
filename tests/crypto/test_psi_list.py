"""The blinded list (`tidings.crypto.psi.BlindedList`): the OKVS decodes every listed key to
its target, the encoding round-trips and commits to everything, malformed lists are refused
with typed errors, and the group maps agree with X25519."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import primitives, psi
from tidings.errors import (
    DecodeError,
    DetectionListError,
    InvalidKeyError,
    OversizedError,
    TidingsError,
    TruncatedError,
    UnsupportedVersionError,
)
from tidings.wire.binary import u32

PARAMS = psi.PsiParameters(tables=8, threshold=3, tag_dimension=4, synthetic_open_counts=((2, 1),))


def _rng(seed: int) -> psi.RandomSource:
    r = random.Random(seed)
    return r.randbytes


@pytest.fixture(scope="module")
def listed() -> tuple[bytes, list[bytes], psi.BlindedList]:
    secret = psi.generate_list_secret(_rng(1))
    keys = [k for i in range(40) for k in psi.list_keys(os.urandom(32), PARAMS)]
    return secret, keys, psi.BlindedList.build(keys, secret, PARAMS, 7, _rng(2))


def test_every_listed_key_decodes_to_its_target(
    listed: tuple[bytes, list[bytes], psi.BlindedList],
) -> None:
    secret, keys, blinded = listed
    for key in keys:
        assert blinded.lookup(key) == primitives.ed25519_scalarmult(secret, psi.hash_to_group(key))
    other = psi.list_keys(os.urandom(32), PARAMS)[0]
    assert blinded.lookup(other) != primitives.ed25519_scalarmult(secret, psi.hash_to_group(other))
    assert blinded.slot_count == psi.okvs_slot_count(len(set(keys)))
    assert blinded.public == primitives.ed25519_scalarmult_base(secret)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 17, 200])
def test_small_and_empty_lists_peel(n: int) -> None:
    secret = psi.generate_list_secret(_rng(n))
    keys = [os.urandom(20) for _ in range(n)]
    blinded = psi.BlindedList.build(keys, secret, PARAMS, 1, _rng(n + 100))
    for key in keys:
        assert blinded.lookup(key) == primitives.ed25519_scalarmult(secret, psi.hash_to_group(key))


def test_montgomery_and_edwards_multiplication_agree() -> None:
    """u(a·H) == X25519(a, u(H)): what lets the opener work on u-coordinates alone."""
    for i in range(20):
        secret = psi.generate_list_secret(_rng(50 + i))
        point = psi.hash_to_group(b"key %d" % i)
        assert primitives.ed25519_point_to_x25519(
            primitives.ed25519_scalarmult(secret, point)
        ) == primitives.x25519(secret, primitives.ed25519_point_to_x25519(point))


def test_encoding_round_trips_and_the_digest_commits_to_everything(
    listed: tuple[bytes, list[bytes], psi.BlindedList],
) -> None:
    _, _, blinded = listed
    data = blinded.encode()
    again = psi.BlindedList.decode(data, check_points=True)
    assert again.encode() == data and again.digest() == blinded.digest()
    assert again.params == PARAMS and again.version == 7
    for i in (0, 1, 60, len(data) - 1):
        changed = bytearray(data)
        changed[i] ^= 1
        try:
            other = psi.BlindedList.decode(bytes(changed))
        except TidingsError:
            continue
        assert other.digest() != blinded.digest()


def test_malformed_lists_are_refused_with_typed_errors(
    listed: tuple[bytes, list[bytes], psi.BlindedList],
) -> None:
    _, _, blinded = listed
    data = blinded.encode()
    with pytest.raises(UnsupportedVersionError):
        psi.BlindedList.decode(b"\x02" + data[1:])
    with pytest.raises(TruncatedError):
        psi.BlindedList.decode(data[:-1])
    with pytest.raises(DecodeError):
        psi.BlindedList.decode(data + b"\x00")
    count_at = len(data) - blinded.slot_count * 32 - 4
    with pytest.raises(OversizedError):
        psi.BlindedList.decode(data[:count_at] + u32(psi.MAX_LIST_SLOTS + 3))
    with pytest.raises(DetectionListError):  # not a multiple of 3
        psi.BlindedList.decode(data[:count_at] + u32(4) + bytes(4 * 32))
    bad_slot = data[: count_at + 4] + bytes(32) + data[count_at + 4 + 32 :]
    psi.BlindedList.decode(bad_slot)  # structure only
    with pytest.raises(DetectionListError):
        psi.BlindedList.decode(bad_slot, check_points=True)
    public_at = count_at - 32
    with pytest.raises(DetectionListError):
        psi.BlindedList.decode(data[:public_at] + bytes(32) + data[count_at:])
    with pytest.raises(DecodeError):
        psi.BlindedList.decode("not bytes")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_typed_errors(data: bytes) -> None:
    try:
        psi.BlindedList.decode(data, check_points=True)
    except TidingsError:
        pass


def test_secret_checks() -> None:
    secret = psi.generate_list_secret(_rng(9))
    assert psi.check_list_secret(secret) == secret
    for bad in (
        secret[:31],
        bytes([secret[0] | 1]) + secret[1:],
        secret[:31] + b"\x80",
        secret[:31] + b"\x00",
    ):
        with pytest.raises(InvalidKeyError):
            psi.check_list_secret(bad)
    with pytest.raises(InvalidKeyError):
        psi.BlindedList.build([], bad, PARAMS, 1)
    with pytest.raises(DetectionListError):
        psi.BlindedList.build([], secret, PARAMS, 1 << 32)
