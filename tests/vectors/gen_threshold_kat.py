"""Generate tests/vectors/threshold_kat.json: known answers for the window dealer of
`tidings.crypto.threshold` (polynomial derivation, shares, window key, share encoding).

An independent transcription of the module's documented derivation using only `hashlib` and
`hmac` (RFC 5869 HKDF written out); it imports nothing from `tidings`.

Run from the repository root:  .venv/bin/python tests/vectors/gen_threshold_kat.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

OUT = Path(__file__).with_name("threshold_kat.json")
P = (1 << 127) - 1


def hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def elements(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 32], "big") % P for i in range(0, len(data), 32)]


def evaluate(coefficients: list[int], x: int) -> int:
    return sum(c * pow(x, k, P) for k, c in enumerate(coefficients)) % P


def case(label: str, t: int, d: int, xs: list[int]) -> dict[str, object]:
    seed = hashlib.sha256(b"Tidings threshold KAT/" + label.encode()).digest()
    shape = t.to_bytes(2, "big") + d.to_bytes(2, "big")
    f = elements(hkdf(seed, b"Tidings_Threshold_v1_secret_polynomial" + shape, 32 * t))
    gs = [
        elements(
            hkdf(
                seed,
                b"Tidings_Threshold_v1_tag_polynomial" + shape + j.to_bytes(2, "big"),
                32 * (t - 1),
            )
        )
        for j in range(d)
    ]
    key = hkdf(f[0].to_bytes(16, "big"), b"Tidings_Threshold_v1_window_key", 32)
    shares = []
    for x in xs:
        values = [x, evaluate(f, x), *(evaluate(g, x) for g in gs)]
        shares.append(b"".join(v.to_bytes(16, "big") for v in values).hex())
    return {
        "label": label,
        "seed": seed.hex(),
        "threshold": t,
        "dimension": d,
        "window_key": key.hex(),
        "shares": shares,
    }


def main() -> None:
    cases = [
        case("small", 2, 1, [1, 2, 3]),
        case("default-like", 10, 32, [7, P - 1, 0x0123456789ABCDEF0123456789ABCDEF % P]),
        case("wide", 5, 3, [P // 3, 2**64 + 1]),
    ]
    OUT.write_text(json.dumps({"cases": cases}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
