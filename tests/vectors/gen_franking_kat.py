"""Generate tests/vectors/franking_kat.json: known answers for Tidings franking v1.

An independent transcription of docs/protocol.md using only the standard library
(`hmac`, `hashlib`, `struct`) and a hand-written protobuf encoder for the two messages involved.
It deliberately imports nothing from `tidings`, so the vectors check the implementation rather
than restate it.

Run from the repository root:  .venv/bin/python tests/vectors/gen_franking_kat.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("franking_kat.json")

TAG_LABEL = b"Tidings_FrankingTag_v1"
DIRECT_LABEL = b"Tidings_ConversationId_Direct_v1"
GROUP_LABEL = b"Tidings_ConversationId_Group_v1"
BUCKET = 160


def seed(label: str) -> bytes:
    return hashlib.sha256(b"Tidings franking v1 KAT/" + label.encode()).digest()


# --- minimal protobuf writer (proto3, fields in ascending number order) ------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def f_varint(number: int, value: int) -> bytes:
    return b"" if value == 0 else varint(number << 3) + varint(value)


def f_bytes(number: int, value: bytes) -> bytes:
    return b"" if not value else varint(number << 3 | 2) + varint(len(value)) + value


def content_bytes(sent_at_ms: int, previous: bytes, conversation_id: bytes, body: str) -> bytes:
    data_message = f_bytes(1, body.encode())
    return (
        f_varint(1, 1)
        + f_varint(2, sent_at_ms)
        + f_bytes(3, previous)
        + f_bytes(4, conversation_id)
        + f_bytes(10, data_message)
    )


def franked_content(franking_key: bytes, content: bytes) -> bytes:
    base = f_varint(1, 1) + f_bytes(2, franking_key) + f_bytes(3, content)
    # Smallest padding p >= 0 whose encoding makes the total a multiple of 160 (brute force,
    # deliberately unlike the implementation's closed form).
    p = 0
    while True:
        total = base + f_bytes(4, bytes(p))
        if len(total) % BUCKET == 0:
            return total
        p += 1


# --- the documented layouts ----------------------------------------------------------------


def commitment(franking_key: bytes, content: bytes) -> bytes:
    return hmac.new(franking_key, content, hashlib.sha256).digest()


def var16(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def tag_input(
    c: bytes, sender: str, sdev: int, recipient: str, rdev: int, ts: int, mid: bytes
) -> bytes:
    return (
        TAG_LABEL
        + var16(c)
        + var16(sender.encode())
        + struct.pack(">I", sdev)
        + var16(recipient.encode())
        + struct.pack(">I", rdev)
        + struct.pack(">Q", ts)
        + var16(mid)
    )


def report_item(
    content: bytes,
    key: bytes,
    c: bytes,
    tag: bytes,
    sender: str,
    sdev: int,
    recipient: str,
    rdev: int,
    ts: int,
    mid: bytes,
) -> bytes:
    return (
        b"\x01"
        + struct.pack(">I", len(content))
        + content
        + key
        + c
        + tag
        + var16(sender.encode())
        + struct.pack(">I", sdev)
        + var16(recipient.encode())
        + struct.pack(">I", rdev)
        + struct.pack(">Q", ts)
        + mid
    )


def direct_id(a: str, b: str) -> bytes:
    lo, hi = sorted((a.encode(), b.encode()))
    return hashlib.sha256(DIRECT_LABEL + var16(lo) + var16(hi)).digest()


def group_id(gid: bytes) -> bytes:
    return hashlib.sha256(GROUP_LABEL + var16(gid)).digest()


def main() -> None:
    server_key = seed("server key")
    conversation = direct_id("alice", "bob")
    messages: list[dict[str, Any]] = []
    previous = {"alice": b"", "bob": b""}
    script = [
        ("alice", 1, "bob", 2, "hello bob"),
        ("bob", 2, "alice", 1, "hi alice"),
        ("alice", 1, "bob", 2, "x" * 150),
        ("alice", 1, "bob", 2, "third, and a longer message " * 10),
    ]
    for i, (sender, sdev, recipient, rdev, body) in enumerate(script):
        key = seed(f"franking key {i}")
        content = content_bytes(1_700_000_000_000 + i, previous[sender], conversation, body)
        c = commitment(key, content)
        previous[sender] = c
        ts = 1_700_000_000_500 + 1000 * i
        mid = seed(f"message id {i}")[:16]
        tin = tag_input(c, sender, sdev, recipient, rdev, ts, mid)
        tag = hmac.new(server_key, tin, hashlib.sha256).digest()
        messages.append(
            {
                "franking_key": key.hex(),
                "content": content.hex(),
                "commitment": c.hex(),
                "franked_plaintext": franked_content(key, content).hex(),
                "sender": sender,
                "sender_device": sdev,
                "recipient": recipient,
                "recipient_device": rdev,
                "server_timestamp_ms": ts,
                "message_id": mid.hex(),
                "tag_input": tin.hex(),
                "franking_tag": tag.hex(),
                "report_item": report_item(
                    content, key, c, tag, sender, sdev, recipient, rdev, ts, mid
                ).hex(),
            }
        )
    doc = {
        "description": (
            "Known-answer vectors for Tidings franking v1 (docs/protocol.md). "
            "'messages' is one direct conversation alice<->bob in server-timestamp order, "
            "chained by previous_commitment per sender. All byte strings are hex."
        ),
        "generated_by": (
            "tests/vectors/gen_franking_kat.py: an independent transcription of the franking "
            "section using only hmac/hashlib/struct and a hand-written protobuf encoder "
            "(brute-force padding search); it imports nothing from tidings"
        ),
        "constants": {
            "franking_tag_label": TAG_LABEL.decode(),
            "direct_conversation_label": DIRECT_LABEL.decode(),
            "group_conversation_label": GROUP_LABEL.decode(),
            "padding_bucket": BUCKET,
        },
        "server_key": server_key.hex(),
        "conversation_ids": [
            {"kind": "direct", "a": "alice", "b": "bob", "id": direct_id("alice", "bob").hex()},
            {"kind": "direct", "a": "bob", "b": "alice", "id": direct_id("bob", "alice").hex()},
            {"kind": "direct", "a": "zoë", "b": "Zed", "id": direct_id("zoë", "Zed").hex()},
            {"kind": "direct", "a": "me", "b": "me", "id": direct_id("me", "me").hex()},
            {
                "kind": "group",
                "group_id": seed("group")[:16].hex(),
                "id": group_id(seed("group")[:16]).hex(),
            },
        ],
        "messages": messages,
    }
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
