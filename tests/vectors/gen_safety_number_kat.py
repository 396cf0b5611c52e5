"""Generate tests/vectors/safety_number_kat.json: known answers for Tidings safety numbers v2
(each side: its sorted vouched device keys).

An independent transcription of docs/protocol.md using only `hashlib` and
`struct`; it imports nothing from `tidings`.

Run from the repository root:  .venv/bin/python tests/vectors/gen_safety_number_kat.py
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("safety_number_kat.json")

VERSION = 2
ITERATIONS = 5200


def identity_key(label: str) -> bytes:
    material = hashlib.sha512(b"Tidings safety number v1 KAT/" + label.encode()).digest()
    return b"\x01" + material  # 0x01 || "Ed25519 public" (32) || "X25519 public" (32)


def fingerprint(keys: list[bytes], account: str) -> bytes:
    joined = b"".join(sorted(keys))
    h = struct.pack(">HB", VERSION, len(keys)) + joined + account.encode("utf-8")
    for _ in range(ITERATIONS):
        h = hashlib.sha512(h + joined).digest()
    return h


def digits30(fp: bytes) -> str:
    out = ""
    for i in range(6):
        chunk = fp[5 * i : 5 * i + 5]
        value = (chunk[0] << 32) | (chunk[1] << 24) | (chunk[2] << 16) | (chunk[3] << 8) | chunk[4]
        out += str(value % 100000).rjust(5, "0")
    return out


def case(name_a: str, key_a: list[bytes], name_b: str, key_b: list[bytes]) -> dict[str, Any]:
    fa, fb = fingerprint(key_a, name_a), fingerprint(key_b, name_b)
    da, db = digits30(fa), digits30(fb)
    number = da + db if da <= db else db + da
    return {
        "a": {"account": name_a, "identity_keys": [k.hex() for k in key_a],
              "fingerprint": fa.hex()},
        "b": {"account": name_b, "identity_keys": [k.hex() for k in key_b],
              "fingerprint": fb.hex()},
        "digits": number,
        "display": " ".join(number[i : i + 5] for i in range(0, 60, 5)),
        "qr_payload_a": (bytes([VERSION]) + fa[:32] + fb[:32]).hex(),
        "qr_payload_b": (bytes([VERSION]) + fb[:32] + fa[:32]).hex(),
    }


def main() -> None:
    alice, bob = identity_key("alice"), identity_key("bob")
    doc = {
        "description": (
            "Known-answer vectors for Tidings safety numbers v2 "
            "(docs/protocol.md): each side hashes its vouched device keys, sorted. "
            "'qr_payload_a' is what a displays (a's half first). All byte strings are hex."
        ),
        "generated_by": (
            "tests/vectors/gen_safety_number_kat.py: an independent transcription using only "
            "hashlib (SHA-512) and struct; it imports nothing from tidings"
        ),
        "constants": {"version": VERSION, "iterations": ITERATIONS},
        "cases": [
            case("alice", [alice], "bob", [bob]),
            case("alice", [alice], "bob", [identity_key("bob, new device")]),
            # A device list of two, given unsorted (the fingerprint sorts the keys).
            case("alice", [alice], "bob", [identity_key("bob, laptop"), bob]),
            case("zoë", [identity_key("zoë"), identity_key("zoë 2"), identity_key("zoë 3")],
                 "+15551234567", [identity_key("phone")]),
        ],
    }
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
