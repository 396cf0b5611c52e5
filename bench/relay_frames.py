"""CPU cost of reading and writing one WebSocket frame of the relay's hot path, the hand-written
way (`tidings.server.frames`) beside the general one it replaced (``json.loads`` + the
pydantic `SendRequest` model; ``json.dumps`` of the reply), in this process, µs per frame:

    PYTHONPATH=src .venv/bin/python bench/relay_frames.py

A send frame here is the bench's (`bench/relay.py`): one device, a 1,119-byte RatchetMessage
body in base64url. CPU time (``time.process_time``), best of 5 rounds, so other tenants of the
machine only show as noise."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from tidings.server.frames import read_client_frame, send_result_frame
from tidings.server.models import SendRequest
from tidings.wire.base64url import b64e

ROUNDS, N = 5, 20_000


def per_call_us(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(N):
            fn()
        best = min(best, time.process_time() - started)
    return best / N * 1e6


def main() -> None:
    message = {
        "device_id": 1,
        "registration_id": 12345,
        "type": 2,
        "body": b64e(os.urandom(1119)),
        "commitment": b64e(os.urandom(32)),
    }
    send = json.dumps({"type": "send", "id": 17, "destination": "bob", "messages": [message]})
    ack = json.dumps({"type": "ack", "message_id": b64e(os.urandom(16))})
    ids = [b64e(os.urandom(16))]

    def general_send() -> object:
        frame = json.loads(send)
        return SendRequest.model_validate({"messages": frame.get("messages")})

    rows = [
        ("read a send frame: json.loads + pydantic SendRequest", per_call_us(general_send)),
        (
            "read a send frame: frames.read_client_frame",
            per_call_us(lambda: read_client_frame(send)),
        ),
        (
            "read an ack frame: frames.read_client_frame",
            per_call_us(lambda: read_client_frame(ack)),
        ),
        (
            "write send_result: json.dumps",
            per_call_us(
                lambda: json.dumps(
                    {"type": "send_result", "id": 17, "server_timestamp_ms": 1, "message_ids": ids}
                )
            ),
        ),
        (
            "write send_result: frames.send_result_frame",
            per_call_us(lambda: send_result_frame(17, 1, ids)),
        ),
    ]
    for name, us in rows:
        print(f"{name:60s} {us:7.2f} µs")


if __name__ == "__main__":
    main()
