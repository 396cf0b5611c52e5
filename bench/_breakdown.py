"""Where the time of one Tidings operation goes: time per primitive call, per message.

`instrumented(run, n)` replaces every function of `tidings.crypto.primitives` -- in that module
and wherever a `tidings.*` module imported it by name -- with a wrapper that adds the call's
`time.perf_counter` duration to a per-primitive total, runs the case once, and restores the
originals. Only the outermost primitive call is timed (``ed25519_sign`` calling
``ed25519_expand`` counts once, as signing). HMAC-SHA256 is split by input size: the
chain-key steps (<= 64 bytes) and the tags over ``AD || ciphertext``.

The wrapper layer costs about 0.1-0.2 us per call, so the instrumented total is a little above the
uninstrumented figure of the main table; "other" is everything that is not a primitive call --
Python state handling, header and protobuf framing, the `symmetric` / `ratchet` call layers, and
the wrappers themselves.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RunFn = Callable[[int], float]

LABELS = {
    "hmac_sha256:short": "HMAC-SHA256, <= 64 B (KDF_CK chain step)",
    "hmac_sha256:long": "HMAC-SHA256 tag over AD + ciphertext",
    "hkdf_sha256": "HKDF-SHA256 (message keys 80 B, KDF_RK 64 B, PQXDH 32 B)",
    "aes256_cbc_encrypt": "AES-256-CBC encrypt 1 KiB (+ PKCS#7, Cipher setup)",
    "aes256_cbc_decrypt": "AES-256-CBC decrypt 1 KiB (+ padding check)",
    "constant_time_equal": "constant-time tag compare",
    "x25519": "X25519 agreement (libsodium)",
    "x25519_public": "X25519 public key from private (libsodium)",
    "x25519_generate": "X25519 key pair (libsodium)",
    "random_bytes": "os.urandom",
    "ed25519_sign": "Ed25519 sign (libsodium)",
    "ed25519_verify": "Ed25519 verify (libsodium)",
    "ed25519_expand": "Ed25519 seed expansion",
    "ed25519_public": "Ed25519 public key from seed",
    "mlkem768_encapsulate": "ML-KEM-768 encapsulate (+ public key parse)",
    "mlkem768_decapsulate": "ML-KEM-768 decapsulate (+ key expansion from seed)",
    "mlkem768_public": "ML-KEM-768 public key from seed",
    "sha256": "SHA-256",
}


@dataclass
class Breakdown:
    """Per-operation figures for one instrumented run of ``n`` operations."""

    n: int
    total_us: float
    rows: list[tuple[str, float, float]]  # (primitive key, calls per op, us per op)

    @property
    def other_us(self) -> float:
        return self.total_us - sum(us for _, _, us in self.rows)


def instrumented(
    run: RunFn, n: int, clock_start_listeners: list[Callable[[], None]], repeats: int = 3
) -> Breakdown:
    """Run ``run(n)`` with every primitive function timed; return the per-operation breakdown.

    ``run`` must call every listener in ``clock_start_listeners`` when its timed window opens
    (see `_tidings.CLOCK_START_LISTENERS`), so that primitives called during its untimed set-up
    (key generation, prekey signing) are not counted. Of ``repeats`` runs, the fastest is kept.
    """
    from tidings.crypto import primitives

    names = [name for name in primitives.__all__ if inspect.isfunction(getattr(primitives, name))]
    originals: dict[str, Callable[..., Any]] = {name: getattr(primitives, name) for name in names}
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    depth = [0]
    clock = time.perf_counter

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return fn(*args, **kwargs)
            key = name
            if name == "hmac_sha256":
                data = args[1] if len(args) > 1 else kwargs.get("data", b"")
                key = "hmac_sha256:short" if len(data) <= 64 else "hmac_sha256:long"
            depth[0] = 1
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + clock() - start
                calls[key] = calls.get(key, 0) + 1
                depth[0] = 0

        return timed

    wrappers = {name: wrap(name, fn) for name, fn in originals.items()}
    patched: list[tuple[Any, str, Any]] = []
    by_identity = {id(fn): name for name, fn in originals.items()}
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("tidings"):
            continue
        for attr, value in list(vars(module).items()):
            name = by_identity.get(id(value))
            if name is not None and value is originals[name]:
                patched.append((module, attr, value))
                setattr(module, attr, wrappers[name])

    def reset() -> None:
        spent.clear()
        calls.clear()

    clock_start_listeners.append(reset)
    best: tuple[float, dict[str, float], dict[str, int]] | None = None
    try:
        run(max(10, n // 20))  # warm the wrappers
        for _ in range(repeats):  # keep the least disturbed run (other load only adds time)
            total = run(n)
            if best is None or total < best[0]:
                best = (total, dict(spent), dict(calls))
    finally:
        clock_start_listeners.remove(reset)
        for module, attr, value in patched:
            setattr(module, attr, value)
    assert best is not None
    total, spent, calls = best
    rows = sorted(
        ((key, calls[key] / n, spent[key] / n * 1e6) for key in spent),
        key=lambda row: -row[2],
    )
    return Breakdown(n=n, total_us=total / n * 1e6, rows=rows)


def render(title: str, uninstrumented_us: float, b: Breakdown, markdown: bool) -> str:
    header = ("primitive", "calls/op", "us/call", "us/op", "share")
    rows: list[tuple[str, ...]] = []
    for key, per_op, us in b.rows:
        rows.append(
            (
                LABELS.get(key, key),
                f"{per_op:.2f}",
                f"{us / per_op:.2f}" if per_op else "-",
                f"{us:.1f}",
                f"{us / b.total_us:.0%}",
            )
        )
    rows.append(
        (
            "other: Python state, framing, call layers, timing wrappers",
            "",
            "",
            f"{b.other_us:.1f}",
            f"{b.other_us / b.total_us:.0%}",
        )
    )
    rows.append(("total (instrumented)", "", "", f"{b.total_us:.1f}", "100%"))
    intro = (
        f"{title}: {uninstrumented_us:.1f} us/op uninstrumented (main table), "
        f"{b.total_us:.1f} us/op instrumented, N = {b.n}"
    )
    if markdown:
        lines = [f"**{intro}**", "", "| " + " | ".join(header) + " |", "|---|--:|--:|--:|--:|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [intro, fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def as_json(b: Breakdown) -> dict[str, Any]:
    return {
        "n": b.n,
        "instrumented_us_per_op": round(b.total_us, 2),
        "other_us_per_op": round(b.other_us, 2),
        "primitives": [
            {
                "primitive": key,
                "label": LABELS.get(key, key),
                "calls_per_op": round(per_op, 3),
                "us_per_call": round(us / per_op, 2) if per_op else None,
                "us_per_op": round(us, 2),
            }
            for key, per_op, us in b.rows
        ],
    }
