"""Fuzzy-key recall and false candidates of the PSI layer's LSH (issue 10), measured on generated
edits of real photographs, and the choice of K (tables) and b (bits per key).

    .venv/bin/python bench/psi_recall.py [--json] [--fp-list 1000000]

Photographs: /work/shared/fixtures/pdq/bridge-mods/aaa-orig.jpg (if present) and the photos
bundled with scikit-image (no downloads). Edits, per photograph: resizes, JPEG recompression
(q 30-90), brightness/contrast, rotations by 90/180/270, flips, small crops (1-10 %), and 40
seeded random combinations of two or three of those. The distance of an edit is the minimum
Hamming distance between its PDQ hash and the 8 dihedral hashes of the original.

A match: some orientation-class query key of the edit (`tidings.crypto.psi.query_keys`) equals
the list key (`list_keys`) of the original in the same table. Keys are computed here with numpy
from the same `table_positions`, and checked against `list_keys` / `query_keys` on every hash
for the chosen parameters.

False candidates per image against a 1M-hash list: analytic ``4K · 2 · N · 2^-b`` and measured
(sorted uint64 key arrays per table + searchsorted) against N random hashes with random query
hashes and with the real edits as queries; real-image correlation is measured as the per-table
collision rate of keys of *different* photographs' edits at small b, relative to 2·2^-b.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pdqhash
import skimage.data
from PIL import Image, ImageEnhance

from tidings.crypto import psi

FIXTURE = Path("/work/shared/fixtures/pdq/bridge-mods/aaa-orig.jpg")
PHOTOS = (
    "chelsea",
    "coffee",
    "rocket",
    "astronaut",
    "hubble_deep_field",
    "retina",
    "camera",
    "immunohistochemistry",
    "coins",
    "moon",
    "cell",
)
CANDIDATE_K = (8, 12, 16, 20, 24, 28, *range(32, 49, 2), 52, 56, 60, 64)
CANDIDATE_B = tuple(range(38, 50))
RECALL_NEAR, RECALL_FAR = 0.99, 0.65
FP_TARGET = 1e-4
MAX_K_BY_SIZE = 39
"""4K elements of 48 bytes plus a ~1 KB outer layer must fit 8 KB (docs/detection.md)."""

Edit = Callable[[Image.Image], Image.Image]


def _photos() -> list[tuple[str, Image.Image]]:
    found = []
    if FIXTURE.is_file():
        found.append(("aaa-orig", Image.open(FIXTURE).convert("RGB")))
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        found.append((name, Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")))
    return found


def _jpeg(q: int) -> Edit:
    def run(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return run


def _resize(f: float) -> Edit:
    return lambda im: im.resize(
        (max(8, int(im.width * f)), max(8, int(im.height * f))), Image.Resampling.BICUBIC
    )


def _crop(frac: float, mode: str) -> Edit:
    def run(im: Image.Image) -> Image.Image:
        dx, dy = int(im.width * frac), int(im.height * frac)
        if mode == "all":
            return im.crop((dx // 2, dy // 2, im.width - dx // 2, im.height - dy // 2))
        if mode == "left":
            return im.crop((dx, 0, im.width, im.height))
        return im.crop((dx, dy, im.width, im.height))

    return run


def _edits() -> list[tuple[str, Edit]]:
    t = Image.Transpose
    named: list[tuple[str, Edit]] = []
    named += [(f"resize{f}", _resize(f)) for f in (0.25, 0.4, 0.5, 0.75, 1.25, 1.5)]
    named += [(f"jpeg{q}", _jpeg(q)) for q in (30, 40, 50, 60, 70, 80, 90)]
    named += [
        (f"bright{f}", lambda im, f=f: ImageEnhance.Brightness(im).enhance(f))
        for f in (0.6, 0.8, 1.2, 1.4)
    ]
    named += [
        (f"contrast{f}", lambda im, f=f: ImageEnhance.Contrast(im).enhance(f))
        for f in (0.6, 0.8, 1.2, 1.4)
    ]
    named += [
        ("rot90", lambda im: im.transpose(t.ROTATE_90)),
        ("rot180", lambda im: im.transpose(t.ROTATE_180)),
        ("rot270", lambda im: im.transpose(t.ROTATE_270)),
        ("flip_h", lambda im: im.transpose(t.FLIP_LEFT_RIGHT)),
        ("flip_v", lambda im: im.transpose(t.FLIP_TOP_BOTTOM)),
        ("transpose", lambda im: im.transpose(t.TRANSPOSE)),
    ]
    named += [
        (f"crop{int(f * 100)}{m}", _crop(f, m))
        for f in (0.01, 0.02, 0.03, 0.05, 0.07, 0.10)
        for m in ("all", "left", "corner")
    ]
    rng = np.random.default_rng(20261202)
    singles = list(named)
    for _ in range(40):
        picks = [
            singles[j]
            for j in rng.choice(len(singles), size=int(rng.integers(2, 4)), replace=False)
        ]

        def combo(im: Image.Image, picks: list[tuple[str, Edit]] = picks) -> Image.Image:
            for _, f in picks:
                im = f(im)
            return im

        named.append(("+".join(n for n, _ in picks), combo))
    return named


def _dihedral(im: Image.Image) -> tuple[np.ndarray, int]:
    hashes, quality = pdqhash.compute_dihedral(np.ascontiguousarray(np.asarray(im)))
    return np.array(hashes, dtype=np.uint8), int(quality)


def _oriented(im: Image.Image) -> np.ndarray:
    """The query side's class hashes in pixel space (recommended; docs/detection.md): PDQ of
    the image, of its 180-degree rotation, and of its vertical and horizontal mirror images,
    placed at their dihedral indices (the other four rows stay zero and are never used)."""
    t = Image.Transpose
    row = np.zeros((8, 256), dtype=np.uint8)
    for c, tr in (
        (psi.DIHEDRAL_IDENTITY, None),
        (psi.DIHEDRAL_ROT180, t.ROTATE_180),
        (psi.DIHEDRAL_FLIP_VERTICAL, t.FLIP_TOP_BOTTOM),
        (psi.DIHEDRAL_FLIP_HORIZONTAL, t.FLIP_LEFT_RIGHT),
    ):
        x = im if tr is None else im.transpose(tr)
        row[c] = pdqhash.compute(np.ascontiguousarray(np.asarray(x)))[0]
    return row


def collect() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(original bit rows [P,256], edit dihedral bits [E,8,256], edit pixel-space class bits
    [E,8,256], edit photo index [E], edit distance [E], edit names)."""
    originals, edits, pixel, owner, dist, names = [], [], [], [], [], []
    for name, im in _photos():
        od, q = _dihedral(im)
        if q < 50:
            continue
        originals.append(od[psi.DIHEDRAL_IDENTITY])
        for ename, f in _edits():
            edited = f(im)
            ed, _ = _dihedral(edited)
            edits.append(ed)
            pixel.append(_oriented(edited))
            owner.append(len(originals) - 1)
            dist.append(int(min((ed[0] != od[j]).sum() for j in range(8))))
            names.append(f"{name}:{ename}")
    return (
        np.array(originals),
        np.array(edits),
        np.array(pixel),
        np.array(owner),
        np.array(dist),
        names,
    )


def _keys(bits: np.ndarray, table: int, b: int) -> np.ndarray:
    """Canonical keys (uint64) of ``bits`` [..., 256] for one table, like psi._table_key."""
    direct, transposed = psi.table_positions(psi.DEFAULT_LSH_SEED, table, b)
    weights = (1 << np.arange(b - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)
    d = (bits[..., list(direct)].astype(np.uint64) * weights).sum(axis=-1, dtype=np.uint64)
    t = (bits[..., list(transposed)].astype(np.uint64) * weights).sum(axis=-1, dtype=np.uint64)
    return np.minimum(d, t)


def _keys_packed(packed: np.ndarray, table: int, b: int) -> np.ndarray:
    """`_keys` for a big [N, 32] packed array without unpacking it whole."""
    direct, transposed = psi.table_positions(psi.DEFAULT_LSH_SEED, table, b)
    d = np.zeros(len(packed), dtype=np.uint64)
    t = np.zeros(len(packed), dtype=np.uint64)
    for pd, pt in zip(direct, transposed, strict=True):
        d = (d << np.uint64(1)) | ((packed[:, pd // 8] >> (7 - pd % 8)) & 1).astype(np.uint64)
        t = (t << np.uint64(1)) | ((packed[:, pt // 8] >> (7 - pt % 8)) & 1).astype(np.uint64)
    return np.minimum(d, t)


def table_hits(
    originals: np.ndarray, edits: np.ndarray, owner: np.ndarray, b: int, k_max: int
) -> np.ndarray:
    """hits[e, k, c]: class c of edit e has the original's key in table k."""
    classes = list(psi.ORIENTATION_CLASSES)
    hits = np.zeros((len(edits), k_max, len(classes)), dtype=bool)
    for k in range(k_max):
        ok = _keys(originals, k, b)[owner]
        ek = _keys(edits[:, classes, :], k, b)
        hits[:, k, :] = ek == ok[:, None]
    return hits


BUCKETS = ((0, 8), (9, 16), (17, 24), (25, 31), (32, 256))


def analyse(args: argparse.Namespace) -> dict[str, object]:
    originals, dihedral, pixel, owner, dist, names = collect()
    edits = pixel if args.orientation == "pixel" else dihedral
    out: dict[str, object] = {
        "photos": len(originals),
        "edits": len(edits),
        "orientation": args.orientation,
    }
    out["distance_histogram"] = {
        f"{lo}-{hi}": int(((dist >= lo) & (dist <= hi)).sum()) for lo, hi in BUCKETS
    }
    near, far = dist <= 16, (dist >= 17) & (dist <= 24)
    rows, chosen = [], None
    for b in CANDIDATE_B:
        hits = table_hits(originals, edits, owner, b, max(CANDIDATE_K))
        for k in CANDIDATE_K:
            matched = hits[:, :k, :].any(axis=(1, 2))
            fp = 4 * k * 2 * args.fp_list * 2.0**-b
            row = {
                "K": k,
                "b": b,
                "recall_0_16": float(matched[near].mean()),
                "recall_17_24": float(matched[far].mean()),
                "fp_analytic": fp,
            }
            rows.append(row)
            ok = (
                row["recall_0_16"] >= RECALL_NEAR
                and row["recall_17_24"] >= RECALL_FAR
                and fp <= FP_TARGET
            )
            if ok and (chosen is None or (k, -b) < (chosen["K"], -chosen["b"])):
                chosen = row
    out["candidates_meeting_targets"] = [
        r
        for r in rows
        if r["recall_0_16"] >= RECALL_NEAR
        and r["recall_17_24"] >= RECALL_FAR
        and r["fp_analytic"] <= FP_TARGET
    ]
    out["chosen"] = chosen
    # Per K, the smallest b that meets the FP target (the best recall K allows).
    out["best_per_k"] = [
        min(
            (r for r in rows if r["K"] == k and r["fp_analytic"] <= FP_TARGET), key=lambda r: r["b"]
        )
        for k in CANDIDATE_K
    ]
    k, b = (chosen["K"], chosen["b"]) if chosen else (args.k, args.b)
    params = psi.PsiParameters(tables=k, bits_per_key=b)
    hits = table_hits(originals, edits, owner, b, k)
    matched = hits.any(axis=(1, 2))
    out["per_distance_recall"] = {
        int(d): [float(matched[dist == d].mean()), int((dist == d).sum())]
        for d in sorted(set(dist.tolist()))
        if d <= 40
    }
    out["recall_0_16"] = float(matched[near].mean())
    out["recall_17_24"] = float(matched[far].mean())
    other = dihedral if args.orientation == "pixel" else pixel
    o_matched = table_hits(originals, other, owner, b, k).any(axis=(1, 2))
    out["other_orientation_recall"] = [float(o_matched[near].mean()), float(o_matched[far].mean())]
    out["misses_0_16"] = [names[i] + f" d={dist[i]}" for i in np.flatnonzero(near & ~matched)]
    # The published synthetic-open-count table: opening elements of matching edits.
    opening = Counter(int(c) for c in hits.sum(axis=(1, 2))[matched])
    out["synthetic_open_counts"] = sorted(opening.items())
    # Cross-check the numpy keys against the real key functions on every hash.
    packed_o = np.packbits(originals, axis=1)
    packed_e = np.packbits(edits, axis=2)
    for i in range(len(edits)):
        q = psi.query_keys([bytes(packed_e[i][c]) for c in psi.ORIENTATION_CLASSES], params)
        ol = psi.list_keys(bytes(packed_o[owner[i]]), params)
        real = sum(q[c * k + t] == ol[t] for c in range(4) for t in range(k))
        assert real == int(hits[i].sum()), names[i]
    out["fp"] = false_candidates(edits, originals, owner, k, b, args.fp_list)
    return out


def false_candidates(
    edits: np.ndarray, originals: np.ndarray, owner: np.ndarray, k: int, b: int, n: int
) -> dict[str, float]:
    rng = np.random.default_rng(7)
    listed = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    random_queries = rng.integers(0, 256, size=(20_000, 4, 32), dtype=np.uint8)
    real_queries = np.packbits(edits[:, list(psi.ORIENTATION_CLASSES), :], axis=2)
    found_random = found_real = 0
    for t in range(k):
        lk = np.sort(_keys_packed(listed, t, b))
        for queries, is_real in ((random_queries, False), (real_queries, True)):
            qk = _keys_packed(queries.reshape(-1, 32), t, b)
            pos = np.searchsorted(lk, qk)
            hit = int((lk[np.minimum(pos, len(lk) - 1)] == qk).sum())
            if is_real:
                found_real += hit
            else:
                found_random += hit
    # Real-vs-real correlation at small b: collisions between different photos' edits.
    excess = {}
    for small_b in (8, 12, 16):
        coll = pairs = 0
        for t in range(8):
            keys = _keys(edits[:, 0, :], t, small_b)
            same_photo = owner[:, None] == owner[None, :]
            eq = keys[:, None] == keys[None, :]
            coll += int((eq & ~same_photo).sum())
            pairs += int((~same_photo).sum())
        excess[small_b] = (coll / pairs) / (2 * 2.0**-small_b)
    # Calibration at small b, where the 1M list gives hundreds of hits: measured / analytic.
    calibration = {}
    for small_b in (20, 24):
        hits = {"random": 0, "real": 0}
        for t in range(4):
            lk = np.sort(_keys_packed(listed, t, small_b))
            for label, queries in (("random", random_queries), ("real", real_queries)):
                qk = _keys_packed(queries.reshape(-1, 32), t, small_b)
                lo, hi = np.searchsorted(lk, qk, "left"), np.searchsorted(lk, qk, "right")
                hits[label] += int((hi - lo).sum())
        analytic = 4 * n * 2.0 * 2.0**-small_b  # 4 tables x 1 class-query each per hash
        calibration[small_b] = {
            "random_measured_over_analytic": hits["random"] / (len(random_queries) * 4 * analytic),
            "real_measured_over_analytic": hits["real"] / (len(real_queries) * 4 * analytic),
        }
    return {
        "calibration_small_b": calibration,
        "list_size": n,
        "analytic": 4 * k * 2 * n * 2.0**-b,
        "random_queries_per_image": found_random / len(random_queries),
        "random_query_images": len(random_queries),
        "real_queries_per_image": found_real / len(edits),
        "real_query_images": len(edits),
        "real_image_collision_excess_vs_2x2^-b": excess,
        "analytic_times_worst_excess": 4 * k * 2 * n * 2.0**-b * max(excess.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--fp-list", type=int, default=1_000_000)
    parser.add_argument(
        "--orientation",
        choices=("pixel", "dihedral"),
        default="pixel",
        help="query classes hashed in pixel space, or PDQ's dihedral hashes",
    )
    parser.add_argument("--k", type=int, default=32, help="K if no candidate meets the targets")
    parser.add_argument("--b", type=int, default=42)
    args = parser.parse_args()
    out = analyse(args)
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        return
    print(f"photos {out['photos']}, edits {out['edits']}")
    print("distance histogram:", out["distance_histogram"])
    print("candidates meeting recall and FP (K <= size cap marked *):")
    for r in out["candidates_meeting_targets"]:  # type: ignore[attr-defined]
        mark = "*" if r["K"] <= MAX_K_BY_SIZE else " "
        print(
            f" {mark} K={r['K']:2} b={r['b']}  recall<=16 {r['recall_0_16']:.4f}  "
            f"17-24 {r['recall_17_24']:.4f}  fp {r['fp_analytic']:.2e}"
        )
    print("per K, the smallest b meeting the FP target:")
    for r in out["best_per_k"]:  # type: ignore[attr-defined]
        mark = "*" if r["K"] <= MAX_K_BY_SIZE else " "
        print(
            f" {mark} K={r['K']:2} b={r['b']}  recall<=16 {r['recall_0_16']:.4f}  "
            f"17-24 {r['recall_17_24']:.4f}  fp {r['fp_analytic']:.2e}"
        )
    print("chosen:", out["chosen"])
    print(
        f"recall 0-16 {out['recall_0_16']:.4f}, 17-24 {out['recall_17_24']:.4f} "
        f"({out['orientation']} queries); with the other orientation hashes: "
        f"{out['other_orientation_recall']}"
    )
    print("per-distance recall (d: recall, edits):")
    for d, (r, c) in out["per_distance_recall"].items():  # type: ignore[attr-defined]
        print(f"  {d:3}: {r:.3f} ({c})")
    print("misses within 16:", out["misses_0_16"])
    print("SYNTHETIC_OPEN_COUNTS:", tuple(out["synthetic_open_counts"]))  # type: ignore[arg-type]
    print("false candidates:", json.dumps(out["fp"], indent=1))


if __name__ == "__main__":
    main()
