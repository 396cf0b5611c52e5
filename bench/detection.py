"""Known-image detection, clear-text matching: Tidings' PDQ index beside threatexchange's, in one
run (issue 10: "query time at 1M hashes no slower than threatexchange's PDQ index, measured
beside it"; "10M PDQ hashes in < 8 GB").

    .venv/bin/python bench/detection.py          # 1M hashes, 1,000 queries a kind; 10M for memory
    .venv/bin/python bench/detection.py --quick  # 100k hashes, 200 queries; 1M for memory
    .venv/bin/python bench/detection.py --json   # figures as JSON as well

Indexes, each built from the same random 256-bit hashes (entry id = position) and asked the
same queries at radius 31 (`PDQ_MATCH_DISTANCE`), one query per call, interleaved:

- Tidings `PdqIndex` (tidings.safety.pdq_index: multi-index hashing over numpy);
- threatexchange `PDQIndex`: what `PdqSignal.get_index_cls()` returns, faiss
  `IndexBinaryMultiHash` (16 tables of 16 bits, 1 flip: exact at 31);
- threatexchange `PDQFlatHashIndex` (faiss `IndexBinaryFlat`, exhaustive), asked at radius 31
  (its `PDQFlatIndex` wrapper hard-codes 52, which is another question);
- threatexchange `PDQIndex2` (faiss `IndexFlatL2` over 256 floats, exhaustive): fewer queries,
  it is two orders of magnitude slower.

Query kinds: (a) random hashes (almost never a match: the common case of an innocent image) and
(b) a listed hash with 0-31 random bits flipped (always a match). Every index must return the
same (entry, distance) set for every query; the run fails otherwise. faiss runs on one OpenMP
thread (`--faiss-threads`), like the numpy index: per-core figures.

Hashing: `hash_image` and `dihedral_hashes` of the reference photograph
(Meta's bridge-mods/aaa-orig.jpg beside the checkout in ../shared, a 1600 x 1004 JPEG, or
--photo), median of 20.

Memory: a subprocess builds a `PdqIndex` of `--memory-hashes` random hashes and reports its RSS
before and after (input freed), and the peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tidings.media.pdq import PDQ_MATCH_DISTANCE, PdqHash
from tidings.safety.pdq_index import PdqIndex

Matches = frozenset[tuple[int, int]]
Query = Callable[[int], Matches]


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _random_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)


def _near_rows(rows: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` listed hashes, each with 0-31 distinct random bits flipped."""
    rng = np.random.default_rng(seed)
    out = rows[rng.integers(0, len(rows), count)].copy()
    for row in out:
        for bit in rng.choice(256, int(rng.integers(0, PDQ_MATCH_DISTANCE + 1)), replace=False):
            row[bit // 8] ^= 0x80 >> (bit % 8)
    return out


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"median_us": statistics.median(ordered) * 1e6, "p99_us": p99 * 1e6, "n": len(ordered)}


def build_indexes(rows: np.ndarray) -> tuple[dict[str, Query], dict[str, float]]:
    """Every index over ``rows``, as a query function (query row number -> matches), and
    build times in seconds. Query rows are looked up in ``QUERIES`` (set by the caller)."""
    import faiss  # noqa: F401  (imported by threatexchange; the thread setting is global)
    from threatexchange.signal_type.pdq.pdq_faiss_matcher import PDQFlatHashIndex
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex
    from threatexchange.signal_type.pdq.pdq_index2 import PDQIndex2
    from threatexchange.signal_type.pdq.signal import PdqSignal

    assert PdqSignal.get_index_cls() is PDQIndex
    hexes = [row.tobytes().hex() for row in rows]
    hashes = [PdqHash(row.tobytes()) for row in rows]
    builds: dict[str, float] = {}
    queries: dict[str, Query] = {}

    tidings, builds["tidings PdqIndex"] = _timed(lambda: PdqIndex(enumerate(hashes)))
    assert isinstance(tidings, PdqIndex)

    def q_tidings(i: int) -> Matches:
        return frozenset((m.entry_id, m.distance) for m in tidings.query(QUERY_HASHES[i]))

    queries["tidings PdqIndex"] = q_tidings

    te_mih, builds["threatexchange PDQIndex (faiss MultiHash)"] = _timed(
        lambda: PDQIndex([(h, i) for i, h in enumerate(hexes)])
    )
    assert isinstance(te_mih, PDQIndex)

    def q_te_mih(i: int) -> Matches:
        return frozenset(
            (m.metadata, int(m.similarity_info.distance)) for m in te_mih.query(QUERY_HEXES[i])
        )

    queries["threatexchange PDQIndex (faiss MultiHash)"] = q_te_mih

    def flat() -> PDQFlatHashIndex:
        index = PDQFlatHashIndex()
        index.add(hexes, range(len(hexes)))
        return index

    te_flat, builds["threatexchange PDQFlatHashIndex (faiss BFlat)"] = _timed(flat)
    assert isinstance(te_flat, PDQFlatHashIndex)

    def q_te_flat(i: int) -> Matches:
        found = te_flat.search_with_distance_in_result([QUERY_HEXES[i]], PDQ_MATCH_DISTANCE)
        return frozenset((entry, int(d)) for entry, _, d in found[QUERY_HEXES[i]])

    queries["threatexchange PDQFlatHashIndex (faiss BFlat)"] = q_te_flat

    te2, builds["threatexchange PDQIndex2 (faiss FlatL2)"] = _timed(
        lambda: PDQIndex2(entries=[(h, i) for i, h in enumerate(hexes)])
    )
    assert isinstance(te2, PDQIndex2)

    def q_te2(i: int) -> Matches:
        return frozenset(
            (m.metadata, int(m.similarity_info.distance)) for m in te2.query(QUERY_HEXES[i])
        )

    queries["threatexchange PDQIndex2 (faiss FlatL2)"] = q_te2
    return queries, builds


QUERY_HASHES: list[PdqHash] = []
QUERY_HEXES: list[str] = []
SLOW = "threatexchange PDQIndex2 (faiss FlatL2)"


def run_queries(
    queries: dict[str, Query], kinds: dict[str, range], slow_every: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Per kind and index, the query-time summary; asserts that all indexes agree."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for kind, numbers in kinds.items():
        times: dict[str, list[float]] = {name: [] for name in queries}
        matched = 0
        for position, i in enumerate(numbers):
            answers: dict[str, Matches] = {}
            for name, query in queries.items():
                if name == SLOW and position % slow_every:
                    continue
                start = time.perf_counter()
                answers[name] = query(i)
                times[name].append(time.perf_counter() - start)
            distinct = set(answers.values())
            if len(distinct) != 1:
                raise SystemExit(f"indexes disagree on {kind} query {i}: {answers}")
            matched += bool(next(iter(distinct)))
        results[kind] = {name: _summary(t) for name, t in times.items()}
        results[kind]["_matched"] = {"queries_with_a_match": matched, "n": len(numbers)}
    return results


PHOTO = Path(__file__).resolve().parents[2] / "shared/fixtures/pdq/bridge-mods/aaa-orig.jpg"
"""Meta's reference photograph (1600 x 1004 JPEG) beside the checkout (``../shared``), or
`--photo`; it is not committed here."""


def measure_hashing(photo: Path, rounds: int = 20) -> dict[str, float]:
    """Median ms of hashing the reference photograph, once and with its 8 dihedral variants."""
    from tidings.media.pdq import dihedral_hashes, hash_image

    data = photo.read_bytes()
    result: dict[str, float] = {}
    for name, fn in (("hash_image", hash_image), ("dihedral_hashes", dihedral_hashes)):
        result[name + "_ms"] = 1e3 * statistics.median(
            _timed(lambda fn=fn: fn(data))[1] for _ in range(rounds)
        )
    return result


def memory_child(n: int) -> dict[str, float]:
    """Runs in a subprocess: RSS of a `PdqIndex` of ``n`` random hashes."""
    before = _rss_bytes()
    rows = _random_rows(n, seed=99)
    entries = [(i, PdqHash(rows[i].tobytes())) for i in range(n)]
    with_input = _rss_bytes()
    start = time.perf_counter()
    index = PdqIndex(entries)
    build_s = time.perf_counter() - start
    built = _rss_bytes()
    del entries, rows
    gc.collect()
    after = _rss_bytes()
    assert len(index) == n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "hashes": n,
        "build_s": build_s,
        "input_rss_mb": (with_input - before) / 2**20,
        "rss_with_input_mb": (built - before) / 2**20,
        "index_rss_mb": (after - before) / 2**20,
        "peak_rss_mb": peak / 2**20,
        "bytes_per_hash": (after - before) / n,
    }


def measure_memory(n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k hashes, 200 queries, 1M memory")
    parser.add_argument("--hashes", type=int, help="listed hashes (default 1,000,000)")
    parser.add_argument("--queries", type=int, help="queries of each kind (default 1,000)")
    parser.add_argument("--memory-hashes", type=int, help="hashes for the memory figure (10M)")
    parser.add_argument("--slow-every", type=int, default=10, help="PDQIndex2: 1 query in N")
    parser.add_argument("--faiss-threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--photo", type=Path, default=PHOTO, help="a photograph to time hashing on")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return
    n = args.hashes or (100_000 if args.quick else 1_000_000)
    q = args.queries or (200 if args.quick else 1_000)
    memory_n = args.memory_hashes or (1_000_000 if args.quick else 10_000_000)

    from importlib.metadata import version

    import faiss

    faiss.omp_set_num_threads(args.faiss_threads)
    rows = _random_rows(n, seed=1)
    query_rows = np.concatenate([_random_rows(q, seed=2), _near_rows(rows, q, seed=3)])
    QUERY_HASHES.extend(PdqHash(r.tobytes()) for r in query_rows)
    QUERY_HEXES.extend(r.tobytes().hex() for r in query_rows)
    queries, builds = build_indexes(rows)
    del rows
    gc.collect()
    timings = run_queries(
        queries, {"random": range(q), "near (0-31 bits)": range(q, 2 * q)}, args.slow_every
    )
    hashing = measure_hashing(args.photo)
    memory = measure_memory(memory_n)

    ours = "tidings PdqIndex"
    print(
        f"# bench/detection.py: {n:,} hashes, {q:,} queries per kind, radius {PDQ_MATCH_DISTANCE}"
    )
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__},"
        f" faiss {faiss.__version__} ({args.faiss_threads} thread), threatexchange"
        f" {version('threatexchange')}, pdqhash {version('pdqhash')}"
    )
    print("\n| index | build s |", " | ".join(f"{k} median µs | p99 µs" for k in timings), "|")
    print("|---|--:|", " | ".join("--: | --:" for _ in timings), "|")
    for name in queries:
        cells = " | ".join(
            f"{timings[k][name]['median_us']:,.0f} | {timings[k][name]['p99_us']:,.0f}"
            for k in timings
        )
        print(f"| {name} | {builds[name]:.2f} | {cells} |")
    print("\nratio of medians, Tidings / each (target <= 1 against threatexchange):")
    for name in queries:
        if name != ours:
            ratios = ", ".join(
                f"{k}: {timings[k][ours]['median_us'] / timings[k][name]['median_us']:.3f}"
                for k in timings
            )
            print(f"  vs {name}: {ratios}")
    for k in timings:
        m = timings[k]["_matched"]
        print(f"{k}: {m['queries_with_a_match']}/{m['n']} queries matched; all indexes agreed")
    print(
        f"\nmemory ({memory['hashes']:,} hashes, subprocess): index RSS"
        f" {memory['index_rss_mb']:,.0f} MB ({memory['bytes_per_hash']:.0f} B/hash),"
        f" peak RSS {memory['peak_rss_mb']:,.0f} MB"
        f" (input objects included), build {memory['build_s']:.1f} s (target < 8 GB)"
    )
    print(
        f"hashing {args.photo.name}: hash_image {hashing['hash_image_ms']:.1f} ms,"
        f" dihedral_hashes {hashing['dihedral_hashes_ms']:.1f} ms (medians of 20)"
    )
    if args.json:
        figures = {"hashes": n, "builds_s": builds, "queries": timings}
        print(json.dumps({**figures, "hashing": hashing, "memory": memory}))


if __name__ == "__main__":
    main()
