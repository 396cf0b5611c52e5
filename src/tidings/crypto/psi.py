"""Private threshold matching, part 1: fuzzy keys and the blinded list (issue 10).

The design follows "The Apple PSI System" (Bhowmick et al., 2021) over edwards25519; the
analysis and the measurements behind every constant are in docs/detection.md ("Fuzzy matching
and the blinded list"). `tidings.crypto.voucher` builds and opens the vouchers on top of this.

**Fuzzy keys (LSH by bit sampling).** A PDQ hash is a 16x16 bit matrix. Table ``k`` samples a
fixed pseudo-random set ``S_k`` of ``bits_per_key`` positions, derived from the parameters' seed
with SHAKE-256 (`table_positions`), and closed under transposition ((r, c) in S_k implies
(c, r) in S_k). The key of a hash ``h`` in table ``k`` is the smaller of the bits of ``h`` and
of ``transpose(h)`` at ``S_k`` (read in ascending position order), so ``h`` and its transpose
share every key: PDQ's hash of a transposed image *is* the transposed matrix (measured, and
tests/crypto/test_psi_keys.py checks it on real photographs), so the transposed half of the
dihedral group costs no lookups. Flips are not exact at hash level, so a querying device sends
keys for the four orientation classes {identity, rot180, flip vertical, flip horizontal}, using
PDQ's own dihedral hashes of its image. Two hashes that agree on the ``b`` sampled bits of one
table collide in that table; a hash at distance d from a listed one matches a given table with
probability about (1 - d/256)^b, and K tables give 1 - (1 - (1 - d/256)^b)^K.

Bit order: a PDQ hash travels as 32 bytes, big-endian in bit order, exactly as the field's hex
form (``bytes.fromhex(pdq_hex)``; threatexchange's hex is ``numpy.packbits`` of pdqhash's 256
vector). Bit ``i`` (row ``i // 16``, column ``i % 16``) is ``byte[i // 8] >> (7 - i % 8) & 1``.

**Blinded list = an OKVS over the group.** With the server's secret scalar ``a`` and
``H(k) = from_uniform(SHA-512(domain || k)[:32])``, each list key ``k`` has the target
``a·H(k)``. The targets are encoded into a table ``T`` of about 1.25·n points so that
``decode(k) = T[h1(k)] + T[h2(k)] + T[h3(k)]`` equals ``a·H(k)`` for every listed key and is an
unrelated point for any other key (a "garbled cuckoo table", a 3-hash oblivious key-value
store). The device holds ``P = a·G`` and ``T``; without ``a`` it cannot tell a listed key's
decode from any other's.

Nothing here reads a clock, does I/O or keeps global state; randomness is passed in.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from tidings.crypto import primitives, threshold
from tidings.crypto.identity import RandomSource, draw_random, random_source
from tidings.errors import (
    DecodeError,
    DetectionListError,
    InvalidKeyError,
    OversizedError,
    UnsupportedVersionError,
)
from tidings.wire.binary import Reader, u8, u16, u32
from tidings.wire.pdq import PDQ_BITS, PDQ_BYTES, PDQ_SIDE

DIHEDRAL_COUNT = 8
"""pdqhash.compute_dihedral returns 8 hashes, in this order (measured on real photographs,
tests/crypto/test_psi_keys.py): 0 identity, 1 rot90, 2 rot180, 3 rot270, 4 flip vertical
(rows reversed), 5 flip horizontal (columns reversed), 6 transpose, 7 anti-transpose."""
DIHEDRAL_IDENTITY = 0
DIHEDRAL_ROT180 = 2
DIHEDRAL_FLIP_VERTICAL = 4
DIHEDRAL_FLIP_HORIZONTAL = 5
DIHEDRAL_TRANSPOSE = 6
ORIENTATION_CLASSES = (
    DIHEDRAL_IDENTITY,
    DIHEDRAL_ROT180,
    DIHEDRAL_FLIP_VERTICAL,
    DIHEDRAL_FLIP_HORIZONTAL,
)
"""One dihedral hash per class of the dihedral group modulo transposition."""

POINT_LEN = primitives.ED25519_POINT_LEN
SECRET_LEN = primitives.X25519_KEY_LEN
OKVS_SEED_LEN = 16
OKVS_HASHES = 3
OKVS_EXPANSION = 1.25
"""Slots per key: 3-hypergraph peeling succeeds w.h.p. above 1.222 slots per key."""
OKVS_SLACK = 12
"""Extra slots, so that small lists (where the asymptotic threshold is loose) peel too."""
OKVS_MAX_ATTEMPTS = 32
"""Fresh seeds tried before `BlindedList.build` gives up (each failure is rare: see the tests)."""

LIST_FORMAT_VERSION = 1
MAX_TABLES = 64
MIN_KEY_BITS = 16
MAX_KEY_BITS = 64
MAX_LIST_SLOTS = 8 * 1024 * 1024
"""256 MiB of points: the device budget of issue 10."""
MAX_OPEN_COUNT_ENTRIES = 4 * MAX_TABLES
PPM = 1_000_000

_KEY_DOMAIN = b"tidings/psi/lsh-key/v1"
_POSITIONS_DOMAIN = b"tidings/psi/lsh-positions/v1"
_HASH_TO_GROUP_DOMAIN = b"tidings/psi/hash-to-group/v1"
_OKVS_DOMAIN = b"tidings/psi/okvs-slots/v1"

# The measured distribution of how many of a matching image's 4K query elements open, for the
# default parameters (bench/psi_recall.py prints it; docs/detection.md, "Vouchers"). Pairs of
# (number of opening elements, weight). A synthetic voucher draws its count from it.
# Measured over the 515 matching edits of 12 photographs (K=40, b=42, pixel-space classes).
SYNTHETIC_OPEN_COUNTS: tuple[tuple[int, int], ...] = (
    (1, 42),
    (2, 31),
    (3, 18),
    (4, 20),
    (5, 11),
    (6, 8),
    (7, 8),
    (8, 10),
    (9, 2),
    (10, 3),
    (11, 7),
    (12, 13),
    (13, 6),
    (14, 9),
    (15, 3),
    (16, 9),
    (17, 6),
    (18, 4),
    (19, 1),
    (20, 4),
    (21, 2),
    (22, 14),
    (23, 7),
    (24, 6),
    (25, 9),
    (26, 9),
    (27, 5),
    (28, 10),
    (29, 17),
    (30, 14),
    (31, 10),
    (32, 4),
    (33, 4),
    (35, 4),
    (40, 185),
)

DEFAULT_LSH_SEED = bytes.fromhex("5469646996e67320505349206c73682073656564207631000000000000000001")


@dataclass(frozen=True)
class PsiParameters:
    """Every constant of the matching protocol, in one place, published inside the list.

    ``tables`` (K) and ``bits_per_key`` (b) fix the LSH; ``lsh_seed`` its bit positions;
    ``orientation_classes`` the dihedral classes a device queries; ``threshold`` (t),
    ``tag_dimension`` (D), ``synthetic_rate_ppm`` (q, parts per million) and ``window_size``
    (W, vouchers per window) the threshold layer; ``synthetic_open_counts`` the published
    distribution a synthetic voucher's count of always-opening elements is drawn from.

    Defaults: K = 40 and b = 42 are the smallest K meeting issue 10's recall and
    false-candidate targets (bench/psi_recall.py); t = 10, D = 16, q = 1/1024 and W = 4,096
    are the threshold layer's proposal, D = 16 so that a voucher fits in 8 KB
    (docs/detection.md, "Threshold and synthetic vouchers").
    ``synthetic_open_counts`` is measured for K = 40, b = 42: a list with other K or b must
    carry its own measurement.

    Raises (on construction):
        DetectionListError: a value outside its documented range.
    """

    tables: int = 40
    bits_per_key: int = 42
    lsh_seed: bytes = DEFAULT_LSH_SEED
    orientation_classes: tuple[int, ...] = ORIENTATION_CLASSES
    threshold: int = 10
    tag_dimension: int = 16
    synthetic_rate_ppm: int = 977
    window_size: int = 4_096
    synthetic_open_counts: tuple[tuple[int, int], ...] = SYNTHETIC_OPEN_COUNTS
    _samplers: tuple[tuple[Callable[[str], tuple[str, ...]], ...], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not 1 <= self.tables <= MAX_TABLES:
            raise DetectionListError(f"tables must be 1..{MAX_TABLES}")
        if not MIN_KEY_BITS <= self.bits_per_key <= MAX_KEY_BITS:
            raise DetectionListError(f"bits per key must be {MIN_KEY_BITS}..{MAX_KEY_BITS}")
        if len(self.lsh_seed) != 32:
            raise DetectionListError("the LSH seed is 32 bytes")
        classes = self.orientation_classes
        if (
            not classes
            or len(set(classes)) != len(classes)
            or not all(0 <= c < DIHEDRAL_COUNT for c in classes)
        ):
            raise DetectionListError("orientation classes are distinct dihedral indices 0..7")
        if not (
            threshold.MIN_THRESHOLD <= self.threshold <= threshold.MAX_THRESHOLD
            and threshold.MIN_TAG_DIMENSION <= self.tag_dimension <= threshold.MAX_TAG_DIMENSION
        ):
            raise DetectionListError("threshold or tag dimension outside the threshold layer's")
        if not 0 <= self.synthetic_rate_ppm <= PPM or not 1 <= self.window_size <= 0xFFFF_FFFF:
            raise DetectionListError("synthetic rate is 0..1e6 ppm, window size >= 1")
        counts = self.synthetic_open_counts
        if not 1 <= len(counts) <= MAX_OPEN_COUNT_ENTRIES or not all(
            1 <= m <= self.elements_per_voucher and 1 <= w <= 0xFFFF_FFFF for m, w in counts
        ):
            raise DetectionListError("synthetic open counts are (1..4K, weight >= 1) pairs")
        object.__setattr__(
            self,
            "_samplers",
            tuple(
                tuple(
                    operator.itemgetter(*positions)
                    for positions in table_positions(self.lsh_seed, k, self.bits_per_key)
                )
                for k in range(self.tables)
            ),
        )

    @property
    def elements_per_voucher(self) -> int:
        """How many (u, wrap) elements every voucher carries: one per class per table."""
        return len(self.orientation_classes) * self.tables

    @property
    def key_len(self) -> int:
        return len(_KEY_DOMAIN) + 1 + (self.bits_per_key + 7) // 8

    def encode(self) -> bytes:
        """The canonical encoding (part of `BlindedList.encode`, so of its digest)."""
        return b"".join(
            [
                u16(self.tables),
                u16(self.bits_per_key),
                self.lsh_seed,
                u8(len(self.orientation_classes)),
                bytes(self.orientation_classes),
                u16(self.threshold),
                u16(self.tag_dimension),
                u32(self.synthetic_rate_ppm),
                u32(self.window_size),
                u16(len(self.synthetic_open_counts)),
                *(u16(m) + u32(w) for m, w in self.synthetic_open_counts),
            ]
        )

    @classmethod
    def read(cls, reader: Reader) -> PsiParameters:
        """Parse `encode`'s output from ``reader``.

        Raises:
            TruncatedError: the input ends early.
            DetectionListError: a value out of range.
        """
        tables, bits, seed = reader.u16(), reader.u16(), reader.take(32)
        classes = tuple(reader.take(reader.u8()))
        threshold, dimension = reader.u16(), reader.u16()
        rate, window = reader.u32(), reader.u32()
        n = reader.u16()
        if n > MAX_OPEN_COUNT_ENTRIES:
            raise DetectionListError("too many synthetic open count entries")
        counts = tuple((reader.u16(), reader.u32()) for _ in range(n))
        return cls(tables, bits, seed, classes, threshold, dimension, rate, window, counts)


def table_positions(seed: bytes, table: int, bits: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The sampled bit positions of ``table``, ascending, and their transposes in the same order.

    Derivation (deterministic, documented so others can reimplement it): read the bytes of
    SHAKE-256(positions domain || seed || u16(table)) one at a time; each byte is a position
    p = 16·row + col. Skip p if already chosen; otherwise add p and its transpose
    16·col + row (one position when on the diagonal) unless that would exceed ``bits`` (then
    skip). Stop at ``bits`` positions. The set is closed under transposition by construction.
    """
    chosen: set[int] = set()
    stream = primitives.shake256(_POSITIONS_DOMAIN + seed + u16(table), 4096)
    for p in stream:
        if len(chosen) == bits:
            break
        t = (p % PDQ_SIDE) * PDQ_SIDE + p // PDQ_SIDE
        pair = {p, t}
        if p in chosen or len(chosen) + len(pair) > bits:
            continue
        chosen |= pair
    if len(chosen) != bits:  # 4096 bytes always suffice for bits <= 64; a guard, not a path
        raise DetectionListError("could not derive the LSH positions")
    ordered = tuple(sorted(chosen))
    return ordered, tuple((p % PDQ_SIDE) * PDQ_SIDE + p // PDQ_SIDE for p in ordered)


DEFAULT_PSI_PARAMETERS = PsiParameters()
"""The measured defaults (bench/psi_recall.py; docs/detection.md)."""


def _bit_string(pdq: bytes) -> str:
    """The hash as 256 characters '0'/'1', bit 0 first: sampling positions is then a C-level
    item lookup per table instead of a Python loop over bits."""
    if not isinstance(pdq, bytes) or len(pdq) != PDQ_BYTES:
        raise DecodeError(f"a PDQ hash is {PDQ_BYTES} bytes")
    return format(int.from_bytes(pdq, "big"), f"0{PDQ_BITS}b")


def _table_key(bits: str, table: int, params: PsiParameters) -> bytes:
    direct, transposed = params._samplers[table]
    sampled = min(int("".join(direct(bits)), 2), int("".join(transposed(bits)), 2))
    return _KEY_DOMAIN + u8(table) + sampled.to_bytes((params.bits_per_key + 7) // 8, "big")


def list_keys(pdq: bytes, params: PsiParameters) -> list[bytes]:
    """The K keys of a listed PDQ hash (32 bytes), one per table, table order.

    Raises:
        DecodeError: ``pdq`` is not 32 bytes.
    """
    bits = _bit_string(pdq)
    return [_table_key(bits, k, params) for k in range(params.tables)]


def query_keys(dihedral: Sequence[bytes], params: PsiParameters) -> list[bytes]:
    """The 4·K query keys of an image: for each orientation class in
    ``params.orientation_classes`` order, that class hash's K keys in table order.

    ``dihedral`` is either the 8 hashes in pdqhash.compute_dihedral order (the class indices
    are picked out) or exactly the class hashes, one per class in class order. Recommended
    (measured, docs/detection.md): the class hashes computed in pixel space, i.e.
    ``pdqhash.compute`` of the image, of its 180-degree rotation and of its vertical and
    horizontal mirror images; PDQ's dihedral hashes of the image give lower recall on rotated
    and mirrored copies because the DCT-domain flips are not exact after resampling.

    Raises:
        DecodeError: neither 8 nor one hash per class, or a hash that is not 32 bytes.
    """
    classes = params.orientation_classes
    if len(dihedral) == DIHEDRAL_COUNT:
        chosen = [dihedral[c] for c in classes]
    elif len(dihedral) == len(classes):
        chosen = list(dihedral)
    else:
        raise DecodeError(f"an image has {DIHEDRAL_COUNT} dihedral or {len(classes)} class hashes")
    keys: list[bytes] = []
    for pdq in chosen:
        keys.extend(list_keys(pdq, params))
    return keys


def hash_to_group(key: bytes) -> bytes:
    """H(k): a point of the prime-order subgroup, from_uniform(SHA-512(domain || k)[:32])."""
    return primitives.ed25519_point_from_uniform(
        primitives.sha512(_HASH_TO_GROUP_DOMAIN + key)[:POINT_LEN]
    )


def generate_list_secret(rng: RandomSource | None = None) -> bytes:
    """A fresh server secret: 32 random bytes, X25519-clamped (so that ``x25519(a, u(Q))`` and
    ``a·Q`` on edwards25519 are the same multiplication)."""
    raw = bytearray(draw_random(random_source(rng), SECRET_LEN))
    raw[0] &= 248
    raw[31] &= 127
    raw[31] |= 64
    return bytes(raw)


def check_list_secret(secret: bytes) -> bytes:
    """``secret`` itself if it is a clamped 32-byte scalar; else `InvalidKeyError`."""
    if (
        not isinstance(secret, bytes)
        or len(secret) != SECRET_LEN
        or secret[0] & 7
        or secret[31] & 128
        or not secret[31] & 64
    ):
        raise InvalidKeyError("the list secret is a clamped 32-byte X25519 scalar")
    return secret


def _okvs_slots(seed: bytes, key: bytes, slot_count: int) -> tuple[int, int, int]:
    """The three slots of ``key``: one in each third of the table, so they are distinct."""
    segment = slot_count // OKVS_HASHES
    d = primitives.shake256(_OKVS_DOMAIN + seed + key, 8 * OKVS_HASHES)
    return (
        int.from_bytes(d[0:8], "big") % segment,
        segment + int.from_bytes(d[8:16], "big") % segment,
        2 * segment + int.from_bytes(d[16:24], "big") % segment,
    )


def okvs_slot_count(keys: int) -> int:
    """The table size for ``keys`` keys: ~1.25 per key plus slack, a multiple of 3."""
    wanted = int(keys * OKVS_EXPANSION) + OKVS_SLACK
    return wanted + (-wanted) % OKVS_HASHES


def _peel(slot_sets: list[tuple[int, int, int]], slot_count: int) -> list[tuple[int, int]] | None:
    """Peeling order of a 3-uniform hypergraph: (key index, its free slot) pairs, or None when
    a 2-core remains. Hand-written: no library offers an OKVS whose values are group elements
    (the OKVS libraries encode field elements or bit strings), and the solver is a few lines
    of bookkeeping with no secret-dependent arithmetic."""
    degree = [0] * slot_count
    xor_keys = [0] * slot_count  # XOR of the indices of the keys still on a slot
    for i, slots in enumerate(slot_sets):
        for s in slots:
            degree[s] += 1
            xor_keys[s] ^= i
    stack = [s for s in range(slot_count) if degree[s] == 1]
    order: list[tuple[int, int]] = []
    while stack:
        s = stack.pop()
        if degree[s] != 1:
            continue
        i = xor_keys[s]
        order.append((i, s))
        for other in slot_sets[i]:
            degree[other] -= 1
            xor_keys[other] ^= i
            if degree[other] == 1:
                stack.append(other)
    return order if len(order) == len(slot_sets) else None


class BlindedList:
    """The device-held blinded list: parameters, version, ``P = a·G`` and the OKVS table.

    Immutable. ``digest()`` (SHA-256 of ``encode()``) is what the server signs and publishes
    and what every device compares before using a list. The constructor trusts its arguments
    (it is what `build` and `decode` return through); bytes from elsewhere go through `decode`.
    """

    def __init__(
        self,
        params: PsiParameters,
        version: int,
        okvs_seed: bytes,
        public: bytes,
        slots: bytes,
    ) -> None:
        self.params = params
        self.version = version
        self.okvs_seed = okvs_seed
        self.public = public
        self.slots = slots
        self.slot_count = len(slots) // POINT_LEN

    @classmethod
    def build(
        cls,
        keys: Iterable[bytes],
        secret: bytes,
        params: PsiParameters,
        version: int,
        rng: RandomSource | None = None,
    ) -> BlindedList:
        """Blind and encode ``keys`` (the `list_keys` of every listed hash; duplicates are
        merged) under the server ``secret``.

        Raises:
            InvalidKeyError: ``secret`` is not a clamped scalar.
            DetectionListError: ``version`` outside u32, too many keys, or peeling failed
                `OKVS_MAX_ATTEMPTS` times (astronomically unlikely).
        """
        check_list_secret(secret)
        if not 0 <= version <= 0xFFFF_FFFF:
            raise DetectionListError("list version is a u32")
        source = random_source(rng)
        unique = sorted(set(keys))
        slot_count = okvs_slot_count(len(unique))
        if slot_count > MAX_LIST_SLOTS:
            raise DetectionListError("the list is larger than a device may hold")
        targets = [primitives.ed25519_scalarmult(secret, hash_to_group(k)) for k in unique]
        for _ in range(OKVS_MAX_ATTEMPTS):
            seed = draw_random(source, OKVS_SEED_LEN)
            slot_sets = [_okvs_slots(seed, k, slot_count) for k in unique]
            order = _peel(slot_sets, slot_count)
            if order is not None:
                break
        else:
            raise DetectionListError("the OKVS did not peel; retry with other randomness")
        table = [
            primitives.ed25519_point_from_uniform(draw_random(source, POINT_LEN))
            for _ in range(slot_count)
        ]
        for i, free in reversed(order):
            point = targets[i]
            for s in slot_sets[i]:
                if s != free:
                    point = primitives.ed25519_point_sub(point, table[s])
            table[free] = point
        public = primitives.ed25519_scalarmult_base(secret)
        return cls(params, version, seed, public, b"".join(table))

    def slot(self, index: int) -> bytes:
        return self.slots[index * POINT_LEN : (index + 1) * POINT_LEN]

    def lookup(self, key: bytes) -> bytes:
        """The OKVS value of ``key``: ``a·H(key)`` if listed, an unrelated point otherwise.
        Raises `InvalidKeyError` if a slot is not a curve point (a corrupt list)."""
        a, b, c = _okvs_slots(self.okvs_seed, key, self.slot_count)
        return primitives.ed25519_point_add(
            primitives.ed25519_point_add(self.slot(a), self.slot(b)), self.slot(c)
        )

    def encode(self) -> bytes:
        """The canonical bytes: format version, parameters, list version, OKVS seed, P, slots."""
        return b"".join(
            [
                u8(LIST_FORMAT_VERSION),
                self.params.encode(),
                u32(self.version),
                self.okvs_seed,
                self.public,
                u32(self.slot_count),
                self.slots,
            ]
        )

    @cached_property
    def _digest(self) -> bytes:
        return primitives.sha256(self.encode())

    def digest(self) -> bytes:
        """SHA-256 of `encode()`: the list's published commitment."""
        return self._digest

    @classmethod
    def decode(cls, data: bytes, *, check_points: bool = False) -> BlindedList:
        """Parse `encode`'s output. Checks the structure and ``P``; with ``check_points`` also
        that every slot is a valid prime-order point (docs/detection.md has the cost; the
        voucher builder checks each point it uses in any case).

        Raises:
            OversizedError: more than `MAX_LIST_SLOTS` slots.
            UnsupportedVersionError: an unknown format version.
            TruncatedError / DecodeError: malformed or trailing bytes.
            DetectionListError: parameters out of range, a slot count that is not a valid
                table size, or an invalid point.
        """
        reader = Reader(data, "blinded list")
        if reader.u8() != LIST_FORMAT_VERSION:
            raise UnsupportedVersionError("unknown blinded list format")
        params = PsiParameters.read(reader)
        version = reader.u32()
        seed = reader.take(OKVS_SEED_LEN)
        public = reader.take(POINT_LEN)
        count = reader.u32()
        if count > MAX_LIST_SLOTS:
            raise OversizedError("the blinded list has more slots than a device may hold")
        if count < OKVS_HASHES or count % OKVS_HASHES:
            raise DetectionListError("the slot count is not a valid table size")
        slots = reader.take(count * POINT_LEN)
        reader.finish()
        if not primitives.ed25519_point_is_valid(public):
            raise DetectionListError("the list's public point is not a valid point")
        blinded = cls(params, version, seed, public, slots)
        if check_points:
            blinded.check_points()
        return blinded

    def check_points(self) -> None:
        """Raise `DetectionListError` unless every slot is a valid prime-order point."""
        for i in range(self.slot_count):
            if not primitives.ed25519_point_is_valid(self.slot(i)):
                raise DetectionListError(f"slot {i} is not a valid point")

    def __repr__(self) -> str:
        return f"BlindedList(version={self.version}, slots={self.slot_count})"
