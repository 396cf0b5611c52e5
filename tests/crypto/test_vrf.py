"""ECVRF-EDWARDS25519-SHA512-TAI (`tidings.crypto.vrf`): the RFC 9381 Appendix B.3 vectors,
round trips, refusals (tampered proofs, wrong key or input, small-order and malformed keys), the
cofactor handling RFC 9381 asks of a verifier (mixed-order keys and Gammas), and the any-order
point helpers in `tidings.crypto.primitives` it is built on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto import primitives as p
from tidings.crypto import vrf
from tidings.errors import CryptoError, InvalidKeyError, VrfProofError

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "vrf_rfc9381.json").read_text())[
    "vectors"
]
L = p.ED25519_GROUP_ORDER
FIELD_P = 2**255 - 19
# A point of order 8 (libsodium's small-order blocklist); its order is checked below.
ORDER_8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")


def _torsion() -> list[bytes]:
    """The eight points of small order: multiples 0..7 of a point of order 8."""
    return [p.ed25519_scalarmult_any(i, ORDER_8) for i in range(8)]


def _le(n: int, size: int = 32) -> bytes:
    return n.to_bytes(size, "little")


def test_error_is_typed() -> None:
    assert issubclass(VrfProofError, CryptoError)
    assert VrfProofError.code == "invalid_vrf_proof"


@pytest.mark.parametrize("case", VECTORS, ids=[v["name"] for v in VECTORS])
def test_rfc9381_b3_vectors(case: dict[str, str]) -> None:
    sk, pk = bytes.fromhex(case["sk"]), bytes.fromhex(case["pk"])
    alpha, pi, beta = (bytes.fromhex(case[k]) for k in ("alpha", "pi", "beta"))
    assert vrf.vrf_keygen(sk) == pk
    h = vrf.encode_to_curve(pk, alpha)
    assert h.hex() == case["h"]
    k = bytes.fromhex(case["k"])
    assert p.ed25519_scalarmult_base(k).hex() == case["u"]
    assert p.ed25519_scalarmult(k, h).hex() == case["v"]
    assert vrf.prove(sk, alpha) == pi
    assert len(pi) == vrf.PROOF_LEN == 80
    assert vrf.verify(pk, alpha, pi) == beta
    assert vrf.proof_to_hash(pi) == beta
    assert len(beta) == vrf.OUTPUT_LEN == 64


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), alpha=st.binary(max_size=200))
def test_round_trip(secret: bytes, alpha: bytes) -> None:
    public = vrf.vrf_keygen(secret)
    pi = vrf.prove(secret, alpha)
    assert vrf.prove(secret, alpha) == pi  # deterministic
    beta = vrf.verify(public, alpha, pi)
    assert beta == vrf.proof_to_hash(pi)
    assert p.ed25519_point_is_valid(pi[:32])  # an honest Gamma is of prime order


@settings(max_examples=20, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    alpha=st.binary(max_size=64),
    other=st.binary(max_size=64),
)
def test_wrong_alpha_is_refused(secret: bytes, alpha: bytes, other: bytes) -> None:
    pi = vrf.prove(secret, alpha)
    if other != alpha:
        with pytest.raises(VrfProofError):
            vrf.verify(vrf.vrf_keygen(secret), other, pi)


def test_wrong_key_is_refused() -> None:
    pi = vrf.prove(b"\x01" * 32, b"alice")
    with pytest.raises(VrfProofError):
        vrf.verify(vrf.vrf_keygen(b"\x02" * 32), b"alice", pi)


def test_every_single_bit_flip_is_refused() -> None:
    secret, alpha = os.urandom(32), b"label"
    public, pi = vrf.vrf_keygen(secret), vrf.prove(secret, b"label")
    for bit in range(8 * len(pi)):
        tampered = bytearray(pi)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VrfProofError):
            vrf.verify(public, alpha, bytes(tampered))
    for bit in range(8 * len(public)):
        key = bytearray(public)
        key[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VrfProofError):
            vrf.verify(bytes(key), alpha, pi)


@pytest.mark.parametrize("size", [0, 32, 79, 81, 160])
def test_wrong_lengths_are_refused(size: int) -> None:
    public = vrf.vrf_keygen(bytes(32))
    with pytest.raises(VrfProofError):
        vrf.verify(public, b"", bytes(size))
    with pytest.raises(VrfProofError):
        vrf.proof_to_hash(bytes(size))
    if size != vrf.PUBLIC_LEN:
        key = (public * 5)[:size]
        with pytest.raises(VrfProofError):
            vrf.verify(key, b"", vrf.prove(bytes(32), b""))


def test_unreduced_s_is_refused() -> None:
    secret, alpha = b"\x07" * 32, b"x"
    pi = vrf.prove(secret, alpha)
    s = int.from_bytes(pi[48:], "little")
    assert s + L < 2**256
    bad = pi[:48] + _le(s + L)
    with pytest.raises(VrfProofError):
        vrf.verify(vrf.vrf_keygen(secret), alpha, bad)
    with pytest.raises(VrfProofError):
        vrf.proof_to_hash(bad)


def test_the_torsion_points_are_the_eight_small_order_points() -> None:
    torsion = _torsion()
    assert len(set(torsion)) == 8
    assert torsion[0] == p.ED25519_IDENTITY
    assert p.ed25519_point_mul_cofactor(ORDER_8) == p.ED25519_IDENTITY
    assert p.ed25519_scalarmult_any(4, ORDER_8) != p.ED25519_IDENTITY  # order exactly 8
    assert _le(FIELD_P - 1) in torsion  # (0, -1), order 2
    for point in torsion:
        assert not p.ed25519_point_is_valid(point)  # libsodium's own check refuses them


@pytest.mark.parametrize("index", range(8))
def test_small_order_public_keys_are_refused(index: int) -> None:
    key = _torsion()[index]
    with pytest.raises(VrfProofError, match="small order"):
        vrf.validate_key(key)
    # a forged proof for such a key: Gamma of small order too, any c and s
    for pi in (key + bytes(48), key + b"\x01" * 16 + bytes(32)):
        with pytest.raises(VrfProofError):
            vrf.verify(key, b"anything", pi)


def test_non_canonical_and_off_curve_encodings_are_refused() -> None:
    non_canonical = [
        _le(FIELD_P + 1),  # y = 1 + p: the identity, encoded out of range
        _le(FIELD_P),  # y = p, i.e. 0
        _le(2**255 - 1),
        _le(1 | (1 << 255)),  # x = 0 with the sign bit set ("-0", RFC 8032 5.1.3 step 4)
    ]
    for encoding in non_canonical:
        with pytest.raises(InvalidKeyError):
            p.ed25519_point_decode_any(encoding)
        with pytest.raises(VrfProofError):
            vrf.validate_key(encoding)
    off_curve = []
    for y in range(2, 40):
        try:
            p.ed25519_point_decode_any(_le(y))
        except InvalidKeyError:
            off_curve.append(_le(y))
    assert off_curve  # about half of all y have no x
    public = vrf.vrf_keygen(bytes(32))
    pi = vrf.prove(bytes(32), b"")
    for encoding in off_curve:
        with pytest.raises(VrfProofError):
            vrf.verify(encoding, b"", pi)
        with pytest.raises(VrfProofError):
            vrf.verify(public, b"", encoding + pi[32:])


def _forge_mixed(secret: bytes, alpha: bytes, key_torsion: bytes, gamma_torsion: bytes) -> bytes:
    """A proof the RFC 9381 verifier accepts whose public key and Gamma carry an order-2
    component: with c even, c·T = 0, so U and V come out as for the honest key. Tries nonces
    until c is even (half of them)."""
    x_bytes = bytearray(p.sha512(secret)[:32])
    x_bytes[0] &= 248
    x_bytes[31] = (x_bytes[31] & 127) | 64
    x = p.ed25519_scalar_from_wide(bytes(x_bytes) + bytes(32))
    public = p.ed25519_point_add(vrf.vrf_keygen(secret), key_torsion)
    h = vrf.encode_to_curve(public, alpha)
    gamma = p.ed25519_point_add(p.ed25519_scalarmult(x, h), gamma_torsion)
    while True:
        k = p.ed25519_scalar_from_wide(os.urandom(64))
        u, v = p.ed25519_scalarmult_base(k), p.ed25519_scalarmult(k, h)
        c = p.sha512(b"\x03\x02" + public + h + gamma + u + v + b"\x00")[:16]
        if c[0] % 2 == 0:
            s = p.ed25519_scalar_add(k, p.ed25519_scalar_mul(c + bytes(16), x))
            return gamma + c + s


def test_mixed_order_key_and_gamma_are_handled_as_the_rfc_says() -> None:
    """RFC 9381 5.6.1 refuses only small-order keys, and 5.3 decodes Gamma without a subgroup
    check; beta hashes 8·Gamma, so a torsion component does not change the output."""
    secret, alpha = b"\x05" * 32, b"mixed"
    order_2 = _le(FIELD_P - 1)
    honest_beta = vrf.verify(vrf.vrf_keygen(secret), alpha, vrf.prove(secret, alpha))
    pi = _forge_mixed(secret, alpha, p.ED25519_IDENTITY, order_2)
    assert not p.ed25519_point_is_valid(pi[:32])  # libsodium's multiplications refuse it
    assert vrf.verify(vrf.vrf_keygen(secret), alpha, pi) == honest_beta
    mixed_key = p.ed25519_point_add(vrf.vrf_keygen(secret), order_2)
    assert vrf.validate_key(mixed_key) == mixed_key
    pi = _forge_mixed(secret, alpha, order_2, p.ED25519_IDENTITY)
    beta = vrf.verify(mixed_key, alpha, pi)
    assert beta == vrf.proof_to_hash(pi)


@settings(max_examples=30, deadline=None)
@given(
    scalar=st.integers(min_value=0, max_value=2**256 - 1),
    seed=st.binary(min_size=64, max_size=64).filter(any),  # a zero scalar has no base point
    torsion=st.integers(min_value=0, max_value=7),
)
def test_scalarmult_any_agrees_with_libsodium(scalar: int, seed: bytes, torsion: int) -> None:
    point = p.ed25519_scalarmult_base(p.ed25519_scalar_from_wide(seed))
    reduced = _le(scalar % L)
    prime = p.ed25519_scalarmult_any(scalar, point)
    if scalar % L:
        assert prime == p.ed25519_scalarmult(reduced, point)
    else:
        assert prime == p.ED25519_IDENTITY
    # with a torsion part T: k·(P + T) = k·P + (k mod 8)·T
    t = _torsion()[torsion]
    mixed = p.ed25519_point_add(point, t)
    assert p.ed25519_scalarmult_any(scalar, mixed) == p.ed25519_point_add(
        prime, p.ed25519_scalarmult_any(scalar % 8, t)
    )
    assert p.ed25519_point_mul_cofactor(mixed) == p.ed25519_scalarmult_any(8, point)


def test_scalarmult_any_refuses_bad_input() -> None:
    with pytest.raises(InvalidKeyError):
        p.ed25519_scalarmult_any(-1, p.ED25519_BASEPOINT)
    with pytest.raises(InvalidKeyError):
        p.ed25519_scalarmult_any(2**256, p.ED25519_BASEPOINT)
    with pytest.raises(InvalidKeyError):
        p.ed25519_point_mul_cofactor(bytes(31))


def test_secret_length_is_checked() -> None:
    with pytest.raises(InvalidKeyError):
        vrf.prove(bytes(31), b"")
    with pytest.raises(InvalidKeyError):
        vrf.vrf_keygen(bytes(33))
