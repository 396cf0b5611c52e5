"""Committed envelopes carried between the nodes of a cluster on the Redis mail channel, so a
device connected to node B gets what node A's writer committed without B reading its queue.

One message holds envelopes of one batch (or part of one)::

    "e" || node (16 bytes) || count u16 || count x (
        account id u64 || device id u32 || position u64 || var16 message id || var32 envelope)

``node`` is the publishing hub's random tag: a node skips its own messages (it delivered them
to its connections at the commit). The durable queue stays the source of truth: a message lost
or refused here only delays delivery to the next queue read (the node sweep's).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tidings.errors import DecodeError
from tidings.server.ids import ACCOUNT_ID_MAX, DEVICE_ID_MAX
from tidings.storage.relay import StoredEnvelope
from tidings.wire.binary import Reader, u16, u32, u64, var16, var32
from tidings.wire.codec import MESSAGE_ID_LEN
from tidings.wire.limits import MAX_ENVELOPE_BYTES

PUSH_PREFIX = b"e"
"""First byte of a pushed-envelopes message (hints and invalidations are ASCII digits / "x")."""
NODE_TAG_LEN = 16
MAX_PUSH_BYTES = 512 * 1024
"""A message is cut after the envelope that takes it past this size (one envelope alone may
exceed it)."""
MAX_PUSHED_ENVELOPE_BYTES = MAX_ENVELOPE_BYTES + 4096
"""An envelope as stored: its body plus the protobuf header fields the server adds."""
MAX_PUSH_RECORDS = 0xFFFF


def encode_pushes(node: bytes, stored: Sequence[StoredEnvelope]) -> Iterator[bytes]:
    """The messages carrying ``stored`` (in order), each at most about `MAX_PUSH_BYTES`."""
    head = PUSH_PREFIX + node
    parts: list[bytes] = []
    size = 0
    for item in stored:
        record = b"".join(
            (
                u64(item.account_id),
                u32(item.device_id),
                u64(item.seq),
                var16(item.message_id),
                var32(item.envelope),
            )
        )
        parts.append(record)
        size += len(record)
        if size >= MAX_PUSH_BYTES or len(parts) == MAX_PUSH_RECORDS:
            yield head + u16(len(parts)) + b"".join(parts)
            parts, size = [], 0
    if parts:
        yield head + u16(len(parts)) + b"".join(parts)


def decode_pushes(data: bytes) -> tuple[bytes, list[StoredEnvelope]]:
    """The publishing node's tag and the envelopes of one message.

    Raises:
        DecodeError: not a pushed-envelopes message, an id or position out of range, a message
            id of the wrong length, an envelope over `MAX_PUSHED_ENVELOPE_BYTES`, or trailing
            bytes (`TruncatedError`, a subclass, when it ends early).
    """
    reader = Reader(data, "pushed envelopes")
    if reader.take(1) != PUSH_PREFIX:
        raise DecodeError("pushed envelopes: wrong prefix")
    node = reader.take(NODE_TAG_LEN)
    stored = []
    for _ in range(reader.u16()):
        account_id, device_id, seq = reader.u64(), reader.u32(), reader.u64()
        if not 1 <= account_id <= ACCOUNT_ID_MAX or not 1 <= device_id <= DEVICE_ID_MAX:
            raise DecodeError("pushed envelopes: an account or device id out of range")
        if not 1 <= seq <= ACCOUNT_ID_MAX:
            raise DecodeError("pushed envelopes: a queue position out of range")
        message_id = reader.var16()
        if len(message_id) != MESSAGE_ID_LEN:
            raise DecodeError(f"pushed envelopes: a message id is not {MESSAGE_ID_LEN} bytes")
        envelope = reader.var32(MAX_PUSHED_ENVELOPE_BYTES)
        stored.append(StoredEnvelope(account_id, device_id, seq, message_id, envelope))
    reader.finish()
    return node, stored
