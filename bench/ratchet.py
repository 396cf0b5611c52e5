"""Tidings protocol benchmark: the Double Ratchet, the PQXDH session setup and sender keys, each
measured beside a named peer in one run.

    .venv/bin/python bench/ratchet.py [--quick] [--json] [--markdown] [--breakdown] [--rounds R]

What is measured (every figure is the median over >= 5 rounds; rounds are interleaved):

1. one-way   -- Alice sends N messages of 1 KiB; Bob parses and decrypts each as it arrives.
                Tidings vs vodozemac (Rust Olm) vs `doubleratchet` (pure Python, PyPI).
2. ping-pong -- strict alternation A->B, B->A, ...; every message starts a new chain, so every
                message carries a DH ratchet step (X25519 key generation + 2 agreements).
                Tidings vs vodozemac vs doubleratchet.
3. setup     -- from handshake start to the first decrypted message. Tidings: PQXDH initiate
                (signed prekey + one-time prekey + ML-KEM-768 prekey, both prekey signatures
                verified) + respond + ratchet init + encrypt/decrypt of one 1 KiB message.
                vodozemac: outbound Olm session from a one-time key -> encrypt -> inbound session
                from the pre-key message. Olm does no post-quantum KEM and verifies no signature,
                so the two do different amounts of work; the ratio is context, not a target.
4. group     -- encrypt 1 KiB and decrypt it at one member: Tidings sender keys vs Megolm.

Also shown, without a target: "Tidings Session", the one-way stream one layer up, as clients use
it (`Session.encrypt` / `decrypt`: protobuf `RatchetMessage`, franking commitment in the AD).
`--breakdown` afterwards re-runs every Tidings case with each `tidings.crypto.primitives` call
timed (bench/_breakdown.py): microseconds per message per primitive, and what is left for Python.
`bench/ideas.py` measures prototypes of the speed-ups; docs/performance.md has
the figures and their reading.

Why the comparison is fair:

- One process, one interpreter, one machine; all implementations are called from the same Python
  loop shape, so each pays the same interpreter overhead per call.
- Same plaintexts (a pool of 64 random 1 KiB strings built before timing), same associated data
  (130 bytes: two 65-byte identity encodings) for the ratchets that take AD.
- Bytes on the wire: every sender's output is turned into bytes and every receiver parses those
  bytes before decrypting (vodozemac `to_parts`/`from_parts`, `to_bytes`/`from_bytes`; Tidings'
  own header codec; doubleratchet, which has no wire format, gets the 40-byte PROTOCOL.md header).
- Every message is decrypted and compared with what was sent; a mismatch aborts the run.
- Only crypto work is timed (`time.perf_counter` around the message loop): accounts, identity keys,
  published prekeys / one-time keys, session establishment for the message scenarios and the
  plaintexts are created before the clock starts. Each message pair gets the same untimed warm-up
  (A->B, B->A, A->B) so all streams run on established chains.
- Interleaved rounds: round r runs every case once, in an order rotated by r, so slow drift of
  the machine (other processes, frequency scaling) spreads over all cases instead of one. The
  garbage collector stays on, as in production; `gc.collect()` runs between cases, untimed.
- N (messages or setups per round) is the same for every implementation within a scenario.
- One untimed warm-up round first (imports, caches, first-call costs).

Targets (PASS/MISS printed beside the ratio): one-way >= 0.8x vodozemac and >= 6x doubleratchet;
ping-pong >= 0.9x vodozemac; group >= 0.8x Megolm. Setup has no target.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _breakdown
import _peers
import _tidings

MESSAGE_SIZE = 1024
PLAINTEXT_POOL = 64

RunFn = Callable[[int], float]


@dataclass(frozen=True)
class Scenario:
    key: str
    unit: str
    n_default: int
    n_quick: int
    note: str = ""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("one-way", "msg/s", 8000, 1500),
    Scenario("ping-pong", "msg/s", 3000, 600),
    Scenario(
        "setup",
        "setups/s",
        400,
        100,
        note="Tidings does PQXDH with ML-KEM-768 and verifies two prekey signatures; Olm does "
        "3 X25519 agreements per side, no KEM and no signature, so the ratio is context, "
        "not a target",
    ),
    Scenario("group", "msg/s", 5000, 1000),
)


@dataclass(frozen=True)
class Target:
    scenario: str
    peer: str
    minimum: float


TARGETS: tuple[Target, ...] = (
    Target("one-way", "vodozemac", 0.8),
    Target("one-way", "doubleratchet", 6.0),
    Target("ping-pong", "vodozemac", 0.9),
    Target("group", "vodozemac", 0.8),
)

IMPLS = ("tidings", "tidings-session", "vodozemac", "doubleratchet")
PEER_LABEL = {
    "tidings": "Tidings",
    "tidings-session": "Tidings Session (protobuf wire, info)",
    "vodozemac": "vodozemac",
    "doubleratchet": "doubleratchet",
}
GROUP_PEER_LABEL = {"tidings": "Tidings sender keys", "vodozemac": "vodozemac Megolm"}


@dataclass
class Case:
    scenario: str
    impl: str
    run: RunFn
    n: int
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def build_cases(
    quick: bool,
    skipped: dict[str, str],
    plaintexts: Sequence[bytes],
    shared_secret: bytes,
    ad: bytes,
) -> list[Case]:
    """Every (scenario, implementation) pair that can run here; the others go to ``skipped``."""
    n_of = {s.key: (s.n_quick if quick else s.n_default) for s in SCENARIOS}
    factories: list[tuple[str, str, str | None, Callable[[], RunFn]]] = [
        ("one-way", "tidings", _tidings.MISSING_RATCHET,
         lambda: _tidings.one_way(plaintexts, ad)),
        ("one-way", "tidings-session", _tidings.MISSING_SESSION,
         lambda: _tidings.one_way_session(plaintexts)),
        ("one-way", "vodozemac", _peers.VODOZEMAC_MISSING,
         lambda: _peers.vodozemac_one_way(plaintexts)),
        ("one-way", "doubleratchet", _peers.DOUBLERATCHET_MISSING,
         lambda: _peers.doubleratchet_one_way(plaintexts, shared_secret, ad)),
        ("ping-pong", "tidings", _tidings.MISSING_RATCHET,
         lambda: _tidings.ping_pong(plaintexts, ad)),
        ("ping-pong", "vodozemac", _peers.VODOZEMAC_MISSING,
         lambda: _peers.vodozemac_ping_pong(plaintexts)),
        ("ping-pong", "doubleratchet", _peers.DOUBLERATCHET_MISSING,
         lambda: _peers.doubleratchet_ping_pong(plaintexts, shared_secret, ad)),
        ("setup", "tidings", _tidings.MISSING_SETUP,
         lambda: _tidings.setup(plaintexts[0])),
        ("setup", "vodozemac", _peers.VODOZEMAC_MISSING,
         lambda: _peers.vodozemac_setup(plaintexts[0])),
        ("group", "tidings", _tidings.MISSING_GROUP,
         lambda: _tidings.group(plaintexts)),
        ("group", "vodozemac", _peers.VODOZEMAC_MISSING,
         lambda: _peers.vodozemac_group(plaintexts)),
    ]  # fmt: skip
    cases: list[Case] = []
    for scenario, impl, missing, factory in factories:
        if missing is not None:
            skipped[f"{scenario}/{impl}"] = missing
            continue
        cases.append(Case(scenario, impl, factory(), n_of[scenario]))
    return cases


def interop_check(shared_secret: bytes, ad: bytes) -> str:
    """Untimed: check that the doubleratchet configuration speaks Tidings DR v1."""
    if _tidings.MISSING_RATCHET is not None or _peers.DOUBLERATCHET_MISSING is not None:
        return "skipped (Tidings ratchet or doubleratchet missing)"
    from tidings.crypto.primitives import x25519_generate
    from tidings.crypto.ratchet import DoubleRatchet

    bob_private, bob_public = x25519_generate()
    alice = DoubleRatchet.init_alice(shared_secret, bytes(bob_public))
    count = _peers.doubleratchet_interop_check(alice, bob_private, shared_secret, ad)
    return f"OK: Tidings <-> doubleratchet, {count} messages both ways, same wire bytes"


def measure(cases: list[Case], rounds: int, progress: bool) -> None:
    """One untimed warm-up round, then ``rounds`` interleaved, order-rotated rounds."""
    for case in cases:
        case.run(max(10, case.n // 20))
    for r in range(rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            gc.collect()
            elapsed = case.run(case.n)
            case.rates.append(case.n / elapsed)
        if progress:
            end = "\n" if r + 1 == rounds else ""
            print(f"\rround {r + 1}/{rounds}", end=end, file=sys.stderr, flush=True)


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    libs: dict[str, str] = {}
    for dist in ("tidings", "cryptography", "PyNaCl", "vodozemac", "DoubleRatchet"):
        with contextlib.suppress(PackageNotFoundError):
            libs[dist] = version(dist)
    if "PyNaCl" in libs:
        libs["libsodium"] = f"bundled with PyNaCl {libs['PyNaCl']}"
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        libs["OpenSSL (cryptography)"] = backend.openssl_version_text()
    except ImportError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "libraries": libs,
    }


@dataclass
class Ratio:
    scenario: str
    peer: str
    ratio: float
    per_round: list[float]
    target: float | None

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        return "PASS" if self.ratio >= self.target else "MISS"


def ratios(cases: list[Case]) -> list[Ratio]:
    by_key = {(c.scenario, c.impl): c for c in cases}
    targets = {(t.scenario, t.peer): t.minimum for t in TARGETS}
    out: list[Ratio] = []
    for scenario in SCENARIOS:
        tidings = by_key.get((scenario.key, "tidings"))
        if tidings is None:
            continue
        for peer in ("vodozemac", "doubleratchet"):
            other = by_key.get((scenario.key, peer))
            if other is None:
                continue
            # Paired per-round ratios (same round, adjacent in time) show the spread that the
            # ratio of medians hides.
            per_round = [a / b for a, b in zip(tidings.rates, other.rates, strict=True)]
            out.append(
                Ratio(
                    scenario.key,
                    peer,
                    tidings.median / other.median,
                    per_round,
                    targets.get((scenario.key, peer)),
                )
            )
    return out


def _label(scenario: str, impl: str) -> str:
    if scenario == "group":
        return GROUP_PEER_LABEL.get(impl, impl)
    return PEER_LABEL.get(impl, impl)


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def _fmt_ratio(r: Ratio) -> str:
    return f"{r.ratio:.2f}x ({min(r.per_round):.2f}-{max(r.per_round):.2f})"


def render_table(cases: list[Case], rs: list[Ratio], markdown: bool) -> str:
    by_key = {(c.scenario, c.impl): c for c in cases}
    ratio_of = {(r.scenario, r.peer): r for r in rs}
    header = (
        "scenario",
        "implementation",
        "N/round",
        "median rate",
        "min-max",
        "us/op",
        "Tidings / this (per-round range)",
        "target",
        "verdict",
    )
    rows: list[tuple[str, ...]] = []
    for scenario in SCENARIOS:
        for impl in IMPLS:
            case = by_key.get((scenario.key, impl))
            if case is None:
                continue
            r = ratio_of.get((scenario.key, impl))
            rows.append(
                (
                    scenario.key,
                    _label(scenario.key, impl),
                    str(case.n),
                    f"{_fmt_rate(case.median)} {scenario.unit}",
                    f"{_fmt_rate(min(case.rates))}-{_fmt_rate(max(case.rates))}",
                    f"{1e6 / case.median:.1f}",
                    _fmt_ratio(r) if r else "",
                    f">= {r.target:g}x" if r and r.target is not None else "",
                    r.verdict if r and r.target is not None else "",
                )
            )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small N, 5 rounds (< 20 s)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable result")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="afterwards, time every primitive call of each Tidings case (us per message)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (>= 5; default 9)")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (5 if args.quick else 9)
    if rounds < 5:
        parser.error("--rounds must be at least 5 (the figures are medians over >= 5 rounds)")

    plaintexts = [os.urandom(MESSAGE_SIZE) for _ in range(PLAINTEXT_POOL)]
    shared_secret = os.urandom(32)
    ad = os.urandom(_peers.AD_LEN)
    skipped: dict[str, str] = {}
    interop = interop_check(shared_secret, ad)
    cases = build_cases(args.quick, skipped, plaintexts, shared_secret, ad)
    for why in dict.fromkeys(skipped.values()):
        which = ", ".join(what for what, reason in skipped.items() if reason == why)
        print(f"skipped {which}: {why}", file=sys.stderr)
    if not cases:
        print("nothing to measure", file=sys.stderr)
        return 1

    started = time.perf_counter()
    measure(cases, rounds, progress=not args.json)
    wall = time.perf_counter() - started
    rs = ratios(cases)
    facts = machine_facts()
    breakdowns: list[tuple[Case, _breakdown.Breakdown]] = []
    if args.breakdown:
        for case in cases:
            if case.impl.startswith("tidings"):
                breakdowns.append(
                    (
                        case,
                        _breakdown.instrumented(case.run, case.n, _tidings.CLOCK_START_LISTENERS),
                    )
                )
    command = " ".join(["bench/ratchet.py", *(sys.argv[1:] if argv is None else argv)])

    if args.json:
        result = {
            "command": f".venv/bin/python {command}",
            "rounds": rounds,
            "message_size": MESSAGE_SIZE,
            "wall_seconds": round(wall, 2),
            "machine": facts,
            "skipped": skipped,
            "doubleratchet_interop": interop,
            "cases": [
                {
                    "scenario": c.scenario,
                    "implementation": c.impl,
                    "n_per_round": c.n,
                    "unit": next(s.unit for s in SCENARIOS if s.key == c.scenario),
                    "median": round(c.median, 1),
                    "rates": [round(x, 1) for x in c.rates],
                    "us_per_op": round(1e6 / c.median, 2),
                }
                for c in cases
            ],
            "ratios": [
                {
                    "scenario": r.scenario,
                    "tidings_over": r.peer,
                    "ratio": round(r.ratio, 3),
                    "per_round": [round(x, 3) for x in r.per_round],
                    "target": r.target,
                    "verdict": r.verdict if r.target is not None else None,
                }
                for r in rs
            ],
            "notes": {s.key: s.note for s in SCENARIOS if s.note},
            "breakdown": {
                f"{case.scenario}/{case.impl}": _breakdown.as_json(b) for case, b in breakdowns
            },
        }
        print(json.dumps(result, indent=2))
        return 0

    print()
    print(render_table(cases, rs, args.markdown))
    print()
    for s in SCENARIOS:
        if s.note:
            print(f"note ({s.key}): {s.note}")
    for case, b in breakdowns:
        title = f"{case.scenario} / {_label(case.scenario, case.impl)}"
        print(_breakdown.render(title, 1e6 / case.median, b, args.markdown))
        print()
    print(f"doubleratchet configuration check: {interop}")
    libs = ", ".join(f"{k} {v}" for k, v in facts["libraries"].items())
    print(
        f"machine: {facts['nproc']} CPUs, {facts['cpu']}, {facts['python']}; {libs}\n"
        f"{rounds} interleaved rounds, medians; wall {wall:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
