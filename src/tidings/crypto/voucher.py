"""Private threshold matching, part 2: vouchers (issue 10; docs/detection.md, "Vouchers").

One voucher per image sent. The device (`VoucherBuilder`) cannot tell whether its image matched;
the server (`VoucherOpener`) opens the outer layer of a voucher only when one of its query keys
is on the list (or the voucher is synthetic), and the inner layer of real matching vouchers only
once it holds at least t of them from one window (`recover_inner`, over
`tidings.crypto.threshold`).

**Elements.** For each of the image's 4K query keys k_j (`psi.query_keys`): L_j = list lookup
of k_j, a fresh X25519 scalar β_j, ``u(Q_j) = X25519(β_j, u(H(k_j)))`` and
``u(S_j) = X25519(β_j, u(L_j))``, i.e. Q_j = β_j·H(k_j) and S_j = β_j·L_j computed on the
Montgomery form (the same multiplications as on edwards25519, about twice as fast through
libsodium's X25519; `u` is RFC 7748's birational map,
`primitives.ed25519_point_to_x25519_unchecked`: H(k) is of prime order by construction, and a
small-order part of a list point L is cleared by the clamped β, so the subgroup check libsodium's
own conversion runs — a scalar multiplication, 40 % of an element's cost — buys nothing here).
The element is
``(u(Q_j), wrap_j = kv XOR KDF(u(S_j) || u(Q_j))[:16])`` with one random 16-byte ``kv`` per
voucher. The server computes ``X25519(a, u(Q_j)) = u(a·β_j·H(k_j))``, which equals u(S_j)
exactly when L_j = a·H(k_j), i.e. when k_j is on the list; otherwise u(S_j) is, under DDH,
unrelated to anything the server can compute. A point the list hands the device that is not
valid (a corrupt or malicious list) makes that element a non-opening one rather than an error,
so the device's behaviour never depends on which slots its image touches.

**Layers.** ``outer_ct = AES-256-GCM(KDF(kv), share_bytes || inner_ct)`` with the voucher's
header (format, list version, list digest) as associated data; the nonce is fixed because each
kv encrypts exactly one message. ``inner_ct = nonce || AES-256-GCM(HKDF(window key, nonce),
inner payload)``, the window key being the one `threshold.WindowDealer` shares.

**Synthetic vouchers.** With probability ``synthetic_rate_ppm / 1e6`` (a coin from the caller's
rng) a voucher is synthetic: its share is `threshold.synthetic_share`, its inner layer random
bytes of the real length, and m of its elements (m drawn from ``params.synthetic_open_counts``,
the measured distribution of opening elements of real matches) always open: Q = c·G and
S = c·P with a fresh scalar c each, P = a·G being the list's public point. Its other
elements carry real Q_j and random wraps, so exactly m open. Elements are shuffled in every
voucher. One image = one real voucher per window: the caller keeps the set of hashes it has
vouched for (a repeated image would add a second real share).

Pure: no I/O, no clock, no global state; randomness from the caller's `RandomSource`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tidings.crypto import primitives, psi
from tidings.crypto.identity import RandomSource, draw_random, random_source
from tidings.crypto.threshold import (
    ShareEnvelope,
    WindowDealer,
    draw_share_x,
    find_real_shares,
    recover_window_key,
    synthetic_share,
)
from tidings.errors import (
    DecryptionError,
    DetectionListMismatchError,
    InvalidKeyError,
    MalformedVoucherError,
    OversizedError,
    ThresholdParameterError,
    TidingsError,
    VoucherTamperedError,
)
from tidings.wire.voucher import (
    ELEMENT_WRAP_LEN,
    MAX_INNER_PAYLOAD_BYTES,
    MAX_OUTER_BYTES,
    VoucherWire,
    voucher_header,
)

VOUCHER_KEY_LEN = 16
INNER_NONCE_LEN = 16
_AEAD_NONCE = bytes(primitives.AES_GCM_NONCE_LEN)  # one message per key: kv / inner key
_WRAP_INFO = b"tidings/psi/voucher-wrap/v1"
_OUTER_INFO = b"tidings/psi/voucher-outer/v1"
_INNER_INFO = b"tidings/psi/voucher-inner/v1"
_INNER_AAD = b"tidings/psi/voucher-inner-aad/v1"
_U32 = 4


def _uniform_below(rng: RandomSource, n: int) -> int:
    """A uniform integer in [0, n), n <= 2^32, by rejection (no modulo bias)."""
    limit = (1 << 32) - (1 << 32) % n
    while True:
        value = int.from_bytes(draw_random(rng, _U32), "big")
        if value < limit:
            return value % n


# KDF(u(S), u(Q)) and the outer key are HMAC-SHA256 keyed with a domain string over the input
# (HKDF's extract step, RFC 5869 2.2, with the domain as salt; one output block suffices), via
# the hashlib HMAC of `primitives`: the opener runs it for every element of every voucher, and
# it is cheaper than an HKDF object (one loaded run: 8 ms instead of 20 ms to open a voucher
# that matches nothing).


def _wrap_key(u_s: bytes, u_q: bytes) -> bytes:
    return primitives.hmac_sha256(_WRAP_INFO, u_s + u_q)[:ELEMENT_WRAP_LEN]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _outer_key(kv: bytes) -> bytes:
    return primitives.hmac_sha256(_OUTER_INFO, kv)


def _inner_key(window_key: bytes, nonce: bytes) -> bytes:
    return primitives.hkdf_sha256(
        window_key, salt=nonce, info=_INNER_INFO, length=primitives.KEY_LEN
    )


def inner_ct_len(payload_len: int) -> int:
    """Bytes of the inner layer for a payload of ``payload_len`` bytes."""
    return INNER_NONCE_LEN + payload_len + primitives.AEAD_TAG_LEN


@dataclass(frozen=True, slots=True, repr=False)
class OpenedVoucher:
    """A voucher whose outer layer opened: its share and its (still encrypted) inner layer."""

    share: ShareEnvelope
    inner_ct: bytes

    def __repr__(self) -> str:
        return f"OpenedVoucher({self.share!r}, inner={len(self.inner_ct)} bytes)"


class VoucherBuilder:
    """The device side: builds vouchers against one blinded list for one window.

    Raises (constructor):
        ThresholdParameterError: the dealer's t or D is not the list's.
    """

    def __init__(
        self,
        blinded: psi.BlindedList,
        window_dealer: WindowDealer,
        rng: RandomSource | None = None,
    ) -> None:
        params = blinded.params
        if (window_dealer.threshold, window_dealer.dimension) != (
            params.threshold,
            params.tag_dimension,
        ):
            raise ThresholdParameterError("the window's t and D are not the list's")
        self._list = blinded
        self._dealer = window_dealer
        self._rng = random_source(rng)
        self._header = voucher_header(blinded.version, blinded.digest())

    def build(self, pdq_dihedral: Sequence[bytes], inner_payload: bytes) -> bytes:
        """One voucher (wire bytes, `tidings.wire.voucher`) for an image.

        ``pdq_dihedral``: the image's orientation hashes as `psi.query_keys` takes them.
        ``inner_payload``: what a reviewer needs once the threshold is crossed (at most
        `MAX_INNER_PAYLOAD_BYTES`).

        Raises:
            DecodeError: malformed hashes (see `psi.query_keys`).
            OversizedError: the payload is too long.
        """
        if len(inner_payload) > MAX_INNER_PAYLOAD_BYTES:
            raise OversizedError("the voucher's inner payload is too long")
        params, rng = self._list.params, self._rng
        keys = psi.query_keys(pdq_dihedral, params)
        kv = draw_random(rng, VOUCHER_KEY_LEN)
        synthetic = _uniform_below(rng, psi.PPM) < params.synthetic_rate_ppm
        always_open: set[int] = set()
        if synthetic:
            always_open = self._sample_positions(len(keys), self._open_count())
        elements = [
            self._always_open_element(kv)
            if j in always_open
            else self._element(key, kv, real=not synthetic)
            for j, key in enumerate(keys)
        ]
        self._shuffle(elements)
        if synthetic:
            share = synthetic_share(rng, params.tag_dimension)
            inner_ct = draw_random(rng, inner_ct_len(len(inner_payload)))
        else:
            share = self._dealer.share(draw_share_x(rng))
            nonce = draw_random(rng, INNER_NONCE_LEN)
            inner_ct = nonce + primitives.aes256_gcm_encrypt(
                _inner_key(self._dealer.window_key(), nonce),
                _AEAD_NONCE,
                inner_payload,
                _INNER_AAD,
            )
        outer_ct = primitives.aes256_gcm_encrypt(
            _outer_key(kv), _AEAD_NONCE, share.to_bytes() + inner_ct, self._header
        )
        wire = VoucherWire(self._list.version, self._list.digest(), tuple(elements), outer_ct)
        return wire.encode()

    def _element(self, key: bytes, kv: bytes, *, real: bool) -> tuple[bytes, bytes]:
        rng = self._rng
        beta = draw_random(rng, primitives.X25519_KEY_LEN)
        # H(k) is of prime order by construction (from_uniform): no subgroup check needed.
        u_h = primitives.ed25519_point_to_x25519_unchecked(psi.hash_to_group(key))
        u_q = primitives.x25519(beta, u_h)
        if not real:
            return u_q, draw_random(rng, ELEMENT_WRAP_LEN)
        try:
            # L comes from the list and may be anything a malicious server put there; the
            # clamped beta clears a small-order part and X25519 is twist-secure, so only a
            # decodable point is required (lookup's additions check that).
            u_l = primitives.ed25519_point_to_x25519_unchecked(self._list.lookup(key))
        except InvalidKeyError:
            # An invalid point from the list: make the element one that never opens, the
            # same work and shape as any other, instead of failing on this image's keys.
            return u_q, draw_random(rng, ELEMENT_WRAP_LEN)
        u_s = primitives.x25519(beta, u_l)
        return u_q, _xor(kv, _wrap_key(u_s, u_q))

    def _always_open_element(self, kv: bytes) -> tuple[bytes, bytes]:
        gamma = primitives.ed25519_scalar_from_wide(draw_random(self._rng, 64))
        q = primitives.ed25519_scalarmult_base(gamma)
        s = primitives.ed25519_scalarmult(gamma, self._list.public)
        u_q = primitives.ed25519_point_to_x25519(q)
        u_s = primitives.ed25519_point_to_x25519(s)
        return u_q, _xor(kv, _wrap_key(u_s, u_q))

    def _open_count(self) -> int:
        counts = self._list.params.synthetic_open_counts
        r = _uniform_below(self._rng, sum(w for _, w in counts))
        for m, w in counts:
            if r < w:
                return m
            r -= w
        raise AssertionError("unreachable: r < total weight")

    def _sample_positions(self, n: int, m: int) -> set[int]:
        positions = list(range(n))
        for i in range(m):  # partial Fisher-Yates
            j = i + _uniform_below(self._rng, n - i)
            positions[i], positions[j] = positions[j], positions[i]
        return set(positions[:m])

    def _shuffle(self, items: list[tuple[bytes, bytes]]) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = _uniform_below(self._rng, i + 1)
            items[i], items[j] = items[j], items[i]


class VoucherOpener:
    """The server side: tries each element of a voucher with the list secret.

    Raises (constructor):
        InvalidKeyError: ``secret`` is not a clamped scalar, or is not the list's (a·G != P).
    """

    def __init__(self, secret: bytes, blinded: psi.BlindedList) -> None:
        psi.check_list_secret(secret)
        if not primitives.constant_time_equal(
            primitives.ed25519_scalarmult_base(secret), blinded.public
        ):
            raise InvalidKeyError("the secret is not the one this list was blinded with")
        self._secret = secret
        self._list = blinded
        self._digest = blinded.digest()
        params = blinded.params
        self._share_len = ShareEnvelope.encoded_len(params.tag_dimension)
        self._min_outer = self._share_len + inner_ct_len(0) + primitives.AEAD_TAG_LEN

    def __repr__(self) -> str:
        return f"VoucherOpener({self._list!r}, <secret hidden>)"

    def open(self, voucher_bytes: bytes) -> OpenedVoucher | None:
        """The voucher's share and inner layer if its outer layer opens, else None.

        The honest opener stops at the first element that opens.

        Raises:
            OversizedError / UnsupportedVersionError / TruncatedError / MalformedVoucherError:
                the bytes are not a voucher (`VoucherWire.decode`), or its element count or
                outer length do not fit the list's parameters.
            DetectionListMismatchError: built against another list version or digest.
            VoucherTamperedError: the outer layer opened but its share is not a valid share.
        """
        wire = VoucherWire.decode(voucher_bytes)
        if wire.list_version != self._list.version or not primitives.constant_time_equal(
            wire.list_digest, self._digest
        ):
            raise DetectionListMismatchError("the voucher was built against another list")
        if len(wire.elements) != self._list.params.elements_per_voucher:
            raise MalformedVoucherError("the voucher's element count is not the list's")
        if not self._min_outer <= len(wire.outer_ct) <= MAX_OUTER_BYTES:
            raise MalformedVoucherError("the voucher's outer layer has the wrong length")
        header = wire.header()
        for u_q, wrap in wire.elements:
            try:
                u_s = primitives.x25519(self._secret, u_q)
            except InvalidKeyError:  # a low-order u from a malformed client: never opens
                continue
            kv = _xor(wrap, _wrap_key(u_s, u_q))
            try:
                plain = primitives.aes256_gcm_decrypt(
                    _outer_key(kv), _AEAD_NONCE, wire.outer_ct, header
                )
            except DecryptionError:
                continue
            try:
                share = ShareEnvelope.from_bytes(
                    plain[: self._share_len], self._list.params.tag_dimension
                )
            except TidingsError as exc:
                raise VoucherTamperedError("an opened voucher carries no valid share") from exc
            return OpenedVoucher(share, plain[self._share_len :])
        return None


def recover_inner(opened: Sequence[OpenedVoucher], t: int) -> list[tuple[int, bytes]]:
    """The inner payloads of the real matching vouchers among ``opened`` (one window's opened
    vouchers, real and synthetic mixed), as (index into ``opened``, payload) pairs, ascending;
    [] while fewer than ``t`` real ones can be identified.

    Raises:
        ThresholdParameterError: ``t`` out of range or shares of different dimensions.
        ShareRecoveryError: the identified shares do not recover one key.
        VoucherTamperedError: an identified voucher's inner layer does not decrypt under the
            recovered window key.
    """
    if not opened:
        return []
    dimension = opened[0].share.dimension
    shares = [o.share for o in opened]
    real = find_real_shares(shares, t, dimension)
    if not real:
        return []
    window_key = recover_window_key([shares[i] for i in real], t)
    recovered: list[tuple[int, bytes]] = []
    for i in real:
        inner = opened[i].inner_ct
        nonce, body = inner[:INNER_NONCE_LEN], inner[INNER_NONCE_LEN:]
        try:
            payload = primitives.aes256_gcm_decrypt(
                _inner_key(window_key, nonce), _AEAD_NONCE, body, _INNER_AAD
            )
        except (DecryptionError, InvalidKeyError) as exc:
            raise VoucherTamperedError("a matched voucher's inner layer does not decrypt") from exc
        recovered.append((i, payload))
    return recovered
