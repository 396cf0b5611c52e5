"""In-memory indexes of hash-bank entries: PDQ within a Hamming radius, and exact MD5/SHA-256.

`PdqIndex` answers "which listed PDQ hashes lie within distance d of this one" exactly (no miss
inside the radius), by multi-index hashing (Norouzi, Punjani & Fleet, "Fast Search in Hamming
Space with Multi-Index Hashing", CVPR 2012): the 256 bits are cut into 16 segments of 16 bits,
and by pigeonhole two hashes within distance d agree to within ``d // 16`` bits on at least one
segment (if every segment differed in more, the total would be at least 16 * (d // 16 + 1) > d).
So the candidates are the entries whose segment j lies within ``d // 16`` bits of the query's
segment j for some j -- one table lookup per segment and flip pattern, 17 per segment at
d = 31 -- and each candidate's full distance is then checked.

Why by hand over numpy rather than faiss: faiss's own multi-index hash (`IndexBinaryMultiHash`,
which threatexchange's `PDQIndex` wraps) and its exhaustive `IndexBinaryFlat` both took 1.4-1.8
ms per query at 1M hashes on the benchmark machine, the former spending ~400 ns per candidate;
the same algorithm as sorted numpy arrays (tables in CSR form, candidates gathered and checked in
bulk) measures several times faster, with ~104 bytes per hash. bench/detection.py measures both
side by side and checks that they return the same matches.

Concurrency: queries never take a lock. Everything a query reads is one immutable `_View`
(arrays never written after construction), read from ``self._view`` once per query; writers
serialise on a lock, build a new view beside the old one and swap the reference (one atomic
attribute store). Recent changes live in a small brute-force "delta" beside the multi-index
"base" (plus the set of base entries removed or replaced since); when the delta outgrows
`_delta_limit` the writer rebuilds the base from both and swaps it in, while queries running
meanwhile finish on the view they started with.

`ExactHashIndex` maps MD5 and SHA-256 digests to entries (a dict of immutable sets, swapped the
same way).

Both are wired together over the hash banks, cached by list version, in
`tidings.safety.bank_match` (`BankIndex.match_media`: a reported attachment after its franking
verification; `BankIndex.match_pdq`: a recovered detection image).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from tidings.media.digests import DIGEST_SIZES, ContentDigests, DigestKind
from tidings.media.pdq import PdqHash
from tidings.wire.pdq import PDQ_BITS, PDQ_BYTES, PDQ_MATCH_DISTANCE

SEGMENTS: Final = 16
SEGMENT_BITS: Final = PDQ_BITS // SEGMENTS
_BUCKETS: Final = 1 << SEGMENT_BITS
_WORDS: Final = PDQ_BYTES // 8
MAX_MULTI_INDEX_FLIPS: Final = 2
"""Radii with more flips per segment than this (d >= 48) scan every hash instead: the table
lookups would then touch more entries than a scan does."""
DELTA_MIN: Final = 4096
"""The delta (entries added, removed or replaced since the last rebuild) may hold at least this
many changes before the base is rebuilt; a scan of 4096 hashes costs a few tens of µs."""
DELTA_FRACTION: Final = 1024
"""...or one change per this many base entries, so that one-at-a-time additions to a large
index rebuild it rarely (amortised cost per addition: a rebuild / (n / 1024))."""

# The flip patterns within 0, 1, 2 bits of a 16-bit segment, fewest flips first.
_FLIP_MASKS: Final = tuple(
    np.flatnonzero(np.bitwise_count(np.arange(_BUCKETS, dtype=np.uint16)) <= flips).astype(np.int64)
    for flips in range(MAX_MULTI_INDEX_FLIPS + 1)
)
_SEGMENT_BASES: Final = np.arange(SEGMENTS, dtype=np.int64) * (_BUCKETS + 1)

_Ids = NDArray[np.int64]
_Rows = NDArray[np.uint8]  # (n, 32): one hash per row, bytes as in PdqHash.bits
_EMPTY_IDS: Final = np.zeros(0, dtype=np.int64)
_EMPTY_ROWS: Final = np.zeros((0, PDQ_BYTES), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class PdqMatch:
    """One listed entry within the queried radius, and its Hamming distance to the query
    (for `PdqIndex.query_dihedral`, the smallest over the query's hashes)."""

    entry_id: int
    distance: int

    @property
    def rank(self) -> tuple[int, int]:
        """The order results come in: nearest first, ties by entry id."""
        return self.distance, self.entry_id


def _by_rank(match: PdqMatch) -> tuple[int, int]:
    return match.rank


def _check_radius(max_distance: int) -> None:
    if not 0 <= max_distance <= PDQ_BITS:
        raise ValueError(f"max_distance must be 0-{PDQ_BITS}, not {max_distance}")


def _words(rows: _Rows) -> NDArray[np.uint64]:
    """The hashes as (n, 4) 64-bit words: one cache line per hash for the gathers below."""
    return np.ascontiguousarray(rows).view(np.uint64).reshape(-1, _WORDS)


def _distances(words: NDArray[np.uint64], query: NDArray[np.uint64]) -> NDArray[np.uint32]:
    """Hamming distance between each row of ``words`` (k, 4) and ``query`` (4,)."""
    # Four per-word popcounts (bytes, <= 64 each) summed in two steps through one uint32 per
    # row: a plain .sum(axis=1) over an axis of 4 costs twice as much, and one uint8 overflows
    # at 256 (a complement).
    counts: NDArray[np.uint32] = np.bitwise_count(words ^ query).view(np.uint32).ravel()
    pairs = (counts & 0x00FF00FF) + ((counts >> 8) & 0x00FF00FF)
    total: NDArray[np.uint32] = (pairs & 0xFFFF) + (pairs >> 16)
    return total


_Found = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint32]]
"""(query index, entry id, distance) of every pair within the radius."""


class _Scan:
    """Exact search by computing every distance: the delta, and very wide radii."""

    def __init__(self, ids: _Ids, rows: _Rows) -> None:
        self.ids = ids
        self.words = _words(rows)
        self._sorted_ids = np.sort(ids)

    @property
    def rows(self) -> _Rows:
        """The hashes as (n, 32) bytes (a view of the words)."""
        return self.words.view(np.uint8).reshape(-1, PDQ_BYTES)

    def holds(self, ids: _Ids) -> NDArray[np.bool_]:
        """Which of ``ids`` are listed here (a binary search each, not a scan)."""
        at = np.searchsorted(self._sorted_ids, ids)
        found = at < len(self._sorted_ids)
        found[found] = self._sorted_ids[at[found]] == ids[found]
        return found

    def search(self, queries: _Rows, max_distance: int) -> _Found:
        parts = [self._search_one(query, max_distance) for query in _words(queries)]
        query_of = np.repeat(np.arange(len(parts), dtype=np.int64), [len(p[0]) for p in parts])
        if not parts:
            return query_of, _EMPTY_IDS, np.zeros(0, dtype=np.uint32)
        positions = np.concatenate([p[0] for p in parts])
        distances = np.concatenate([p[1] for p in parts])
        return query_of, self.ids.take(positions), distances

    def _search_one(
        self, query: NDArray[np.uint64], max_distance: int
    ) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
        """(row, distance) of each row within ``max_distance`` of one query's words."""
        distance = _distances(self.words, query)
        keep = np.flatnonzero(distance <= max_distance)
        return keep, distance[keep]


class _MultiIndex(_Scan):
    """Exact search within a radius by multi-index hashing (see the module docstring).

    Tables in CSR form: for segment j, ``positions[offsets[j, v] : offsets[j, v + 1]]`` are the
    rows whose segment j equals v (the offsets of segment j start at ``j * n``)."""

    def __init__(self, ids: _Ids, rows: _Rows) -> None:
        super().__init__(ids, rows)
        n = len(ids)
        segments = self.rows.view(">u2").reshape(n, SEGMENTS)  # big-endian: bit order of hex
        self.positions = np.empty(SEGMENTS * n, dtype=np.int32 if n < 2**31 else np.int64)
        offsets = np.zeros((SEGMENTS, _BUCKETS + 1), dtype=np.int64)
        for j in range(SEGMENTS):
            column = segments[:, j]
            # A stable sort of 16-bit keys is a radix sort in numpy: O(n).
            self.positions[j * n : (j + 1) * n] = np.argsort(column, kind="stable")
            np.cumsum(np.bincount(column, minlength=_BUCKETS), out=offsets[j, 1:])
            offsets[j] += j * n
        self.offsets = offsets.ravel()

    def _search_one(
        self, query: NDArray[np.uint64], max_distance: int
    ) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
        flips = max_distance // SEGMENTS
        if flips > MAX_MULTI_INDEX_FLIPS or len(self.ids) == 0:
            return super()._search_one(query, max_distance)
        segments = query.view(">u2").astype(np.int64)
        # The bucket of every (segment, flip pattern), as an index into the flat offsets.
        keys = ((segments[:, None] ^ _FLIP_MASKS[flips][None, :]) + _SEGMENT_BASES[:, None]).ravel()
        starts = self.offsets.take(keys)
        lengths = self.offsets.take(keys + 1) - starts
        # The concatenation of the ranges [start, start + length), without a Python loop.
        run_offsets = np.cumsum(lengths) - lengths
        slots = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(
            starts - run_offsets, lengths
        )
        candidates = self.positions.take(slots)
        distance = _distances(self.words.take(candidates, axis=0), query)
        keep = np.flatnonzero(distance <= max_distance)
        rows, distance = candidates[keep].astype(np.int64), distance[keep]
        if len(rows) > 1:  # a hash can be a candidate through several segments: keep it once
            rows, first = np.unique(rows, return_index=True)
            distance = distance[first]
        return rows, distance


@dataclass(frozen=True, slots=True)
class _View:
    """Everything one query reads; never modified once built (see the module docstring)."""

    base: _MultiIndex
    stale: frozenset[int]  # base entries removed or replaced since the base was built
    delta: _Scan  # entries added or replaced since

    @property
    def size(self) -> int:
        return len(self.base.ids) - len(self.stale) + len(self.delta.ids)

    def search(self, queries: _Rows, max_distance: int) -> dict[int, list[PdqMatch]]:
        """Matches per query index, each list sorted by (distance, entry id)."""
        found: dict[int, list[PdqMatch]] = {}
        for part, skip in ((self.base, self.stale), (self.delta, frozenset[int]())):
            if len(part.ids) == 0:
                continue
            query_of, ids, distance = part.search(queries, max_distance)
            for qi, entry_id, d in zip(
                query_of.tolist(), ids.tolist(), distance.tolist(), strict=True
            ):
                if entry_id not in skip:
                    found.setdefault(qi, []).append(PdqMatch(entry_id, d))
        for matches in found.values():
            matches.sort(key=_by_rank)
        return found


def _rows_of(hashes: Sequence[PdqHash]) -> _Rows:
    data = b"".join(h.bits for h in hashes)
    return np.frombuffer(data, dtype=np.uint8).reshape(len(hashes), PDQ_BYTES)


class PdqIndex:
    """Listed PDQ hashes by entry id, searched exactly within a Hamming radius.

    Entry ids are the caller's (a bank entry's primary key, 64-bit signed). Adding an id that
    is present replaces its hash. Thread-safe: any number of concurrent queries, writers
    serialised (see the module docstring). Hash quality is not checked here: refuse unusable
    hashes (`PdqHash.is_usable`) before listing or querying them.
    """

    def __init__(self, entries: Iterable[tuple[int, PdqHash]] = ()) -> None:
        self._lock = threading.Lock()
        empty = _View(
            _MultiIndex(_EMPTY_IDS, _EMPTY_ROWS), frozenset(), _Scan(_EMPTY_IDS, _EMPTY_ROWS)
        )
        self._view = empty
        self.add_many(entries)

    def __len__(self) -> int:
        return self._view.size

    def add(self, entry_id: int, pdq: PdqHash) -> None:
        """List ``pdq`` under ``entry_id`` (replacing the hash listed under it, if any)."""
        self.add_many(((entry_id, pdq),))

    def add_many(self, entries: Iterable[tuple[int, PdqHash]]) -> None:
        """List every (entry id, hash) of ``entries``; a later pair for an id wins. Prefer this
        to repeated `add` for a bank import: one rebuild at most, however many entries.

        Raises:
            OverflowError: an entry id does not fit in 64 signed bits.
        """
        latest = dict(entries)
        if not latest:
            return
        ids = np.fromiter(latest, dtype=np.int64, count=len(latest))
        rows = _rows_of(list(latest.values()))
        with self._lock:
            self._publish(self._view, ids, rows, drop=ids)

    def remove(self, entry_id: int) -> bool:
        """Stop matching ``entry_id``; whether it was listed."""
        with self._lock:
            view = self._view
            drop = np.array([entry_id], dtype=np.int64)
            listed = bool(view.delta.holds(drop)[0]) or (
                entry_id not in view.stale and bool(view.base.holds(drop)[0])
            )
            if listed:
                self._publish(view, _EMPTY_IDS, _EMPTY_ROWS, drop=drop)
            return listed

    def query(self, pdq: PdqHash, max_distance: int = PDQ_MATCH_DISTANCE) -> list[PdqMatch]:
        """Every listed entry within ``max_distance`` of ``pdq``, nearest first (ties by id).

        Raises:
            ValueError: ``max_distance`` outside 0-256.
        """
        _check_radius(max_distance)
        return self._view.search(_rows_of([pdq]), max_distance).get(0, [])

    def query_dihedral(
        self, hashes: Sequence[PdqHash], max_distance: int = PDQ_MATCH_DISTANCE
    ) -> list[PdqMatch]:
        """Every listed entry within ``max_distance`` of any of ``hashes`` (typically the 8 of
        `tidings.media.pdq.dihedral_hashes`), once, with its smallest distance; nearest first.

        Raises:
            ValueError: ``max_distance`` outside 0-256.
        """
        _check_radius(max_distance)
        if not hashes:
            return []
        best: dict[int, int] = {}
        for matches in self._view.search(_rows_of(hashes), max_distance).values():
            for match in matches:
                if match.distance < best.get(match.entry_id, PDQ_BITS + 1):
                    best[match.entry_id] = match.distance
        return sorted((PdqMatch(entry_id, d) for entry_id, d in best.items()), key=_by_rank)

    def _delta_limit(self, base_size: int) -> int:
        return max(DELTA_MIN, base_size // DELTA_FRACTION)

    def _publish(self, view: _View, ids: _Ids, rows: _Rows, *, drop: _Ids) -> None:
        """Swap in the view with the entries ``drop`` removed and (``ids``, ``rows``) added;
        rebuild the base when the changes outgrow the delta. Caller holds the lock."""
        stale = view.stale | frozenset(drop[view.base.holds(drop)].tolist())
        kept = ~np.isin(view.delta.ids, drop)
        delta_ids = np.concatenate([view.delta.ids[kept], ids])
        delta_rows = np.concatenate([view.delta.rows[kept], rows])  # the delta is small
        base = view.base
        if len(stale) + len(delta_ids) > self._delta_limit(len(base.ids)):
            live = ~np.isin(base.ids, np.fromiter(stale, dtype=np.int64, count=len(stale)))
            base = _MultiIndex(
                np.concatenate([base.ids[live], delta_ids]),
                np.concatenate([base.rows[live], delta_rows]),
            )
            stale, delta_ids, delta_rows = frozenset(), _EMPTY_IDS, _EMPTY_ROWS
        self._view = _View(base, stale, _Scan(delta_ids, delta_rows))


@dataclass(frozen=True, slots=True, order=True)
class ExactMatch:
    """A listed entry whose digest equals the queried content's."""

    entry_id: int
    kind: DigestKind


class ExactHashIndex:
    """Listed MD5 and SHA-256 digests by entry id. Thread-safe in the same way as `PdqIndex`:
    lookups read immutable sets; writers serialise and replace them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_digest: dict[tuple[DigestKind, bytes], frozenset[int]] = {}
        self._by_entry: dict[int, tuple[DigestKind, bytes]] = {}

    def __len__(self) -> int:
        return len(self._by_entry)

    def add(self, entry_id: int, kind: DigestKind, digest: bytes) -> None:
        """List ``digest`` (raw bytes of ``kind``) under ``entry_id``, replacing what was.

        Raises:
            ValueError: ``digest`` has the wrong length for ``kind``.
        """
        if len(digest) != DIGEST_SIZES[kind]:
            raise ValueError(f"a {kind} digest is {DIGEST_SIZES[kind]} bytes")
        with self._lock:
            self._remove(entry_id)
            key = (kind, bytes(digest))
            self._by_digest[key] = self._by_digest.get(key, frozenset()) | {entry_id}
            self._by_entry[entry_id] = key

    def remove(self, entry_id: int) -> bool:
        """Stop matching ``entry_id``; whether it was listed."""
        with self._lock:
            return self._remove(entry_id)

    def query(self, digests: ContentDigests) -> list[ExactMatch]:
        """Every listed entry whose digest equals one of ``digests``, by entry id."""
        found = [
            ExactMatch(entry_id, kind)
            for kind in DIGEST_SIZES
            for entry_id in self._by_digest.get((kind, digests.of_kind(kind)), frozenset())
        ]
        return sorted(found)

    def _remove(self, entry_id: int) -> bool:
        key = self._by_entry.pop(entry_id, None)
        if key is None:
            return False
        rest = self._by_digest[key] - {entry_id}
        if rest:
            self._by_digest[key] = rest
        else:
            del self._by_digest[key]
        return True
