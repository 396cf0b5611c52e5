"""Threshold shares (issue 10): the cost of the server's detection and recovery, and the
figures that choose the threshold t, the tag dimension D, the window size W and the synthetic
rate q (docs/detection.md, "Threshold and synthetic vouchers").

    .venv/bin/python bench/threshold.py [--rounds 5] [--json]

Timings (one core, medians over interleaved rounds) with t = 10, D = 32:
- ``find_real_shares`` on 64 shares (32 real + 32 synthetic: the brief's case), on t-1 real +
  D synthetic (the below-threshold window: nothing found) and on t real + D synthetic;
- the same at D = 64 (t real + 64 synthetic), the privacy-leaning alternative;
- ``recover_window_key`` from t shares, ``WindowDealer`` set-up, one ``share`` and one
  ``synthetic_share``.

Figures (exact binomial arithmetic, no sampling), at a per-image false-candidate rate of 1e-4
(the ceiling h-psi's LSH keys must meet) and 10,000 images a year on one device:
- the chance that an innocent device crosses t in a year, for several t and W
  (`innocent_crossing_probability` per window, times windows a year: a union bound);
- for each D and expected synthetic count per window lambda = q*W: the chance that a window
  holds more than D synthetic shares (then detection fails in that window), and the total
  variation distance between the number of opened vouchers of a window with no match and of
  one with r matches (what the count alone tells the provider below t).

Timing never goes into the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

from tidings.crypto.threshold import (
    ShareEnvelope,
    WindowDealer,
    draw_share_x,
    find_real_shares,
    innocent_crossing_probability,
    recover_window_key,
    synthetic_share,
)

T, D = 10, 32
FALSE_CANDIDATE_RATE = 1e-4
IMAGES_PER_YEAR = 10_000
THRESHOLDS = (5, 8, 10, 12, 15, 20, 30)
WINDOWS = (1_024, 2_048, 4_096, 10_000)
DIMENSIONS = (16, 32, 64, 128)
SYNTHETIC_MEANS = (4, 8, 12, 16, 24, 32, 48, 64)
MATCHES_BELOW_T = (1, 4, 9)


def _window(
    real: int, synthetic: int, seed: int, dimension: int = D
) -> tuple[list[ShareEnvelope], WindowDealer]:
    rng = random.Random(seed).randbytes
    dealer = WindowDealer(rng(32), T, dimension)
    shares = [dealer.share(draw_share_x(rng)) for _ in range(real)]
    shares += [synthetic_share(rng, dimension) for _ in range(synthetic)]
    random.Random(seed).shuffle(shares)
    return shares, dealer


def timings(rounds: int) -> dict[str, float]:
    """Median milliseconds per call of each case."""
    brief, dealer = _window(32, 32, 1)
    below, _ = _window(T - 1, D, 2)
    at, _ = _window(T, D, 3)
    wide, _ = _window(T, 2 * D, 4, 2 * D)
    assert len(find_real_shares(brief, T, D)) == 32
    assert find_real_shares(below, T, D) == []
    assert len(find_real_shares(at, T, D)) == T
    assert len(find_real_shares(wide, T, 2 * D)) == T
    reals = [dealer.share(draw_share_x(os.urandom)) for _ in range(T)]
    assert recover_window_key(reals, T) == dealer.window_key()
    seed = os.urandom(32)
    cases: dict[str, Callable[[], object]] = {
        "find_real_shares, 32 real + 32 synthetic": lambda: find_real_shares(brief, T, D),
        f"find_real_shares, {T - 1} real + {D} synthetic": lambda: find_real_shares(below, T, D),
        f"find_real_shares, {T} real + {D} synthetic": lambda: find_real_shares(at, T, D),
        f"find_real_shares, D={2 * D}: {T} real + {2 * D} synthetic": lambda: find_real_shares(
            wide, T, 2 * D
        ),
        f"recover_window_key, {T} shares": lambda: recover_window_key(reals, T),
        "WindowDealer set-up": lambda: WindowDealer(seed, T, D),
        "WindowDealer.share": lambda: dealer.share(draw_share_x(os.urandom)),
        "synthetic_share": lambda: synthetic_share(os.urandom, D),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = cases[name]
            n = 0
            start = time.perf_counter()
            while time.perf_counter() - start < 0.3:
                fn()
                n += 1
            samples[name].append((time.perf_counter() - start) / n * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def _pmf(n: int, q: float, k: int) -> float:
    if not 0 <= k <= n:
        return 0.0
    return math.exp(
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(q)
        + (n - k) * math.log1p(-q)
    )


def count_distance(window: int, rate: float, matches: int) -> float:
    """Total variation distance between the opened-voucher count of a window with no match
    (Binomial(W, q): synthetic ones only) and with ``matches`` matching images (each of those
    opens, real or synthetic, plus Binomial(W - r, q) synthetic among the rest)."""
    top = matches + int(window * rate + 20 * math.sqrt(window * rate) + 20)
    return 0.5 * sum(
        abs(_pmf(window, rate, c) - _pmf(window - matches, rate, c - matches)) for c in range(top)
    )


def figures() -> dict[str, object]:
    crossing = {
        f"t={t}": {
            f"W={w}": (IMAGES_PER_YEAR / w)
            * innocent_crossing_probability(FALSE_CANDIDATE_RATE, w, t)
            for w in WINDOWS
        }
        for t in THRESHOLDS
    }
    window = 4_096
    synthetic = {}
    for lam in SYNTHETIC_MEANS:
        rate = lam / window
        synthetic[f"lambda={lam}"] = {
            "q": rate,
            **{f"P(s>{d})": innocent_crossing_probability(rate, window, d + 1) for d in DIMENSIONS},
            **{f"TV(r={r})": count_distance(window, rate, r) for r in MATCHES_BELOW_T},
        }
    return {
        "false_candidate_rate": FALSE_CANDIDATE_RATE,
        "images_per_year": IMAGES_PER_YEAR,
        "innocent_crossing_per_year": crossing,
        "synthetic_window": window,
        "synthetic": synthetic,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {
        "machine": f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores",
        "timings_ms": timings(args.rounds),
        **figures(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(result["machine"])
    print(f"\ntimings, t={T}, D={D} (ms, median of {args.rounds} rounds)")
    for name, ms in result["timings_ms"].items():  # type: ignore[attr-defined]
        print(f"  {name:<45} {ms:10.3f}")
    print(
        f"\ninnocent device crossing t within a year: {IMAGES_PER_YEAR} images, "
        f"false-candidate rate {FALSE_CANDIDATE_RATE:g}, (year/W) x P[Bin(W, rate) >= t]"
    )
    print("  " + "".join(f"{'W=' + str(w):>12}" for w in WINDOWS))
    for t, row in result["innocent_crossing_per_year"].items():  # type: ignore[attr-defined]
        print(f"  {t:<6}" + "".join(f"{v:12.2e}" for v in row.values()))
    print(
        f"\nsynthetic vouchers, W={result['synthetic_window']}: P(more than D synthetic in a "
        "window) and TV distance of the opened count, 0 vs r matches"
    )
    for lam, row in result["synthetic"].items():  # type: ignore[attr-defined]
        cells = "  ".join(
            f"{k}={v:.2e}" if k.startswith("P") or k == "q" else f"{k}={v:.3f}"
            for k, v in row.items()
        )
        print(f"  {lam:<10} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
