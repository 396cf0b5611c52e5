"""PdqIndex returns exactly what a brute-force scan returns (no miss inside the radius, nothing
outside it) through additions, replacements, removals and rebuilds; ExactHashIndex likewise."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.media.digests import content_digests
from tidings.media.pdq import PDQ_MATCH_DISTANCE, PdqHash
from tidings.safety import pdq_index
from tidings.safety.pdq_index import ExactHashIndex, ExactMatch, PdqIndex, PdqMatch


def _flip(h: PdqHash, bits: list[int]) -> PdqHash:
    out = bytearray(h.bits)
    for bit in bits:
        out[bit // 8] ^= 0x80 >> (bit % 8)
    return PdqHash(bytes(out))


def _brute_force(listed: dict[int, PdqHash], query: PdqHash, radius: int) -> list[PdqMatch]:
    return sorted(
        (
            PdqMatch(entry_id, h.distance(query))
            for entry_id, h in listed.items()
            if h.distance(query) <= radius
        ),
        key=lambda m: (m.distance, m.entry_id),
    )


hashes = st.binary(min_size=32, max_size=32).map(PdqHash)


@st.composite
def listed_and_queries(draw: st.DrawFn) -> tuple[dict[int, PdqHash], list[PdqHash], int]:
    """A list of hashes, queries near some of them (0-48 bits away) and far from all, and a
    radius (up to 64: the multi-index with 0, 1 and 2 flips per segment, and the scan)."""
    listed = draw(st.dictionaries(st.integers(-(2**63), 2**63 - 1), hashes, max_size=60))
    queries = draw(st.lists(hashes, max_size=3))
    for h in draw(
        st.lists(st.sampled_from(list(listed.values())), max_size=5) if listed else st.just([])
    ):
        bits = draw(st.lists(st.integers(0, 255), unique=True, max_size=48))
        queries.append(_flip(h, bits))
    radius = draw(st.one_of(st.just(PDQ_MATCH_DISTANCE), st.integers(0, 64)))
    return listed, queries, radius


@settings(max_examples=300, deadline=None)
@given(listed_and_queries())
def test_queries_equal_brute_force(case: tuple[dict[int, PdqHash], list[PdqHash], int]) -> None:
    listed, queries, radius = case
    index = PdqIndex(listed.items())
    assert len(index) == len(listed)
    for query in queries:
        assert index.query(query, radius) == _brute_force(listed, query, radius)


def test_worst_case_spreads_across_segments_are_found() -> None:
    """Distance 31 spread as 2 bits in 15 segments and 1 in the last (the pigeonhole's edge),
    and 32 as 2 bits in every segment (found only from radius 32, by 2 flips per segment)."""
    rng = random.Random(7)
    base = PdqHash(rng.randbytes(32))
    at_31 = _flip(base, [16 * s + b for s in range(16) for b in ((3, 11) if s < 15 else (5,))])
    at_32 = _flip(base, [16 * s + b for s in range(16) for b in (0, 15)])
    assert (base.distance(at_31), base.distance(at_32)) == (31, 32)
    others = {i: PdqHash(rng.randbytes(32)) for i in range(1, 5000)}
    index = PdqIndex([(0, base), *others.items()])
    assert index.query(at_31) == [PdqMatch(0, 31)]
    assert index.query(at_32) == []
    assert index.query(at_32, 32) == [PdqMatch(0, 32)]
    assert index.query(_flip(base, list(range(0, 256, 2)))) == []  # 128 bits away
    complement = _flip(base, list(range(256)))
    assert index.query(complement, 256)[-1] == PdqMatch(0, 256)  # no popcount overflow


def test_results_are_sorted_by_distance_then_id_and_duplicates_are_kept() -> None:
    h = PdqHash(bytes(32))
    index = PdqIndex([(9, _flip(h, [1, 2])), (4, _flip(h, [3])), (7, h), (2, h)])
    assert index.query(h) == [PdqMatch(2, 0), PdqMatch(7, 0), PdqMatch(4, 1), PdqMatch(9, 2)]


def test_add_replaces_remove_forgets_and_len_counts() -> None:
    a, b = PdqHash(bytes(32)), PdqHash(bytes([0xFF]) * 32)
    index = PdqIndex()
    assert len(index) == 0 and index.query(a) == []
    index.add(1, a)
    index.add(2, a)
    assert [m.entry_id for m in index.query(a)] == [1, 2]
    index.add(1, b)  # replaced: 1 now matches b only
    assert [m.entry_id for m in index.query(a)] == [2]
    assert index.query(b) == [PdqMatch(1, 0)]
    assert len(index) == 2
    assert index.remove(2) is True
    assert index.remove(2) is False
    assert index.remove(99) is False
    assert index.query(a) == [] and len(index) == 1


@pytest.mark.parametrize("delta_min", [1, 3, 50])
def test_random_operations_match_a_model_across_rebuilds(
    monkeypatch: pytest.MonkeyPatch, delta_min: int
) -> None:
    """Small delta limits force the rebuild path (delta folded into a new base) often."""
    monkeypatch.setattr(pdq_index, "DELTA_MIN", delta_min)
    rng = random.Random(delta_min)
    centre = PdqHash(rng.randbytes(32))
    model: dict[int, PdqHash] = {}
    index = PdqIndex()
    for step in range(400):
        entry_id = rng.randrange(60)
        action = rng.random()
        if action < 0.55:
            h = _flip(centre, rng.sample(range(256), rng.randrange(40)))
            index.add(entry_id, h)
            model[entry_id] = h
        elif action < 0.8:
            assert index.remove(entry_id) == (model.pop(entry_id, None) is not None)
        else:
            batch = {rng.randrange(60): _flip(centre, rng.sample(range(256), 20)) for _ in range(5)}
            index.add_many(batch.items())
            model.update(batch)
        assert len(index) == len(model), step
        query = _flip(centre, rng.sample(range(256), rng.randrange(12)))
        assert index.query(query) == _brute_force(model, query, PDQ_MATCH_DISTANCE), step


def test_query_dihedral_reports_each_entry_once_at_its_best_distance() -> None:
    rng = random.Random(3)
    turned = [PdqHash(rng.randbytes(32)) for _ in range(8)]
    index = PdqIndex(
        [
            (1, _flip(turned[5], [0, 1, 2])),
            (2, _flip(turned[0], [9])),
            (3, PdqHash(rng.randbytes(32))),
        ]
    )
    index.add(4, _flip(turned[5], [40]))
    assert index.query_dihedral(turned) == [PdqMatch(2, 1), PdqMatch(4, 1), PdqMatch(1, 3)]
    assert index.query_dihedral([]) == []
    # An entry near two of the variants: the smaller distance.
    index.add(5, turned[2])
    both = [_flip(turned[2], [7, 8]), turned[2]]
    assert [m for m in index.query_dihedral(both) if m.entry_id == 5] == [PdqMatch(5, 0)]


def test_radius_outside_the_hash_is_refused() -> None:
    index = PdqIndex()
    for bad in (-1, 257):
        with pytest.raises(ValueError):
            index.query(PdqHash(bytes(32)), bad)


def test_queries_run_while_writers_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers never see a half-built view: a listed hash is found by every query while
    another thread adds and removes entries and the base is rebuilt again and again."""
    monkeypatch.setattr(pdq_index, "DELTA_MIN", 16)
    rng = random.Random(11)
    kept = PdqHash(rng.randbytes(32))
    index = PdqIndex([(0, kept), *((i, PdqHash(rng.randbytes(32))) for i in range(1, 20000))])
    stop = threading.Event()
    failures: list[object] = []

    def read() -> None:
        while not stop.is_set():
            try:
                if PdqMatch(0, 0) not in index.query(kept):
                    failures.append("missed")
            except Exception as exc:
                failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for i in range(20000, 20600):
            index.add(i, PdqHash(rng.randbytes(32)))
            if i % 3 == 0:
                index.remove(i - 1)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert failures == []
    assert len(index) == 20000 + 600 - 200


# --- exact digests -------------------------------------------------------------------------------


def test_exact_index_matches_md5_and_sha256() -> None:
    photo, other = content_digests(b"photo bytes"), content_digests(b"other bytes")
    index = ExactHashIndex()
    index.add(1, "md5", photo.md5)
    index.add(2, "sha256", photo.sha256)
    index.add(3, "sha256", photo.sha256)
    index.add(4, "md5", other.md5)
    assert len(index) == 4
    assert index.query(photo) == [
        ExactMatch(1, "md5"),
        ExactMatch(2, "sha256"),
        ExactMatch(3, "sha256"),
    ]
    index.add(1, "md5", other.md5)  # replaced
    assert index.query(photo) == [ExactMatch(2, "sha256"), ExactMatch(3, "sha256")]
    assert index.query(other) == [ExactMatch(1, "md5"), ExactMatch(4, "md5")]
    assert index.remove(2) is True and index.remove(2) is False
    assert index.query(photo) == [ExactMatch(3, "sha256")]
    assert len(index) == 3
    with pytest.raises(ValueError):
        index.add(5, "md5", photo.sha256)
