"""Threshold secret sharing with detectable real shares (private matching, issue 10).

One *window* (a run of vouchers from one device, docs/detection.md) has one secret: the window
key. Every real voucher carries one Shamir share of it; synthetic vouchers carry uniformly random
shares. The server opens the outer layer of the vouchers that match its list (and of every
synthetic voucher) and so holds a mix of real and synthetic shares. This module lets it

- tell the real shares from the synthetic ones once at least ``t`` real shares exist
  (`find_real_shares`), in the spirit of the "detectable hash function" of the Apple PSI system
  (Bhowmick et al., 2021, section 3.2), and
- recover the window key from them (`recover_window_key`),

while below ``t`` the real shares are uniform: jointly distributed exactly like synthetic ones.

The construction, over the prime field F_p with p = 2^127 - 1 (`FIELD_PRIME`):

- `WindowDealer` derives from a 32-byte window seed a secret polynomial f of degree t-1 and D
  *tag* polynomials g_1..g_D of degree t-2 (HKDF-SHA256, one domain-separated call per
  polynomial, t and D in the info, 32 output bytes reduced mod p per coefficient: statistical
  distance from uniform below 2^-129 each). A share at x is ``(x, f(x), g_1(x), ..., g_D(x))``;
  the window key is HKDF-SHA256 of f(0).
- Detection: give each share the row ``[1, x, ..., x^(t-2), g_1(x), ..., g_D(x)]``. Each g_j is a
  linear function of ``v(x) = [1, x, ..., x^(t-2)]``, so every real row lies in one
  (t-1)-dimensional subspace and any t real rows are linearly dependent. A synthetic row has
  uniform tags, so while there are at most D of them they are (with probability 1 - O(n/p))
  independent of everything else. A row is flagged real when it has a nonzero coefficient in
  some vector of the left kernel of the row matrix (Gaussian elimination mod p).

Why fewer than t real shares look exactly like synthetic ones (the claim the tests check):
fix distinct nonzero x_1..x_k with k <= t-1 (the caller draws each x uniformly from the nonzero
elements, `draw_share_x`, as `synthetic_share` does). f has t independent uniform coefficients,
and the map from them to (f(0), f(x_1), ..., f(x_k), and t-1-k further points) is a Vandermonde
system on t distinct points, hence a bijection: (f(x_1), ..., f(x_k)) is uniform on F_p^k and
independent of f(0). Each g_j has t-1 uniform coefficients and (g_j(x_1), ..., g_j(x_k)) is the
image of a full-rank k x (t-1) Vandermonde map, so it is uniform on F_p^k, independently for
every j and of f. So k <= t-1 real shares are jointly uniform: the distribution of a synthetic
share. This is information-theoretic given uniform coefficients; ours come from HKDF of a
random seed, so it holds up to HKDF's pseudorandomness. With t or more real shares the tags
satisfy linear relations, which is exactly what `find_real_shares` detects.

The s <= D bound: with r >= t-1 real rows the real part has rank t-1, and s synthetic rows stay
independent only while s <= D (the tag coordinates give them D dimensions of room). Beyond it,
dependencies are forced among the synthetic rows too; their kernel vectors span every row, the
flagged set then includes synthetic shares, their y values do not lie on one polynomial, and
`find_real_shares` returns [] (no detection in that window, never a false recovery). Window
size and synthetic rate must keep s <= D with overwhelming probability (docs/detection.md).

The field arithmetic is written here, over Python integers with ``pow(x, p - 2, p)`` for the
inverse, because no vetted Python library does Shamir sharing over a prime field with this
detection property (the Shamir libraries on PyPI split byte strings over GF(256) and have no
tags). It is a few lines of schoolbook algebra; the hard parts (the key derivation, the AEADs)
stay in `tidings.crypto.primitives`. Nothing here is constant-time: it runs on the server over
shares of the client's window, below threshold uniform and above it meant to be recovered.

Pure: no I/O, no clock, no global state; randomness comes from the caller's `RandomSource`.
Errors are `tidings.errors` types; no message or repr contains a share value or a key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tidings.crypto.identity import RandomSource, draw_random
from tidings.crypto.primitives import hkdf_sha256
from tidings.errors import (
    InvalidKeyError,
    InvalidShareError,
    ShareRecoveryError,
    ThresholdParameterError,
)
from tidings.wire.binary import Reader, u16

FIELD_PRIME = (1 << 127) - 1
"""p = 2^127 - 1, a Mersenne prime: shares and tags are elements of F_p."""

FIELD_ELEMENT_LEN = 16
"""Bytes of one field element on the wire (big-endian, value < p)."""

WINDOW_SEED_LEN = 32
"""Bytes of a window seed (`WindowDealer`)."""

WINDOW_KEY_LEN = 32
"""Bytes of a window key (`WindowDealer.window_key`, `recover_window_key`)."""

MIN_THRESHOLD = 2
"""Smallest threshold t: with t = 1 the tag polynomials would have degree -1 (no tags)."""

MAX_THRESHOLD = 128
"""Largest threshold t this module accepts (the secret polynomial's coefficients come from one
HKDF call, at most 8160 bytes = 255 coefficients; 128 leaves room and is far above any sane t)."""

MIN_TAG_DIMENSION = 1
MAX_TAG_DIMENSION = 1024
"""Bounds of the tag dimension D (the number of tag polynomials; a share is 16*(2+D) bytes)."""

_SAMPLE_LEN = 32
"""Bytes reduced mod p per field element drawn (bias below 2^-129)."""

_SECRET_INFO = b"Tidings_Threshold_v1_secret_polynomial"
_TAG_INFO = b"Tidings_Threshold_v1_tag_polynomial"
_WINDOW_KEY_INFO = b"Tidings_Threshold_v1_window_key"
_ZERO_SALT = bytes(32)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_threshold(threshold: int) -> None:
    if not _is_int(threshold) or not MIN_THRESHOLD <= threshold <= MAX_THRESHOLD:
        raise ThresholdParameterError(
            f"the threshold must be an integer in {MIN_THRESHOLD}..{MAX_THRESHOLD}"
        )


def _check_dimension(dimension: int) -> None:
    if not _is_int(dimension) or not MIN_TAG_DIMENSION <= dimension <= MAX_TAG_DIMENSION:
        raise ThresholdParameterError(
            f"the tag dimension must be an integer in {MIN_TAG_DIMENSION}..{MAX_TAG_DIMENSION}"
        )


def _field_elements(data: bytes) -> list[int]:
    return [
        int.from_bytes(data[i : i + _SAMPLE_LEN], "big") % FIELD_PRIME
        for i in range(0, len(data), _SAMPLE_LEN)
    ]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """Horner's rule: sum of coefficients[k] * x^k mod p."""
    acc = 0
    for c in reversed(coefficients):
        acc = (acc * x + c) % FIELD_PRIME
    return acc


def _element_bytes(value: int) -> bytes:
    return value.to_bytes(FIELD_ELEMENT_LEN, "big")


def draw_share_x(rng: RandomSource) -> int:
    """A share's x: uniform over the nonzero elements of F_p (bias below 2^-129). Real shares
    must use this (or the same distribution), or they would differ from synthetic ones."""
    return 1 + int.from_bytes(draw_random(rng, _SAMPLE_LEN), "big") % (FIELD_PRIME - 1)


@dataclass(frozen=True, slots=True, repr=False)
class ShareEnvelope:
    """One share as a voucher carries it: ``x`` (nonzero), ``y`` = f(x) and ``tag`` = the D tag
    values g_1(x)..g_D(x), all field elements. Encoded as 16*(2+D) bytes: x, y, tag values,
    each 16 bytes big-endian. Its repr shows only the dimension."""

    x: int
    y: int
    tag: tuple[int, ...]

    def __post_init__(self) -> None:
        """Raises `InvalidShareError` unless x is a nonzero field element, y and every tag
        value are field elements, and there are 1..MAX_TAG_DIMENSION tag values."""
        if not _is_int(self.x) or not 0 < self.x < FIELD_PRIME:
            raise InvalidShareError("a share's x must be a nonzero field element")
        if not isinstance(self.tag, tuple) or not MIN_TAG_DIMENSION <= len(self.tag) <= (
            MAX_TAG_DIMENSION
        ):
            raise InvalidShareError("a share's tag has the wrong number of values")
        if not all(_is_int(v) and 0 <= v < FIELD_PRIME for v in (self.y, *self.tag)):
            raise InvalidShareError("a share value is not a field element")

    @property
    def dimension(self) -> int:
        return len(self.tag)

    def __repr__(self) -> str:
        return f"ShareEnvelope(dimension={self.dimension}, <values hidden>)"

    @staticmethod
    def encoded_len(dimension: int) -> int:
        """Bytes of `to_bytes` for tag dimension ``dimension``: 16*(2+D)."""
        return FIELD_ELEMENT_LEN * (2 + dimension)

    def to_bytes(self) -> bytes:
        return b"".join(_element_bytes(v) for v in (self.x, self.y, *self.tag))

    @classmethod
    def from_bytes(cls, data: bytes, dimension: int) -> ShareEnvelope:
        """Decode a share of tag dimension ``dimension`` (exactly 16*(2+D) bytes).

        Raises:
            ThresholdParameterError: ``dimension`` is outside the accepted bounds.
            TruncatedError: the input is shorter than 16*(2+D) bytes.
            DecodeError: the input is longer (trailing bytes), or is not bytes.
            InvalidShareError: a value is not below p, or x is zero.
        """
        _check_dimension(dimension)
        reader = Reader(data, "threshold share")
        values = [
            int.from_bytes(reader.take(FIELD_ELEMENT_LEN), "big") for _ in range(2 + dimension)
        ]
        reader.finish()
        return cls(values[0], values[1], tuple(values[2:]))


def synthetic_share(rng: RandomSource, dimension: int) -> ShareEnvelope:
    """A share with every value uniform (x uniform nonzero): what a synthetic voucher carries.
    Distributed exactly like any one of fewer than t real shares of one window (module docs).

    Raises:
        ThresholdParameterError: ``dimension`` is outside the accepted bounds.
    """
    _check_dimension(dimension)
    x = draw_share_x(rng)
    rest = _field_elements(draw_random(rng, _SAMPLE_LEN * (1 + dimension)))
    return ShareEnvelope(x, rest[0], tuple(rest[1:]))


class WindowDealer:
    """The device side of one window: deals shares of the window key at caller-chosen x.

    ``seed`` (32 random bytes, fresh per window) determines everything: the same seed, t and D
    give the same polynomials on every call (the device need store only the seed). Holds key
    material: the repr hides it.

    Raises (constructor):
        InvalidKeyError: ``seed`` is not 32 bytes.
        ThresholdParameterError: t or D is outside the accepted bounds.
    """

    __slots__ = ("_secret", "_tags", "dimension", "threshold")

    def __init__(self, seed: bytes, threshold: int, dimension: int) -> None:
        if not isinstance(seed, bytes) or len(seed) != WINDOW_SEED_LEN:
            raise InvalidKeyError(f"a window seed must be {WINDOW_SEED_LEN} bytes")
        _check_threshold(threshold)
        _check_dimension(dimension)
        self.threshold = threshold
        self.dimension = dimension
        shape = u16(threshold) + u16(dimension)
        self._secret = _field_elements(
            hkdf_sha256(
                seed, salt=_ZERO_SALT, info=_SECRET_INFO + shape, length=_SAMPLE_LEN * threshold
            )
        )
        self._tags = [
            _field_elements(
                hkdf_sha256(
                    seed,
                    salt=_ZERO_SALT,
                    info=_TAG_INFO + shape + u16(j),
                    length=_SAMPLE_LEN * (threshold - 1),
                )
            )
            for j in range(dimension)
        ]

    def __repr__(self) -> str:
        return (
            f"WindowDealer(threshold={self.threshold}, dimension={self.dimension}, <seed hidden>)"
        )

    def share(self, x: int) -> ShareEnvelope:
        """The real share at ``x`` (draw it with `draw_share_x`; never reuse one in a window).

        Raises:
            InvalidShareError: ``x`` is not a nonzero field element.
        """
        if isinstance(x, bool) or not isinstance(x, int) or not 0 < x < FIELD_PRIME:
            raise InvalidShareError("a share's x must be a nonzero field element")
        return ShareEnvelope(
            x, _evaluate(self._secret, x), tuple(_evaluate(g, x) for g in self._tags)
        )

    def window_key(self) -> bytes:
        """The 32-byte window key: HKDF-SHA256 of f(0). `recover_window_key` returns the same
        bytes from any t real shares."""
        return _window_key_of(self._secret[0])


def _window_key_of(secret: int) -> bytes:
    return hkdf_sha256(
        _element_bytes(secret), salt=_ZERO_SALT, info=_WINDOW_KEY_INFO, length=WINDOW_KEY_LEN
    )


# --- detection and recovery (server side) ----------------------------------------------------


def _first_of_each_x(shares: Sequence[ShareEnvelope]) -> list[int]:
    """Indices of the first share with each x. A repeated x is a replayed voucher (or a client
    that reused an x, which only a modified client does); counting it twice would make one real
    share look like two dependent rows."""
    seen: set[int] = set()
    kept: list[int] = []
    for i, share in enumerate(shares):
        if share.x not in seen:
            seen.add(share.x)
            kept.append(i)
    return kept


def _dependent_rows(rows: list[list[int]]) -> set[int]:
    """Indices of the rows that have a nonzero coefficient in some vector of the left kernel
    of ``rows`` (n rows of m field elements), i.e. the rows that lie in the span of the others.

    Works on the transpose (m x n): its reduced row-echelon form R has a pivot for each row of
    the original that is independent of the rows before it. Each free column j gives the kernel
    vector with 1 at j and -R[k][j] at the k-th pivot column, so the flagged rows are the free
    columns plus the pivot columns with a nonzero entry of R in some free column.

    Forward elimination, then back-substitution restricted to the free columns (R is needed
    nowhere else). Reduction mod p is lazy: a row below the pivot accumulates ``a - f*b`` with
    f and b reduced, so each entry grows by less than p^2 per step (at most ~1,200 steps: a few
    bits), and is reduced when it is read as a pivot candidate or becomes a pivot row. This
    cuts to a half or a third the time of reducing every product (docs/performance.md).
    """
    n = len(rows)
    m = len(rows[0])
    p = FIELD_PRIME
    mat = [[rows[i][c] for i in range(n)] for c in range(m)]
    pivots: list[int] = []
    rank = 0
    for col in range(n):
        if rank == m:
            break  # every later column is free
        pivot = None
        for i in range(rank, m):
            value = mat[i][col] % p
            mat[i][col] = value
            if value and pivot is None:
                pivot = i
        if pivot is None:
            continue
        mat[rank], mat[pivot] = mat[pivot], mat[rank]
        prow = mat[rank]
        inverse = pow(prow[col], p - 2, p)
        # Entries left of col are exactly zero in this row and in every row below it.
        tail = [(v * inverse) % p for v in prow[col:]]
        prow[col:] = tail
        for i in range(rank + 1, m):
            row = mat[i]
            factor = row[col]
            if factor:
                row[col:] = [a - factor * b for a, b in zip(row[col:], tail, strict=True)]
        pivots.append(col)
        rank += 1
    pivot_set = set(pivots)
    free = [c for c in range(n) if c not in pivot_set]
    # R restricted to the free columns, by back-substitution from the last pivot row up. Row
    # k's entry at pivot column l < k's pivot is untouched by the eliminations of later pivots.
    reduced = [[mat[k][j] % p for j in free] for k in range(rank)]
    for k in range(rank - 1, -1, -1):
        below = reduced[k] = [v % p for v in reduced[k]]
        column = pivots[k]
        for i in range(k):
            factor = mat[i][column] % p
            if factor:
                reduced[i] = [a - factor * b for a, b in zip(reduced[i], below, strict=True)]
    flagged = set(free)
    for k, column in enumerate(pivots):
        if any(reduced[k]):
            flagged.add(column)
    return flagged


def _lagrange_weights(xs: Sequence[int]) -> list[int]:
    """Barycentric weights w_i = 1 / prod_{j != i} (x_i - x_j) for distinct ``xs``."""
    p = FIELD_PRIME
    weights = []
    for i, xi in enumerate(xs):
        denominator = 1
        for j, xj in enumerate(xs):
            if j != i:
                denominator = denominator * (xi - xj) % p
        weights.append(pow(denominator, p - 2, p))
    return weights


def _interpolate_at(xs: Sequence[int], ys: Sequence[int], weights: Sequence[int], at: int) -> int:
    """The value at ``at`` of the polynomial of degree < len(xs) through (xs, ys)."""
    p = FIELD_PRIME
    total = 0
    for i, (yi, wi) in enumerate(zip(ys, weights, strict=True)):
        term = yi * wi % p
        for j, xj in enumerate(xs):
            if j != i:
                term = term * (at - xj) % p
        total = (total + term) % p
    return total


def _consistent_secret(shares: Sequence[ShareEnvelope], threshold: int) -> int | None:
    """f(0) interpolated from the first ``threshold`` shares if every other share lies on the
    same polynomial of degree threshold-1, else None. The shares' x are distinct."""
    base = shares[:threshold]
    xs = [s.x for s in base]
    ys = [s.y for s in base]
    weights = _lagrange_weights(xs)
    for other in shares[threshold:]:
        if _interpolate_at(xs, ys, weights, other.x) != other.y:
            return None
    return _interpolate_at(xs, ys, weights, 0)


def find_real_shares(shares: Sequence[ShareEnvelope], threshold: int, dimension: int) -> list[int]:
    """Indices (ascending, into ``shares``) of the real shares, once at least ``threshold`` of
    them are among ``shares``; [] otherwise.

    ``shares`` are the opened shares of one window, real and synthetic mixed, in any order. The
    first share with each x is used and later ones with the same x are ignored (replays). The
    answer is sound as long as at most ``dimension`` (D) synthetic shares are present (module
    docs); beyond that the flagged rows include synthetic ones, their y values fail the check
    that they lie on one polynomial of degree t-1, and the answer is [] (no detection, never a
    false recovery). When exactly t shares are flagged the y values cannot be cross-checked;
    the caller's decryption under the recovered key is the final check.

    Raises:
        ThresholdParameterError: t or D is outside the accepted bounds, or a share's tag
            dimension is not D.
    """
    _check_threshold(threshold)
    _check_dimension(dimension)
    if any(share.dimension != dimension for share in shares):
        raise ThresholdParameterError("a share's tag dimension is not the window's")
    kept = _first_of_each_x(shares)
    if len(kept) < threshold:
        return []
    rows = []
    for i in kept:
        share = shares[i]
        powers = [1]
        for _ in range(threshold - 2):
            powers.append(powers[-1] * share.x % FIELD_PRIME)
        rows.append(powers + list(share.tag))
    flagged = sorted(kept[k] for k in _dependent_rows(rows))
    if len(flagged) < threshold:
        return []
    if _consistent_secret([shares[i] for i in flagged], threshold) is None:
        return []
    return flagged


def recover_window_key(shares: Sequence[ShareEnvelope], threshold: int) -> bytes:
    """The window key from at least ``threshold`` real shares (Lagrange interpolation of f at 0
    from the first t, every further share checked to lie on the same polynomial).

    Raises:
        ThresholdParameterError: ``threshold`` is outside the accepted bounds.
        ShareRecoveryError: fewer than t shares, two shares with the same x, or shares that do
            not lie on one polynomial of degree t-1 (a synthetic or tampered share among them).
    """
    _check_threshold(threshold)
    if len(shares) < threshold:
        raise ShareRecoveryError(f"recovery needs at least {threshold} shares")
    if len({s.x for s in shares}) != len(shares):
        raise ShareRecoveryError("two shares have the same x")
    secret = _consistent_secret(shares, threshold)
    if secret is None:
        raise ShareRecoveryError(
            "the shares do not lie on one polynomial of the threshold's degree"
        )
    return _window_key_of(secret)


# --- the innocent-account estimate (docs/detection.md, the CLI) -----------------------------


def innocent_crossing_probability(
    false_candidate_rate: float, images: int, threshold: int
) -> float:
    """P[X >= threshold] for X ~ Binomial(images, false_candidate_rate): the chance that an
    account sending ``images`` unlisted images, each a false candidate independently with the
    given rate, has at least ``threshold`` real vouchers opened in one window.

    Computed as the upper-tail sum directly (never 1 - CDF, which cancels to 0 below 1e-16),
    from the log of the first term (lgamma, log1p) and the ratio of consecutive terms, so it
    stays accurate down to the smallest positive float.

    Raises:
        ThresholdParameterError: the rate is not in [0, 1], ``images`` is negative, or
            ``threshold`` is below 1.
    """
    rate = false_candidate_rate
    if not isinstance(rate, float | int) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
        raise ThresholdParameterError("the false-candidate rate must be in [0, 1]")
    if isinstance(images, bool) or not isinstance(images, int) or images < 0:
        raise ThresholdParameterError("the number of images must be a non-negative integer")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ThresholdParameterError("the threshold must be a positive integer")
    if threshold > images or rate == 0.0:
        return 0.0
    if rate == 1.0:
        return 1.0
    n, k = images, threshold
    if k > (n + 1) * rate:
        # Past the mode the terms fall from k upward: sum the upper tail itself.
        return min(1.0, _tail_sum(n, rate, k, range(k, n + 1)))
    # At or below the mode the answer is not small: 1 - (the lower tail, summed from k-1 down,
    # where the terms fall as well), which also keeps every term ratio below 1 (no overflow).
    return max(0.0, 1.0 - _tail_sum(n, rate, k - 1, range(k - 1, -1, -1)))


def _tail_sum(n: int, rate: float, first: int, order: range) -> float:
    """Sum of the Binomial(n, rate) probabilities at ``order`` (which starts at ``first`` and
    moves away from the mode, so the terms fall): the first term from its logarithm, the rest
    relative to it by the ratio of consecutive terms, stopped once they no longer count."""
    log_first = (
        math.lgamma(n + 1)
        - math.lgamma(first + 1)
        - math.lgamma(n - first + 1)
        + first * math.log(rate)
        + (n - first) * math.log1p(-rate)
    )
    odds = rate / (1.0 - rate)
    upward = order.step > 0
    total = 0.0
    relative = 1.0
    for j in order:
        total += relative
        if upward:
            relative *= (n - j) / (j + 1) * odds
        else:
            relative *= j / (n - j + 1) / odds
        if relative < total * 1e-17:
            break
    return math.exp(log_first + math.log(total))
