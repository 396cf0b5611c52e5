"""Generate tests/vectors/kt_kat.json: known answers for the key-transparency epoch tree.

An independent transcription of docs/key-transparency.md ("Design") using only the standard
library and `cryptography`'s Ed25519/X25519 (not libsodium): entry hashes, each epoch's root
recomputed from scratch by the recursive definition of the compressed tree (split at the first
bit where the labels differ), two signed device lists and two signed epoch heads. It imports
nothing from `tidings`, so the vectors check the implementation rather than restate it.

Run from the repository root:  .venv/bin/python tests/vectors/gen_kt_kat.py
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

OUT = Path(__file__).with_name("kt_kat.json")


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


EMPTY = h(b"\x02tidings-kt-empty-v1")


def entry_hash(label: bytes, version: int, list_hash: bytes, previous: bytes, epoch: int) -> bytes:
    return h(
        b"tidings-kt-entry-v1\x00"
        + label
        + struct.pack(">Q", version)
        + list_hash
        + previous
        + struct.pack(">Q", epoch)
    )


def bit(label: bytes, i: int) -> int:
    return (label[i // 8] >> (7 - i % 8)) & 1


def prefix(label: bytes, bits: int) -> bytes:
    out = bytearray(32)
    for i in range(bits):
        if bit(label, i):
            out[i // 8] |= 1 << (7 - i % 8)
    return bytes(out)


def root(leaves: dict[bytes, bytes]) -> bytes:
    def subtree(labels: list[bytes]) -> bytes:
        if len(labels) == 1:
            return h(b"\x00" + labels[0] + leaves[labels[0]])
        split = next(i for i in range(256) if len({bit(x, i) for x in labels}) == 2)
        left = [x for x in labels if bit(x, split) == 0]
        right = [x for x in labels if bit(x, split) == 1]
        return h(
            b"\x01" + bytes([split]) + prefix(labels[0], split) + subtree(left) + subtree(right)
        )

    return subtree(sorted(leaves)) if leaves else EMPTY


def raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def identity(n: int) -> tuple[Ed25519PrivateKey, bytes]:
    """(signing key, 65-byte public identity) of the test identity n: seed n*32, X25519 n+100."""
    signing = Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)
    agreement = X25519PrivateKey.from_private_bytes(bytes([n + 100]) * 32)
    return signing, b"\x01" + raw_public(signing) + raw_public(agreement)


def device_list(
    account: str, version: int, reset: bool, previous: bytes, signer: int, devices: list[int]
) -> bytes:
    """A signed device list whose device ids are ``devices`` and device i has identity i."""
    body = (
        b"tidings-kt-device-list-v1\x00"
        + struct.pack(">H", len(account.encode()))
        + account.encode()
        + struct.pack(">QB", version, int(reset))
        + previous
        + struct.pack(">IB", signer, len(devices))
        + b"".join(struct.pack(">I", i) + identity(i)[1] for i in sorted(devices))
    )
    return body + identity(signer)[0].sign(body)


def head(epoch: int, root: bytes, time_ms: int, previous: bytes) -> bytes:
    body = b"tidings-kt-epoch-head-v1\x00" + struct.pack(">Q", epoch) + root
    body += struct.pack(">Q", time_ms) + previous
    return body + Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32).sign(body)


def main() -> None:
    labels = [h(b"kt kat label " + bytes([i])) for i in range(24)]
    # Two labels sharing a long prefix, so a compressed edge is split by an insertion.
    labels.append(labels[0][:20] + bytes(12))
    labels.append(labels[0][:20] + b"\x80" + bytes(11))
    current: dict[bytes, tuple[int, bytes]] = {}  # label -> (version, entry hash)
    leaves: dict[bytes, bytes] = {}
    epochs = []
    plan = [range(0, 10), range(5, 20), [0, 24, 25, 3], range(20, 26)]
    for epoch, picks in enumerate(plan, start=1):
        changes = []
        for i in picks:
            label = labels[i]
            list_hash = h(b"kt kat list " + bytes([i, epoch]))
            version, previous = current.get(label, (0, bytes(32)))
            value = entry_hash(label, version + 1, list_hash, previous, epoch)
            current[label] = (version + 1, value)
            leaves[label] = value
            changes.append(
                {"label": label.hex(), "list_hash": list_hash.hex(), "entry_hash": value.hex()}
            )
        epochs.append({"epoch": epoch, "changes": changes, "root": root(leaves).hex()})
    first = device_list("alice", 1, False, bytes(32), 1, [1])
    second = device_list("alice", 2, False, h(first), 1, [1, 2])
    reset = device_list("alice", 3, True, h(second), 5, [5])
    head1 = head(1, bytes.fromhex(epochs[0]["root"]), 1_000, bytes(32))
    head2 = head(2, bytes.fromhex(epochs[1]["root"]), 2_000, h(head1[:-64]))
    out = {
        "empty_root": EMPTY.hex(),
        "epochs": epochs,
        "device_lists": [first.hex(), second.hex(), reset.hex()],
        "heads": [head1.hex(), head2.hex()],
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
