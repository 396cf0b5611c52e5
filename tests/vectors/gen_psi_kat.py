"""Generate tests/vectors/psi_kat.json: known answers for the LSH key function and the H
mapping of `tidings.crypto.psi` (docs/detection.md, "Fuzzy matching and the blinded list").

An independent transcription of the documented derivations using `hashlib` and libsodium's
``crypto_core_ed25519_from_uniform`` through PyNaCl; it imports nothing from `tidings`.

Run from the repository root:  .venv/bin/python tests/vectors/gen_psi_kat.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nacl.bindings

OUT = Path(__file__).with_name("psi_kat.json")
SEED = bytes.fromhex("5469646996e67320505349206c73682073656564207631000000000000000001")
KEY_DOMAIN = b"tidings/psi/lsh-key/v1"
POSITIONS_DOMAIN = b"tidings/psi/lsh-positions/v1"
H_DOMAIN = b"tidings/psi/hash-to-group/v1"


def transpose(p: int) -> int:
    return (p % 16) * 16 + p // 16


def positions(table: int, bits: int) -> list[int]:
    chosen: set[int] = set()
    for p in hashlib.shake_256(POSITIONS_DOMAIN + SEED + table.to_bytes(2, "big")).digest(4096):
        if len(chosen) == bits:
            break
        pair = {p, transpose(p)}
        if p in chosen or len(chosen) + len(pair) > bits:
            continue
        chosen |= pair
    return sorted(chosen)


def key(pdq: bytes, table: int, bits: int) -> bytes:
    value = int.from_bytes(pdq, "big")
    bit = lambda p: (value >> (255 - p)) & 1  # noqa: E731
    pos = positions(table, bits)
    direct = int("".join(str(bit(p)) for p in pos), 2)
    flipped = int("".join(str(bit(transpose(p))) for p in pos), 2)
    return KEY_DOMAIN + bytes([table]) + min(direct, flipped).to_bytes((bits + 7) // 8, "big")


def main() -> None:
    hashes = [hashlib.sha256(b"psi kat hash %d" % i).digest() for i in range(3)]
    bits = 42
    cases = {
        "bits_per_key": bits,
        "seed": SEED.hex(),
        "positions": {str(t): positions(t, bits) for t in (0, 1, 39)},
        "keys": [
            {"pdq": h.hex(), "tables": {str(t): key(h, t, bits).hex() for t in (0, 1, 39)}}
            for h in hashes
        ],
        "hash_to_group": [
            {
                "key": key(h, 0, bits).hex(),
                "point": nacl.bindings.crypto_core_ed25519_from_uniform(
                    hashlib.sha512(H_DOMAIN + key(h, 0, bits)).digest()[:32]
                ).hex(),
            }
            for h in hashes
        ],
    }
    OUT.write_text(json.dumps(cases, indent=1) + "\n")


if __name__ == "__main__":
    main()
