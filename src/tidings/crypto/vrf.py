"""ECVRF-EDWARDS25519-SHA512-TAI, the verifiable random function of RFC 9381 (suite 0x03).

Key transparency hides directory labels behind a VRF: the server proves that ``beta =
VRF(secret, alpha)`` is the one value for an account's ``alpha`` without revealing the secret,
so a label says nothing about whose entry it is, and the server cannot give two clients two
different labels for one account.

What this module implements, by RFC 9381 section:
- 5.1 `prove`, 5.2 `proof_to_hash`, 5.3 `verify` (with 5.6.1 key validation always on);
- 5.4.1.1 encode-to-curve by try-and-increment (TAI), salt = the public key's encoding;
- 5.4.2.2 nonce generation (RFC 8032-style), 5.4.3 the challenge (cLen = 16 bytes);
- 5.5 suite ECVRF-EDWARDS25519-SHA512-TAI: keys as Ed25519 (RFC 8032 section 5.1.5), so
  `vrf_keygen` gives the Ed25519 public key of the same 32-byte secret.

All group operations are libsodium's, through `tidings.crypto.primitives` (no field or curve
arithmetic here). The subtle step is TAI's ``string_to_point``: a candidate hash string decodes
to a curve point that is, with probability 7/8, *not* in the prime-order subgroup, and is then
multiplied by the cofactor 8. libsodium's multiplications refuse such points, but its point
addition accepts any curve point, so decoding is a libsodium round trip and ``8 · P`` is three
libsodium doublings (`primitives.ed25519_point_decode_any`, `ed25519_point_mul_cofactor`).
Verification likewise accepts a public key or Gamma of mixed order, as the RFC does (only a
small-order key is refused, 5.6.1), multiplying such points with
`primitives.ed25519_scalarmult_any` (public scalars only).

Pure and synchronous. Proving runs in constant time up to libsodium's own guarantees except the
TAI loop, whose iteration count depends only on the public key and ``alpha`` (public inputs).
"""

from __future__ import annotations

from tidings.crypto import primitives as p
from tidings.errors import InvalidKeyError, VrfProofError

SUITE = b"\x03"
"""suite_string of ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381 section 5.5)."""

SECRET_LEN = 32
PUBLIC_LEN = 32
CHALLENGE_LEN = 16
"""cLen: the challenge is the first 16 bytes of a SHA-512 output."""
PROOF_LEN = 32 + CHALLENGE_LEN + 32
"""pi = Gamma (32) || c (16) || s (32)."""
OUTPUT_LEN = 64
"""beta is one SHA-512 output."""

_ENCODE_TO_CURVE_FRONT = b"\x01"
_CHALLENGE_FRONT = b"\x02"
_PROOF_TO_HASH_FRONT = b"\x03"
_BACK = b"\x00"
_TAI_MAX_COUNTER = 256  # ctr is one octet; RFC 9381 5.4.1.1 loops "until" a point is found


def _expand(secret: bytes) -> tuple[bytes, bytes]:
    """RFC 8032 section 5.1.5 for ``secret``: (the scalar x mod L, the hash's second half)."""
    if len(secret) != SECRET_LEN:
        raise InvalidKeyError("a VRF secret is 32 bytes")
    digest = p.sha512(secret)
    clamped = bytearray(digest[:32])
    clamped[0] &= 248  # RFC 8032 pruning: a multiple of the cofactor, bit 254 set
    clamped[31] &= 127
    clamped[31] |= 64
    return p.ed25519_scalar_from_wide(bytes(clamped) + bytes(32)), digest[32:]


def vrf_keygen(secret: bytes) -> bytes:
    """The VRF public key (32 bytes) of a 32-byte secret: its Ed25519 public key (RFC 9381 5.5).

    Raises:
        InvalidKeyError: ``secret`` is not 32 bytes.
    """
    return p.ed25519_public(secret)


def encode_to_curve(public: bytes, alpha: bytes) -> bytes:
    """H = ECVRF_encode_to_curve_try_and_increment(salt = ``public``, ``alpha``) (5.4.1.1).

    For ctr = 0, 1, ...: hash_string = SHA-512(suite || 0x01 || salt || alpha || ctr || 0x00);
    the first 32 bytes, decoded as a point of any order, times the cofactor 8, is H.

    Raises:
        VrfProofError: no counter value gave a point (probability about 2^-256).
    """
    for ctr in range(_TAI_MAX_COUNTER):
        digest = p.sha512(SUITE + _ENCODE_TO_CURVE_FRONT + public + alpha + bytes([ctr]) + _BACK)
        try:
            candidate = p.ed25519_point_decode_any(digest[:32])
        except InvalidKeyError:
            continue  # not a point encoding: try the next counter, as the RFC says
        return p.ed25519_point_mul_cofactor(candidate)
    raise VrfProofError("encode_to_curve found no point")


def _challenge(*points: bytes) -> bytes:
    """ECVRF_challenge_generation (5.4.3): the first cLen bytes of SHA-512(suite || 0x02 ||
    P1 || ... || P5 || 0x00), as a little-endian integer's 16-byte string."""
    digest = p.sha512(SUITE + _CHALLENGE_FRONT + b"".join(points) + _BACK)
    return digest[:CHALLENGE_LEN]


def prove(secret: bytes, alpha: bytes) -> bytes:
    """pi = ECVRF_prove(SK = ``secret``, ``alpha``) (5.1): 80 bytes, Gamma || c || s.

    Raises:
        InvalidKeyError: ``secret`` is not 32 bytes, or (probability about 2^-250) libsodium
            met an identity point.
        VrfProofError: encode_to_curve found no point (probability about 2^-256).
    """
    x, nonce_key = _expand(secret)
    public = vrf_keygen(secret)
    h = encode_to_curve(public, alpha)
    gamma = p.ed25519_scalarmult(x, h)
    # 5.4.2.2: k = SHA-512(second half of SHA-512(SK) || h_string) mod L
    k = p.ed25519_scalar_from_wide(p.sha512(nonce_key + h))
    u = p.ed25519_scalarmult_base(k)
    v = p.ed25519_scalarmult(k, h)
    c = _challenge(public, h, gamma, u, v)
    s = p.ed25519_scalar_add(k, p.ed25519_scalar_mul(c + bytes(32 - CHALLENGE_LEN), x))
    return gamma + c + s


def _decode_proof(pi: bytes) -> tuple[bytes, int, int]:
    """ECVRF_decode_proof (5.4.4): (Gamma, c, s); Gamma may have any order."""
    if len(pi) != PROOF_LEN:
        raise VrfProofError("a VRF proof is 80 bytes")
    try:
        gamma = p.ed25519_point_decode_any(pi[:32])
    except InvalidKeyError as exc:
        raise VrfProofError("the proof's Gamma is not a curve point") from exc
    c = int.from_bytes(pi[32 : 32 + CHALLENGE_LEN], "little")
    s = int.from_bytes(pi[32 + CHALLENGE_LEN :], "little")
    if s >= p.ED25519_GROUP_ORDER:
        raise VrfProofError("the proof's s is not reduced")
    return gamma, c, s


def _hash_gamma(gamma: bytes) -> bytes:
    """5.2 steps 4-6: beta = SHA-512(suite || 0x03 || point_to_string(8 · Gamma) || 0x00)."""
    return p.sha512(SUITE + _PROOF_TO_HASH_FRONT + p.ed25519_point_mul_cofactor(gamma) + _BACK)


def proof_to_hash(pi: bytes) -> bytes:
    """beta = ECVRF_proof_to_hash(``pi``) (5.2): 64 bytes. Does not verify ``pi``; use the
    output of `verify` for anything an adversary could have produced.

    Raises:
        VrfProofError: ``pi`` does not decode (length, Gamma not a point, s >= L).
    """
    gamma, _, _ = _decode_proof(pi)
    return _hash_gamma(gamma)


def validate_key(public: bytes) -> bytes:
    """ECVRF_validate_key (5.6.1): ``public`` if it decodes to a curve point Y with 8 · Y not
    the identity (a key of small order is refused; a mixed-order key is allowed, as the RFC
    does).

    Raises:
        VrfProofError: not a canonical curve point, or of small order.
    """
    try:
        y = p.ed25519_point_decode_any(public)
    except InvalidKeyError as exc:
        raise VrfProofError("the VRF public key is not a curve point") from exc
    if p.ed25519_point_mul_cofactor(y) == p.ED25519_IDENTITY:
        raise VrfProofError("the VRF public key has small order")
    return y


def verify(public: bytes, alpha: bytes, pi: bytes) -> bytes:
    """beta (64 bytes) if ``pi`` is a valid proof for ``alpha`` under ``public`` (5.3, with
    5.6.1 key validation).

    U = s·B - c·Y and V = s·H - c·Gamma are computed for points of any order; the proof holds
    when the challenge of (Y, H, Gamma, U, V) equals c.

    Raises:
        VrfProofError: the key is invalid or of small order, the proof does not decode, or it
            does not verify.
    """
    y = validate_key(public)
    gamma, c, s = _decode_proof(pi)
    h = encode_to_curve(public, alpha)
    try:
        u = p.ed25519_point_sub(
            p.ed25519_scalarmult_any(s, p.ED25519_BASEPOINT), p.ed25519_scalarmult_any(c, y)
        )
        v = p.ed25519_point_sub(p.ed25519_scalarmult_any(s, h), p.ed25519_scalarmult_any(c, gamma))
    except InvalidKeyError as exc:  # unreachable for decoded points; kept typed regardless
        raise VrfProofError("VRF verification failed") from exc
    expected = _challenge(y, h, gamma, u, v)
    if not p.constant_time_equal(expected, pi[32 : 32 + CHALLENGE_LEN]):
        raise VrfProofError("the VRF proof does not verify")
    return _hash_gamma(gamma)
