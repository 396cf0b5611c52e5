"""Fuzz targets for the server's own decoders: the WebSocket frame reader
(`tidings.server.frames.read_client_frame`), which answers every malformed frame with a
`BadFrame` and never raises; and the reader of envelopes pushed between cluster nodes over
Redis (`tidings.server.pushed_envelopes.decode_pushes`), which raises `DecodeError`."""

from __future__ import annotations

import json
from collections.abc import Iterator

from fuzz_wire import TargetSpec

from tidings.server.frames import AckFrame, BadFrame, SendFrame, read_client_frame
from tidings.server.pushed_envelopes import decode_pushes, encode_pushes
from tidings.storage.relay import StoredEnvelope


def _frame(data: bytes) -> object:
    # The transport hands the app text frames as str (UTF-8 decoded); anything else is binary.
    try:
        text: str | None = data.decode()
    except UnicodeDecodeError:
        text = None
    frame = read_client_frame(text)
    assert isinstance(frame, AckFrame | SendFrame | BadFrame)
    return frame


def server_targets() -> Iterator[TargetSpec]:
    message = {
        "device_id": 1,
        "registration_id": 7,
        "type": 2,
        "body": "Y2lwaGVydGV4dA",
        "commitment": "A" * 43,
    }
    seeds = [
        json.dumps({"type": "send", "id": 1, "destination": "bob", "messages": [message]}),
        json.dumps({"type": "ack", "message_id": "A" * 22}),
    ]
    yield "server.ws_frame", _frame, [s.encode() for s in seeds]
    pushed = [
        StoredEnvelope(7, 2, 1001, bytes(16), b"envelope"),
        StoredEnvelope(8, 1, 3, b"m" * 16, b""),
    ]
    yield "server.pushed_envelopes", decode_pushes, list(encode_pushes(bytes(16), pushed))
